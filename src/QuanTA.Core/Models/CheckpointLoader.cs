using System.Text.Json.Nodes;
using QuanTA.Core.Adapters;
using QuanTA.Core.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models;

/// <summary>
/// Strict loading of Hugging Face safetensors checkpoints (<c>model.safetensors</c> or the shards listed in
/// <c>model.safetensors.index.json</c>) into a module whose state-dict keys are the Hugging Face names.
/// Tensors are read with <see cref="SafetensorsReader"/> and cast to each parameter's dtype and device.
/// <para>
/// Quantized layers (<see cref="AdaptableLinear.Quantization"/> other than None) are quantized as their tensor is read, one
/// shard at a time, so host memory peaks at about one shard and the dense model never exists. Weights saved by bitsandbytes
/// in NF4 (<c>X.weight</c> uint8 + <c>X.weight.absmax</c>, <c>.quant_map</c>, <c>.nested_*</c>,
/// <c>.quant_state.bitsandbytes__nf4</c>; see <see cref="BitsAndBytesWeights"/>) are adopted as they are by an NF4 layer,
/// and dequantized for any other layer.
/// </para>
/// </summary>
public static class CheckpointLoader
{
    /// <summary>The safetensors files of a model folder, in shard order.</summary>
    /// <exception cref="FileNotFoundException">the folder holds neither file.</exception>
    public static IReadOnlyList<string> FindWeightFiles(string modelDir)
    {
        var single = Path.Combine(modelDir, "model.safetensors");
        if (File.Exists(single)) return [single];
        var index = Path.Combine(modelDir, "model.safetensors.index.json");
        if (File.Exists(index))
        {
            JsonNode? root;
            try { root = JsonNode.Parse(File.ReadAllText(index)); }
            catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"'{index}' is not valid JSON ({e.Message}).", e); }
            var map = (root as JsonObject)?["weight_map"] as JsonObject
                ?? throw new InvalidDataException($"'{index}' has no \"weight_map\" object.");
            var files = map.Select(kv => ShardName(kv.Value, kv.Key, index)).Distinct().Order(StringComparer.Ordinal)
                .Select(f => Path.Combine(modelDir, f)).ToList();
            if (files.Count == 0) throw new InvalidDataException($"'{index}' lists no shard files (its \"weight_map\" is empty).");
            foreach (var f in files)
                if (!File.Exists(f)) throw new FileNotFoundException($"Shard '{f}' listed in '{index}' is missing.", f);
            return files;
        }
        throw new FileNotFoundException(
            $"'{modelDir}' holds neither model.safetensors nor model.safetensors.index.json (PyTorch .bin checkpoints are not supported; convert them to safetensors).");
    }

    /// <summary>A weight_map value: the file name of a shard in the model folder itself (no folder part, so an index cannot point
    /// the loader at files elsewhere).</summary>
    static string ShardName(JsonNode? value, string key, string index)
    {
        if (value is not JsonValue v || !v.TryGetValue<string>(out var name) || name.Length == 0)
            throw new InvalidDataException($"'{index}': weight_map[\"{key}\"] is {value?.ToJsonString() ?? "null"}, not a shard file name.");
        if (name != Path.GetFileName(name) || name is "." or "..")
            throw new InvalidDataException($"'{index}': weight_map[\"{key}\"] = \"{name}\" is not a file name in the model folder.");
        return name;
    }

    /// <summary>
    /// Refuses a config.json whose sizes describe a model far larger than the folder's weights (a damaged size, or a config of
    /// another model) before the model is allocated: the weights must hold at least two thirds of
    /// <see cref="HfModelConfig.EstimatedParameterCount"/> values. Reads only the safetensors headers.
    /// </summary>
    /// <exception cref="InvalidDataException">the sizes do not fit the weights (the message names config.json and the sizes).</exception>
    public static void RefuseConfigLargerThanWeights(HfModelConfig config, string modelDir)
    {
        double stored = 0;
        foreach (var file in FindWeightFiles(modelDir))
        {
            using var s = File.OpenRead(file);
            stored += SafetensorsReader.ReadHeader(s, file, out _)   // a bitsandbytes 4-bit weight packs 2 values per uint8
                .Sum(e => e.Shape.Aggregate(1.0, (n, x) => n * x) * (e.DType == "U8" ? 2 : 1));
        }
        double needed = config.EstimatedParameterCount();
        if (needed > 1.5 * stored + 1_000_000)
            throw new InvalidDataException(
                $"'{Path.Combine(modelDir, "config.json")}' describes a model of about {needed:G3} parameters (vocab_size {config.VocabSize}, " +
                $"hidden_size {config.HiddenSize}, intermediate_size {config.IntermediateSize}, num_hidden_layers {config.NumHiddenLayers}, " +
                $"num_attention_heads {config.NumAttentionHeads}, num_key_value_heads {config.NumKeyValueHeads}, head_dim {config.HeadDim}) " +
                $"but the weights in '{modelDir}' hold {stored:N0} values: config.json does not belong to these weights, or a size in it is damaged.");
    }

    /// <summary>
    /// Copies every checkpoint tensor into the parameter of the same name. Throws on a shape mismatch (naming the key and
    /// both shapes), on keys the model lacks, and on model keys the checkpoint lacks, except <paramref name="ignoredKeys"/>
    /// (skipped if present) and <paramref name="optionalKeys"/> (loaded if present, allowed to be missing).
    /// Returns the names that were loaded.
    /// </summary>
    public static ISet<string> Load(nn.Module model, string modelDir, IReadOnlyCollection<string> ignoredKeys, IReadOnlyCollection<string>? optionalKeys = null)
    {
        var expected = model.state_dict();
        foreach (var k in ignoredKeys) expected.Remove(k);
        var quantized = model.named_modules().Where(m => m.module is AdaptableLinear { Quantization: not BaseQuantization.None })
            .ToDictionary(m => m.name + ".weight", m => (AdaptableLinear)m.module, StringComparer.Ordinal);
        var loaded = new HashSet<string>();
        var unexpected = new List<string>();
        using var _ = no_grad();
        using var bnb = new BitsAndBytesWeights();
        string Name(string key) => expected.ContainsKey(key) || !expected.ContainsKey("model." + key) ? key : "model." + key;
        foreach (var file in FindWeightFiles(modelDir))
        {
            var sd = ReadSafetensors(file);
            var taken = new HashSet<string>(StringComparer.Ordinal);                   // tensors handed to the bitsandbytes collector
            try
            {
                foreach (var (key, src) in sd)
                {
                    if (ignoredKeys.Contains(key) || key.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal)) continue;
                    if (BitsAndBytesWeights.IsSideTensor(key, out var weightKey, out var part))
                    {
                        if (ignoredKeys.Contains(weightKey)) continue;
                        bnb.Add(Name(weightKey), part, src); taken.Add(key); continue;
                    }
                    // A bare decoder checkpoint (saved from LlamaModel) has no "model." prefix, as transformers' base_model_prefix allows.
                    var name = Name(key);
                    if (!expected.TryGetValue(name, out var dst)) { unexpected.Add(key); continue; }
                    if (src.dtype == ScalarType.Byte && dst.is_floating_point())       // bitsandbytes' packed 4-bit codes
                    {
                        bnb.Add(name, "weight", src); taken.Add(key); continue;
                    }
                    if (quantized.TryGetValue(name, out var qLayer))
                    {
                        if (src.dim() != 2 || src.shape[0] != qLayer.OutFeatures || src.shape[1] != qLayer.InFeatures)
                            throw new InvalidDataException(
                                $"Checkpoint tensor '{name}' in '{Path.GetFileName(file)}' has shape [{string.Join(", ", src.shape)}] but the model expects [{qLayer.OutFeatures}, {qLayer.InFeatures}] (check config.json).");
                        qLayer.LoadWeight(src);                                        // quantized on the layer's device
                        loaded.Add(name);
                        continue;
                    }
                    if (!src.shape.SequenceEqual(dst.shape))
                        throw new InvalidDataException(
                            $"Checkpoint tensor '{name}' in '{Path.GetFileName(file)}' has shape [{string.Join(", ", src.shape)}] but the model expects [{string.Join(", ", dst.shape)}] (check config.json).");
                    dst.copy_(src);                                    // casts dtype, moves device
                    loaded.Add(name);
                }
            }
            finally { foreach (var (k, t) in sd) if (!taken.Contains(k)) t.Dispose(); }
            LoadCompleteBitsAndBytes(bnb, expected, quantized, loaded);
        }
        bnb.ThrowIfIncomplete(modelDir);
        var missing = expected.Keys.Where(k => !loaded.Contains(k) && !(optionalKeys?.Contains(k) ?? false)).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
            throw new InvalidDataException(
                $"Checkpoint in '{modelDir}' does not match the {model.GetType().Name} built from config.json: " +
                (missing.Count > 0 ? $"missing {missing.Count} key(s): {List(missing)}. " : "") +
                (unexpected.Count > 0 ? $"unexpected {unexpected.Count} key(s): {List(unexpected)}." : ""));
        return loaded;
    }

    /// <summary>Puts every bitsandbytes weight read completely so far into its layer (kept as NF4, or dequantized).</summary>
    static void LoadCompleteBitsAndBytes(BitsAndBytesWeights bnb, Dictionary<string, Tensor> expected,
        Dictionary<string, AdaptableLinear> quantized, HashSet<string> loaded)
    {
        (long, long) ShapeOf(string key) => quantized.TryGetValue(key, out var l) ? (l.OutFeatures, l.InFeatures)
            : expected.TryGetValue(key, out var t) && t.dim() == 2 ? (t.shape[0], t.shape[1])
            : throw new InvalidDataException($"Checkpoint tensor '{key}' is a bitsandbytes 4-bit weight, but the model has no 2-D weight of that name.");
        var first = expected.Values.First();                                                   // the model's device and compute dtype
        foreach (var (key, w) in bnb.TakeComplete(ShapeOf, first.device, first.dtype))
        {
            if (quantized.TryGetValue(key, out var layer)) layer.LoadWeight(w);                // adopted as is by an NF4 layer
            else using (w) using (var dense = w.DequantizeFloat32()) expected[key].copy_(dense);
            loaded.Add(key);
        }
    }

    /// <summary>Reads one safetensors file; a truncated or garbled file is an <see cref="InvalidDataException"/> naming it and
    /// what is wrong (<see cref="SafetensorsReader"/> checks the whole header before allocating).</summary>
    static Dictionary<string, Tensor> ReadSafetensors(string file) => SafetensorsReader.Read(file);

    static string List(List<string> keys) => string.Join(", ", keys.Take(8)) + (keys.Count > 8 ? $", … ({keys.Count - 8} more)" : "");
}
