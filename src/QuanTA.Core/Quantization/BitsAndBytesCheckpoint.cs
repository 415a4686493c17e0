using System.Text;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Quantization;

/// <summary>
/// config.json's <c>quantization_config</c> of a folder saved by transformers + bitsandbytes in 4 bits (the <c>…-bnb-4bit</c>
/// checkpoints). Only NF4 with uint8 storage is supported.
/// </summary>
/// <param name="QuantType">bnb_4bit_quant_type ("nf4").</param>
/// <param name="DoubleQuant">bnb_4bit_use_double_quant.</param>
/// <param name="ComputeDType">bnb_4bit_compute_dtype as written (informational: the compute dtype is chosen at load).</param>
public sealed record BitsAndBytesConfig(string QuantType, bool DoubleQuant, string? ComputeDType)
{
    /// <summary>Reads <c>quantization_config</c> from a parsed config.json; null when there is none.</summary>
    /// <exception cref="NotSupportedException">another quant_method, 8-bit bitsandbytes, fp4, or a storage other than uint8
    /// (the message names the key and the value).</exception>
    public static BitsAndBytesConfig? Parse(JsonObject config, string source)
    {
        if (config["quantization_config"] is not JsonObject q) return null;
        string? Str(string key) => q[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        bool Bool(string key) => q[key] is JsonValue v && v.TryGetValue<bool>(out var b) && b;
        var method = Str("quant_method") ?? "bitsandbytes";
        const string Hint = " Load the unquantized model and quantize it at load instead (QuanTAFineTuneOptions.BaseQuantization / --quantize nf4).";
        if (method != "bitsandbytes")
            throw new NotSupportedException($"{source}: quantization_config.quant_method \"{method}\" is not supported (only bitsandbytes 4-bit NF4 checkpoints load).{Hint}");
        if (Bool("load_in_8bit") || Bool("_load_in_8bit"))
            throw new NotSupportedException($"{source}: quantization_config.load_in_8bit = true: 8-bit bitsandbytes checkpoints are not supported (only 4-bit NF4).{Hint}");
        if (!Bool("load_in_4bit") && !Bool("_load_in_4bit"))
            throw new NotSupportedException($"{source}: quantization_config has neither load_in_4bit nor load_in_8bit set: not a bitsandbytes 4-bit checkpoint.{Hint}");
        var type = Str("bnb_4bit_quant_type") ?? "fp4";   // transformers' default
        if (type != "nf4")
            throw new NotSupportedException($"{source}: quantization_config.bnb_4bit_quant_type \"{type}\" is not supported (only \"nf4\").{Hint}");
        var storage = Str("bnb_4bit_quant_storage") ?? "uint8";
        if (storage != "uint8")
            throw new NotSupportedException($"{source}: quantization_config.bnb_4bit_quant_storage \"{storage}\" is not supported (only \"uint8\").{Hint}");
        return new BitsAndBytesConfig(type, Bool("bnb_4bit_use_double_quant"), Str("bnb_4bit_compute_dtype"));
    }
}

/// <summary>
/// Gathers the tensors of bitsandbytes NF4 weights while a checkpoint is read (they may be spread over shards) and builds an
/// <see cref="NF4Weight"/> as soon as one is complete. The layout (transformers + bitsandbytes <c>Params4bit</c>, packed
/// <c>QuantState.as_dict(packed=True)</c>): <c>X.weight</c> uint8 (ceil(n/2), 1); <c>X.weight.absmax</c>;
/// <c>X.weight.quant_map</c> (16); with double quantization <c>X.weight.nested_absmax</c> and <c>X.weight.nested_quant_map</c>
/// (256); and <c>X.weight.quant_state.bitsandbytes__nf4</c>, the UTF-8 bytes of a JSON object {quant_type, blocksize,
/// dtype, shape[, nested_blocksize, nested_dtype, nested_offset]} as a uint8 tensor.
/// </summary>
public sealed class BitsAndBytesWeights : IDisposable
{
    const string StatePrefix = "quant_state.bitsandbytes__";
    static readonly string[] Parts = ["absmax", "quant_map", "nested_absmax", "nested_quant_map"];
    readonly Dictionary<string, Dictionary<string, Tensor>> _pending = new(StringComparer.Ordinal);

    /// <summary>If <paramref name="key"/> is one of a bitsandbytes weight's side tensors (absmax, quant_map, nested_*,
    /// quant_state), returns the weight's key (ending in <c>.weight</c>) and the part's name.</summary>
    public static bool IsSideTensor(string key, out string weightKey, out string part)
    {
        foreach (var p in Parts)
            if (key.EndsWith(".weight." + p, StringComparison.Ordinal)) { weightKey = key[..^(p.Length + 1)]; part = p; return true; }
        int i = key.IndexOf(".weight." + StatePrefix, StringComparison.Ordinal);
        if (i >= 0) { weightKey = key[..(i + 7)]; part = key[(i + 8)..]; return true; }
        weightKey = part = "";
        return false;
    }

    /// <summary>Keeps <paramref name="tensor"/> (ownership passes to this object) as <paramref name="part"/> ("weight" for the
    /// packed codes) of the weight <paramref name="weightKey"/>.</summary>
    /// <exception cref="NotSupportedException">a quant state other than nf4 (names the tensor).</exception>
    public void Add(string weightKey, string part, Tensor tensor)
    {
        if (part.StartsWith(StatePrefix, StringComparison.Ordinal) && part != StatePrefix + "nf4")
        {
            tensor.Dispose();
            throw new NotSupportedException($"Checkpoint tensor '{weightKey}.{part}': bitsandbytes quant_type \"{part[StatePrefix.Length..]}\" is not supported (only nf4).");
        }
        if (!_pending.TryGetValue(weightKey, out var parts)) _pending[weightKey] = parts = new(StringComparer.Ordinal);
        if (parts.Remove(part, out var old)) old.Dispose();
        parts[part] = tensor;
    }

    /// <summary>Builds and removes every weight whose tensors are all present; <paramref name="shapeOf"/> gives the (out, in)
    /// the model expects for a weight key.</summary>
    public IEnumerable<(string WeightKey, NF4Weight Weight)> TakeComplete(Func<string, (long Out, long In)> shapeOf, Device device, ScalarType computeDType)
    {
        foreach (var key in _pending.Keys.ToList())
        {
            var parts = _pending[key];
            if (!parts.ContainsKey("weight") || !parts.ContainsKey("absmax") || !parts.ContainsKey("quant_map")
                || !parts.TryGetValue(StatePrefix + "nf4", out var stateBytes)) continue;
            var state = ReadState(key, stateBytes);
            bool nested = state["nested_absmax"] is not null || state["nested_offset"] is not null;
            if (nested && !(parts.ContainsKey("nested_absmax") && parts.ContainsKey("nested_quant_map"))) continue;
            _pending.Remove(key);
            try { yield return (key, Build(key, parts, state, nested, shapeOf(key), device, computeDType)); }
            finally { foreach (var t in parts.Values) t.Dispose(); }
        }
    }

    /// <summary>Throws naming the first missing tensor of a weight left incomplete once the whole checkpoint was read.</summary>
    public void ThrowIfIncomplete(string modelDir)
    {
        if (_pending.Count == 0) return;
        var (key, parts) = _pending.First();
        string[] needed = ["weight", "absmax", "quant_map", StatePrefix + "nf4"];
        var missing = needed.FirstOrDefault(p => !parts.ContainsKey(p)) ?? (parts.ContainsKey("nested_absmax") ? "nested_quant_map" : "nested_absmax");
        var name = missing == "weight" ? key : $"{key}.{missing}";
        throw new InvalidDataException($"Checkpoint tensor '{name}' is missing in '{modelDir}': the bitsandbytes NF4 weight '{key}' needs " +
            $"{key}, {key}.absmax, {key}.quant_map, {key}.{StatePrefix}nf4 (and {key}.nested_absmax / nested_quant_map when double-quantized). " +
            "Copy or download the model again.");
    }

    static JsonObject ReadState(string key, Tensor bytes)
    {
        try
        {
            using var cpu = bytes.to(CPU);
            var text = Encoding.UTF8.GetString(cpu.to_type(ScalarType.Byte).data<byte>().ToArray());
            return JsonNode.Parse(text) as JsonObject ?? throw new FormatException("not a JSON object");
        }
        catch (Exception e) when (e is FormatException or System.Text.Json.JsonException or DecoderFallbackException)
        {
            throw new InvalidDataException($"Checkpoint tensor '{key}.{StatePrefix}nf4' is not a bitsandbytes quant state (UTF-8 JSON): {e.Message}", e);
        }
    }

    static NF4Weight Build(string key, Dictionary<string, Tensor> parts, JsonObject state, bool nested, (long Out, long In) shape,
        Device device, ScalarType computeDType)
    {
        string stateName = $"{key}.{StatePrefix}nf4";
        var type = state["quant_type"]?.GetValue<string>();
        if (type != "nf4") throw new NotSupportedException($"Checkpoint tensor '{stateName}': quant_type \"{type}\" is not supported (only nf4).");
        int block = state["blocksize"]?.GetValue<int>() ?? -1;
        if (block != NF4Weight.BlockSize)
            throw new NotSupportedException($"Checkpoint tensor '{stateName}': blocksize {block} is not supported (only {NF4Weight.BlockSize}, bitsandbytes' default).");
        if (state["shape"] is JsonArray dims && !(dims.Count == 2 && dims[0]!.GetValue<long>() == shape.Out && dims[1]!.GetValue<long>() == shape.In))
            throw new InvalidDataException($"Checkpoint tensor '{stateName}' records shape {dims.ToJsonString()} but the model expects [{shape.Out}, {shape.In}] (check config.json).");
        float offset = 0;
        if (nested)
        {
            int nestedBlock = state["nested_blocksize"]?.GetValue<int>() ?? -1;
            if (nestedBlock != NF4Weight.NestedBlockSize)
                throw new NotSupportedException($"Checkpoint tensor '{stateName}': nested_blocksize {nestedBlock} is not supported (only {NF4Weight.NestedBlockSize}).");
            offset = (float)(state["nested_offset"]?.GetValue<double>()
                ?? throw new InvalidDataException($"Checkpoint tensor '{stateName}' has nested tensors but no nested_offset."));
        }
        return NF4Weight.FromBitsAndBytes(key, shape.Out, shape.In, computeDType, device, parts["weight"], parts["absmax"], parts["quant_map"],
            nested ? parts["nested_absmax"] : null, nested ? parts["nested_quant_map"] : null, offset);
    }

    /// <summary>Frees the tensors of weights never completed.</summary>
    public void Dispose()
    {
        foreach (var t in _pending.Values.SelectMany(p => p.Values)) t.Dispose();
        _pending.Clear();
    }
}
