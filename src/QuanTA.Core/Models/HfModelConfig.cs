using System.Text.Json;
using System.Text.Json.Nodes;
using QuanTA.Core.Quantization;

namespace QuanTA.Core.Models;

/// <summary>
/// How rotary position embeddings are computed (transformers' <c>rope_type</c>): <c>default</c>, <c>linear</c>
/// (positions divided by <see cref="Factor"/>) or <c>llama3</c> (the LLaMA-3.1 frequency-dependent rescaling).
/// </summary>
public sealed record RopeParameters
{
    /// <summary>Base θ of the inverse frequencies θ^(−2i/d).</summary>
    public double Theta { get; init; } = 10000.0;
    /// <summary>"default", "linear" or "llama3".</summary>
    public string Type { get; init; } = "default";
    /// <summary>Scaling factor (linear, llama3).</summary>
    public double Factor { get; init; } = 1.0;
    /// <summary>llama3: low_freq_factor.</summary>
    public double LowFreqFactor { get; init; } = 1.0;
    /// <summary>llama3: high_freq_factor.</summary>
    public double HighFreqFactor { get; init; } = 4.0;
    /// <summary>llama3: original_max_position_embeddings (the pre-training context length).</summary>
    public int OriginalMaxPositionEmbeddings { get; init; } = 8192;
}

/// <summary>
/// The parts of a Hugging Face <c>config.json</c> that a LLaMA-family decoder needs. Reads both layouts:
/// transformers 4.x (top-level <c>rope_theta</c> + <c>rope_scaling</c>) and 5.x (<c>rope_parameters</c>).
/// Supported <c>model_type</c>s: llama, qwen2, mistral (see <see cref="Parse"/>).
/// </summary>
public sealed record HfModelConfig
{
    /// <summary>model_type as written in config.json.</summary>
    public required string ModelType { get; init; }
    /// <summary>vocab_size.</summary>
    public required int VocabSize { get; init; }
    /// <summary>hidden_size (d_model).</summary>
    public required int HiddenSize { get; init; }
    /// <summary>intermediate_size of the SwiGLU MLP.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>num_hidden_layers.</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary>num_attention_heads (query heads).</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary>num_key_value_heads (GQA; equals <see cref="NumAttentionHeads"/> for plain multi-head attention).</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary>head_dim (defaults to hidden_size / num_attention_heads).</summary>
    public required int HeadDim { get; init; }
    /// <summary>max_position_embeddings.</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;
    /// <summary>rms_norm_eps.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>hidden_act of the MLP ("silu").</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Bias on q/k/v projections (Qwen2: true; LLaMA: attention_bias).</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on the output projection o_proj (LLaMA: attention_bias; Qwen2: false).</summary>
    public bool OutputBias { get; init; }
    /// <summary>mlp_bias: bias on gate/up/down projections.</summary>
    public bool MlpBias { get; init; }
    /// <summary>tie_word_embeddings: lm_head shares model.embed_tokens.weight.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Rotary embedding settings, from either config layout.</summary>
    public RopeParameters Rope { get; init; } = new();
    /// <summary>Sliding-window attention length, or null. Not implemented: a forward pass longer than it is refused.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>bos_token_id.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>eos_token_id (a list in some configs), together with generation_config.json's when <see cref="Load"/> reads a folder.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>pad_token_id (used by the sequence-classification head to find the last real token).</summary>
    public int? PadTokenId { get; init; }
    /// <summary>Number of classes of a sequence-classification head (num_labels or the size of id2label).</summary>
    public int NumLabels { get; init; } = 2;
    /// <summary>initializer_range (std of a freshly initialized head).</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>How the decoder layers' linear weights are stored once loaded: None unless the folder was saved by bitsandbytes
    /// in 4 bits (then NF4); <c>FromPretrained</c>'s quantization argument overrides it.</summary>
    public BaseQuantization Quantization { get; init; }
    /// <summary>config.json's bitsandbytes <c>quantization_config</c> (a <c>…-bnb-4bit</c> folder), or null.</summary>
    public BitsAndBytesConfig? BitsAndBytes { get; init; }

    /// <summary>This config with <see cref="Quantization"/> set to <paramref name="quantization"/> (null keeps the folder's).</summary>
    public HfModelConfig WithQuantization(BaseQuantization? quantization) => quantization is { } q ? this with { Quantization = q } : this;

    /// <summary>The model types this library implements.</summary>
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "qwen2", "mistral"];

    /// <summary>Reads <c>config.json</c> from a model folder (or the file itself).</summary>
    public static HfModelConfig Load(string modelDirOrFile)
    {
        var path = Directory.Exists(modelDirOrFile) ? Path.Combine(modelDirOrFile, "config.json") : modelDirOrFile;
        if (!File.Exists(path))
            throw new FileNotFoundException($"No config.json at '{path}'. Expected a Hugging Face model folder (config.json + model.safetensors).", path);
        var cfg = Parse(File.ReadAllText(path), path);
        // generate() stops at generation_config.json's eos_token_id(s) (e.g. LLaMA-3 instruct's end-of-turn token) too.
        var genPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "generation_config.json");
        if (File.Exists(genPath) && ParseJson(File.ReadAllText(genPath), genPath) is JsonObject g)
        {
            var extra = IntList(g, "eos_token_id", genPath);
            if (extra.Except(cfg.EosTokenIds).Any()) cfg = cfg with { EosTokenIds = cfg.EosTokenIds.Union(extra).ToArray() };
        }
        return cfg;
    }

    /// <summary>Parses config.json text. <paramref name="source"/> names the file in error messages.</summary>
    public static HfModelConfig Parse(string json, string source = "config.json")
    {
        var o = ParseJson(json, source) as JsonObject
            ?? throw new FormatException($"{source}: expected a JSON object.");
        var type = Str(o, "model_type") ?? throw new FormatException($"{source}: missing \"model_type\".");
        if (!SupportedModelTypes.Contains(type))
            throw new NotSupportedException($"{source}: model_type \"{type}\" is not supported. Supported: {string.Join(", ", SupportedModelTypes)}.");

        int Req(string key) => Positive(key, Int(o, key, source) ?? throw new FormatException($"{source}: missing required integer \"{key}\"."));
        int Positive(string key, int value) => value >= 1 ? value : throw new FormatException($"{source}: \"{key}\" = {value} must be at least 1.");
        var hidden = Req("hidden_size");
        var heads = Req("num_attention_heads");
        var kvHeads = Positive("num_key_value_heads", Int(o, "num_key_value_heads", source) ?? heads);
        var headDim = Int(o, "head_dim", source) is int hd ? Positive("head_dim", hd) : (hidden % heads == 0 ? hidden / heads
            : throw new FormatException($"{source}: hidden_size {hidden} is not divisible by num_attention_heads {heads} and no head_dim is given."));
        if (heads % kvHeads != 0)
            throw new FormatException($"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}.");
        var partial = Dbl(o, "partial_rotary_factor", source);
        if (partial is not null && partial != 1.0)
            throw new NotSupportedException($"{source}: partial_rotary_factor {partial} is not supported (only 1.0).");

        var act = Str(o, "hidden_act") ?? "silu";
        if (act != "silu")
            throw new NotSupportedException($"{source}: hidden_act \"{act}\" is not supported (only \"silu\").");

        var attnBias = Bool(o, "attention_bias") ?? false;
        var bnb = BitsAndBytesConfig.Parse(o, source);
        var cfg = new HfModelConfig
        {
            BitsAndBytes = bnb,
            Quantization = bnb is null ? BaseQuantization.None : BaseQuantization.NF4,
            ModelType = type,
            VocabSize = Req("vocab_size"),
            HiddenSize = hidden,
            IntermediateSize = Req("intermediate_size"),
            NumHiddenLayers = Req("num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            MaxPositionEmbeddings = Positive("max_position_embeddings", Int(o, "max_position_embeddings", source) ?? 2048),
            RmsNormEps = InRange(Dbl(o, "rms_norm_eps", source) ?? 1e-6, "rms_norm_eps", source, 0, 1, "a small positive number, e.g. 1e-6"),
            HiddenAct = act,
            QkvBias = attnBias,
            OutputBias = attnBias,
            MlpBias = Bool(o, "mlp_bias") ?? false,
            TieWordEmbeddings = Bool(o, "tie_word_embeddings") ?? false,
            Rope = ParseRope(o, source),
            BosTokenId = Int(o, "bos_token_id", source),
            EosTokenIds = IntList(o, "eos_token_id", source),
            PadTokenId = Int(o, "pad_token_id", source),
            NumLabels = Positive("num_labels", Int(o, "num_labels", source) ?? (o["id2label"] is JsonObject l ? l.Count : 2)),
            InitializerRange = InRange(Dbl(o, "initializer_range", source) ?? 0.02, "initializer_range", source, 0, 1e3, "a standard deviation, e.g. 0.02", allowZero: true),
        };
        return type switch
        {
            "qwen2" => Qwen2.Qwen2Architecture.Adjust(cfg, o, source),
            "mistral" => Mistral.MistralArchitecture.Adjust(cfg, o, source),
            _ => cfg,
        };
    }

    /// <summary>
    /// 5.x: <c>rope_parameters: {rope_theta, rope_type, factor, ...}</c>; 4.x: top-level <c>rope_theta</c> and an optional
    /// <c>rope_scaling: {rope_type | type, factor, ...}</c>.
    /// </summary>
    static RopeParameters ParseRope(JsonObject o, string source)
    {
        JsonObject? p = o["rope_parameters"] as JsonObject;
        double theta;
        if (p is not null)
        {
            // A dict of per-layer-type parameters (e.g. {"full_attention": {...}}) is not used by these architectures.
            if (p["rope_theta"] is null && p.Count > 0 && p.All(kv => kv.Value is JsonObject))
                throw new NotSupportedException($"{source}: per-layer-type rope_parameters are not supported.");
            theta = Dbl(p, "rope_theta", source) ?? Dbl(o, "rope_theta", source) ?? 10000.0;
        }
        else
        {
            theta = Dbl(o, "rope_theta", source) ?? 10000.0;
            p = o["rope_scaling"] as JsonObject;
        }
        theta = InRange(theta, "rope_theta", source, 0, float.MaxValue, "a positive base, e.g. 10000");
        var type = p is null ? "default" : (Str(p, "rope_type") ?? Str(p, "type") ?? "default");
        if (p is null || type == "default") return new RopeParameters { Theta = theta };
        double F(string key) => InRange(Dbl(p, key, source) ?? throw new FormatException($"{source}: rope scaling \"{type}\" needs \"{key}\"."),
            key, source, 0, float.MaxValue, "a positive number");
        return type switch
        {
            "linear" => new RopeParameters { Theta = theta, Type = type, Factor = F("factor") },
            "llama3" => new RopeParameters
            {
                Theta = theta, Type = type, Factor = F("factor"),
                LowFreqFactor = F("low_freq_factor"), HighFreqFactor = F("high_freq_factor"),
                OriginalMaxPositionEmbeddings = Int(p, "original_max_position_embeddings", source)
                    ?? throw new FormatException($"{source}: rope scaling \"{type}\" needs \"original_max_position_embeddings\"."),
            },
            _ => throw new NotSupportedException($"{source}: rope_type \"{type}\" is not supported (supported: default, linear, llama3)."),
        };
    }

    internal static string? Str(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    internal static bool? Bool(JsonObject o, string key) => o[key] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;

    /// <summary>An integer field, null when absent or not a number; a fractional or out-of-range number is a <see cref="FormatException"/>.</summary>
    internal static int? Int(JsonObject o, string key, string source = "config.json")
    {
        if (o[key] is not JsonValue v) return null;
        if (v.GetValueKind() != JsonValueKind.Number) return null;
        return ToInt(v, key, source);
    }

    static int ToInt(JsonValue v, string key, string source)
    {
        if (v.TryGetValue<double>(out var d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
        throw new FormatException($"{source}: \"{key}\" = {Cut(v.ToJsonString())} is not a 32-bit integer.");
    }

    /// <summary>A number field, null when absent or not a number; a number out of double's range is a <see cref="FormatException"/>.</summary>
    internal static double? Dbl(JsonObject o, string key, string source = "config.json")
    {
        if (o[key] is not JsonValue v || v.GetValueKind() != JsonValueKind.Number) return null;
        return v.TryGetValue<double>(out var d) && double.IsFinite(d) ? d
            : throw new FormatException($"{source}: \"{key}\" = {Cut(v.ToJsonString())} is out of range.");
    }

    static IReadOnlyList<int> IntList(JsonObject o, string key, string source) => o[key] switch
    {
        JsonArray a => a.Select(x => x is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? ToInt(v, key, source)
            : throw new FormatException($"{source}: \"{key}\" holds {Cut(x?.ToJsonString() ?? "null")}, not an integer.")).ToArray(),
        JsonValue when Int(o, key, source) is int i => [i],
        _ => [],
    };

    static JsonNode? ParseJson(string json, string source)
    {
        try { return JsonNode.Parse(json); }
        catch (JsonException e) { throw new FormatException($"{source}: not valid JSON ({e.Message}).", e); }
    }

    /// <summary><paramref name="value"/> if it lies in (<paramref name="min"/>, <paramref name="max"/>] (or [min, max] with
    /// <paramref name="allowZero"/>); the model computes in fp32, so larger values would overflow there.</summary>
    static double InRange(double value, string key, string source, double min, double max, string expected, bool allowZero = false)
        => (value > min || (allowZero && value == min)) && value <= max ? value
            : throw new FormatException($"{source}: \"{key}\" = {value.ToString(System.Globalization.CultureInfo.InvariantCulture)} is out of range (expected {expected}).");

    static string Cut(string text) => text.Length <= 40 ? text : text[..40] + "…";

    /// <summary>
    /// About how many parameters the decoder these sizes describe has, without the output head (in floating point: a damaged
    /// size cannot overflow). Used to refuse a config.json that does not fit its weights before allocating the model.
    /// </summary>
    public double EstimatedParameterCount()
    {
        double h = HiddenSize, q = (double)NumAttentionHeads * HeadDim, kv = (double)NumKeyValueHeads * HeadDim;
        double layer = h * q + 2 * h * kv + q * h + 3 * h * IntermediateSize + 2 * h;
        return (double)VocabSize * h + NumHiddenLayers * layer + h;
    }
}
