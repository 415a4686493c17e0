using QuanTA.Core.Adapters;
using QuanTA.Core.Models;

namespace QuanTA.MLNet.AutoML;

/// <summary>One adaptable linear layer of a model: its full name (as the model names it) and size.</summary>
/// <param name="Name">e.g. "model.layers.0.self_attn.q_proj".</param>
/// <param name="InFeatures">Input size.</param>
/// <param name="OutFeatures">Output size.</param>
public sealed record LinearShape(string Name, int InFeatures, int OutFeatures);

/// <summary>The trainable-parameter count of one configuration, computed without loading or training the model.</summary>
/// <param name="Trainable">Adapter parameters (+ the classification head when it is trained).</param>
/// <param name="Total">All parameters of the model with the adapters.</param>
/// <param name="AdaptedLayers">Number of layers that get an adapter.</param>
public sealed record ParameterCount(long Trainable, long Total, int AdaptedLayers)
{
    /// <summary>Trainable / total (a fraction, not a percent).</summary>
    public double TrainableFraction => Total == 0 ? 0 : (double)Trainable / Total;
}

/// <summary>
/// The linear layers and parameter total of a LLaMA-family model (llama, qwen2, mistral), read from its config.json alone, so a
/// sweep can check a parameter-count constraint without building the model: QuanTA adds
/// <see cref="AxisLayout.ParameterCount"/> per adapted layer, LoRA r·(in + out). Names and counts match the modules of
/// QuanTA.Core's <c>LlamaForSequenceClassification</c> / <c>LlamaForCausalLM</c> (the tests check them against the built models).
/// </summary>
public sealed class ModelShape
{
    /// <summary>The adaptable linear layers, in module order (heads last).</summary>
    public IReadOnlyList<LinearShape> Linears { get; }
    /// <summary>All parameters of the base model.</summary>
    public long BaseParameters { get; }
    /// <summary>The hidden size (what axis layouts factor).</summary>
    public int HiddenSize { get; }
    /// <summary>Parameters of the classification head ("score"), trained with the adapter in head mode; 0 for a causal LM.</summary>
    public long HeadParameters { get; }

    /// <summary>Creates a shape from explicit layers (e.g. for a custom model).</summary>
    public ModelShape(IReadOnlyList<LinearShape> linears, long baseParameters, int hiddenSize, long headParameters = 0)
    {
        Linears = linears; BaseParameters = baseParameters; HiddenSize = hiddenSize; HeadParameters = headParameters;
    }

    /// <summary>Reads the shape of the model in <paramref name="modelDir"/> (its config.json).</summary>
    /// <param name="modelDir">Hugging Face model folder.</param>
    /// <param name="sequenceClassification">True for a …ForSequenceClassification model ("score" head), false for a causal LM
    /// ("lm_head"); null reads config.json's "architectures".</param>
    public static ModelShape FromConfig(string modelDir, bool? sequenceClassification = null)
    {
        var c = HfModelConfig.Load(modelDir);
        bool seqCls = sequenceClassification ?? IsSequenceClassification(modelDir);
        return FromConfig(c, seqCls);
    }

    /// <summary>The shape of a model with config <paramref name="c"/>.</summary>
    public static ModelShape FromConfig(HfModelConfig c, bool sequenceClassification)
    {
        int h = c.HiddenSize, q = c.NumAttentionHeads * c.HeadDim, kv = c.NumKeyValueHeads * c.HeadDim, inter = c.IntermediateSize;
        var linears = new List<LinearShape>();
        long total = (long)c.VocabSize * h + h;   // token embedding + final norm
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            var layer = new (string Name, int In, int Out, bool Bias)[]
            {
                (p + "self_attn.q_proj", h, q, c.QkvBias), (p + "self_attn.k_proj", h, kv, c.QkvBias),
                (p + "self_attn.v_proj", h, kv, c.QkvBias), (p + "self_attn.o_proj", q, h, c.OutputBias),
                (p + "mlp.gate_proj", h, inter, c.MlpBias), (p + "mlp.up_proj", h, inter, c.MlpBias), (p + "mlp.down_proj", inter, h, c.MlpBias),
            };
            foreach (var (name, i1, o1, bias) in layer)
            {
                linears.Add(new LinearShape(name, i1, o1));
                total += (long)i1 * o1 + (bias ? o1 : 0);
            }
            total += 2L * h;   // input_layernorm, post_attention_layernorm
        }
        long head = 0;
        if (sequenceClassification)
        {
            linears.Add(new LinearShape("score", h, c.NumLabels));
            head = (long)h * c.NumLabels;
            total += head;
        }
        else
        {
            linears.Add(new LinearShape("lm_head", h, c.VocabSize));
            if (!c.TieWordEmbeddings) total += (long)h * c.VocabSize;
        }
        return new ModelShape(linears, total, h, head);
    }

    static bool IsSequenceClassification(string modelDir)
    {
        var path = Path.Combine(modelDir, "config.json");
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.TryGetProperty("architectures", out var a) && a.ValueKind == System.Text.Json.JsonValueKind.Array &&
               a.EnumerateArray().Any(x => x.GetString()?.EndsWith("ForSequenceClassification", StringComparison.Ordinal) == true);
    }

    /// <summary>
    /// Trainable and total parameters of <paramref name="options"/> on this model (the head counts as trainable when
    /// <paramref name="trainsHead"/>, as in classification head mode). Throws <see cref="ArgumentException"/> when a target
    /// matches nothing or a QuanTA layout cannot hold a targeted layer (D &lt; max(in, out)).
    /// </summary>
    public ParameterCount Count(QuanTAFineTuneOptions options, bool trainsHead)
    {
        ArgumentNullException.ThrowIfNull(options);
        var targets = TargetModules.Parse(string.Join(",", options.TargetModules));
        var chosen = targets.Select(Linears.Select(l => l.Name).ToList()).ToHashSet();
        long adapter = 0;
        int layers = 0;
        foreach (var l in Linears.Where(l => chosen.Contains(l.Name)))
        {
            layers++;
            if (options.Adapter == AdapterMethod.LoRA) { adapter += (long)options.LoRARank * (l.InFeatures + l.OutFeatures); continue; }
            var config = new QuanTAConfig
            {
                Layout = options.AxisLayout, AxisCount = options.AxisCount,
                Pairs = options.Pairs?.Select(p => new AxisPair(p.Item1, p.Item2)).ToArray(), TensorCount = options.TensorCount, Rank = options.Rank,
            };
            adapter += config.ResolveLayout(l.InFeatures, l.OutFeatures, l.Name).ParameterCount(options.Rank);
        }
        return new ParameterCount(adapter + (trainsHead ? HeadParameters : 0), BaseParameters + adapter, layers);
    }
}
