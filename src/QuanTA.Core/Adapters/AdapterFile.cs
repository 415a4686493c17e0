using System.Text.Json;
using System.Text.Json.Nodes;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// Exports and imports the adapters of a model (not the frozen base): a safetensors file of every adapter tensor, keyed
/// <c>{layer}.{method}.{tensor}</c> (e.g. <c>model.layers.0.self_attn.q_proj.quanta.T_0</c>, <c>….quanta.S_0</c>,
/// <c>….lora.A</c>), and next to it a JSON file (same path, extension ".json") with the format version, each layer's options
/// (method, in/out, layout, pairs, rank, alpha, dropout) and every tensor's shape. QuanTA's frozen S is saved too: it is the
/// random init, needed to reproduce ΔW = crop(M_T − M_S).
/// </summary>
public static class AdapterFile
{
    /// <summary>Format tag written to the JSON.</summary>
    public const string Format = "quanta-mlnet-adapter";
    /// <summary>Format version written to the JSON.</summary>
    public const int Version = 1;

    /// <summary>The JSON path that goes with <paramref name="safetensorsPath"/>.</summary>
    public static string ConfigPath(string safetensorsPath) => Path.ChangeExtension(safetensorsPath, ".json");

    /// <summary>Writes the adapters of <paramref name="model"/> to <paramref name="path"/> (safetensors) and its JSON.</summary>
    public static void Save(nn.Module model, string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var adapted = AdapterInjector.LinearLayers(model).Where(l => l.Layer.Adapter is not null).ToList();
        if (adapted.Count == 0) throw new InvalidOperationException("The model has no attached adapters to save.");
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>();
        var layers = new JsonObject();
        var shapes = new JsonObject();
        foreach (var (name, layer) in adapted)
        {
            var a = layer.Adapter!;
            foreach (var (k, t) in a.state_dict())
            {
                string key = $"{name}.{a.Method}.{k}";
                tensors[key] = t.detach().cpu().contiguous();
                shapes[key] = new JsonArray(t.shape.Select(d => (JsonNode)d).ToArray());
            }
            layers[name] = JsonSerializer.SerializeToNode(a.Describe());
        }
        var json = new JsonObject
        {
            ["format"] = Format,
            ["version"] = Version,
            ["method"] = string.Join(",", adapted.Select(l => l.Layer.Adapter!.Method).Distinct()),
            ["targets"] = new JsonArray(adapted.Select(l => (JsonNode)l.Name).ToArray()),
            ["layers"] = layers,
            ["tensors"] = shapes,
        };
        // Each file is replaced atomically (temp file + rename): a failed export leaves the previous files intact.
        AtomicFile.Write(path, s => Safetensors.SaveStateDict(s, tensors, leaveOpen: true));
        AtomicFile.WriteAllText(ConfigPath(path), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Loads adapters saved by <see cref="Save"/> into <paramref name="model"/>. Layers that have no adapter get one built from
    /// the JSON (then every non-adapter parameter is frozen); layers that have one must match it exactly. Any difference
    /// (a layer missing on either side, method, layer size, layout, a tensor's name or shape — a transposed factor
    /// included) throws naming the tensor and both shapes; a QuanTA tensor transposed without a change of shape is found from
    /// its values (see <see cref="RefuseTransposedQuanTA"/> for what can and cannot be detected). Values are copied into the existing parameters and buffers.
    /// </summary>
    /// <remarks>A folder holding an adapter_config.json is read as a PEFT adapter folder instead
    /// (<see cref="Export.PeftAdapterFolder"/>: LoRA written by PEFT or by this project's export, QuanTA by the export).</remarks>
    public static InjectionReport Load(nn.Module model, string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (Export.PeftAdapterFolder.IsPeftFolder(path)) return Export.PeftAdapterFolder.Load(model, path);
        if (Directory.Exists(path))
            throw new FileNotFoundException($"Adapter '{path}' is a folder without {Export.PeftNames.ConfigFile}: give a PEFT adapter folder or an adapter .safetensors file.", path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Adapter weights file not found: {path}", path);
        var cfgPath = ConfigPath(path);
        if (!File.Exists(cfgPath)) throw new FileNotFoundException($"Adapter config not found next to the weights: {cfgPath}", cfgPath);
        JsonObject json;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(cfgPath)) as JsonObject
                ?? throw new InvalidDataException($"{cfgPath} is not a JSON object.");
        }
        catch (JsonException e) { throw new InvalidDataException($"{cfgPath} is not valid JSON ({e.Message}).", e); }
        if (json["format"] is not JsonValue f || !f.TryGetValue<string>(out var format) || format != Format)
            throw new InvalidDataException($"{cfgPath} is not a {Format} file (format = {Show(json["format"])}).");
        if (json["version"] is not JsonValue vv || !vv.TryGetValue<int>(out var v) || v > Version)
            throw new InvalidDataException($"{cfgPath} has format version {Show(json["version"])}; this library reads version ≤ {Version}.");
        var layersJson = json["layers"] as JsonObject ?? throw new InvalidDataException($"{cfgPath} has no 'layers' object.");

        var modelLayers = AdapterInjector.LinearLayers(model).ToDictionary(l => l.Name, l => l.Layer);
        foreach (var (name, _) in layersJson)
            if (!modelLayers.ContainsKey(name))
                throw new InvalidDataException($"{cfgPath} has layer '{name}', which the model does not have (model layers e.g. {string.Join(", ", modelLayers.Keys.Take(6))}).");
        foreach (var (name, layer) in modelLayers)
            if (layer.Adapter is not null && !layersJson.ContainsKey(name))
                throw new InvalidDataException($"Layer '{name}' has a {layer.Adapter.Method} adapter but {cfgPath} has none for it.");

        // build missing adapters from the JSON (before touching any weight, so a bad file changes nothing)
        var toAttach = new List<(AdaptableLinear, Adapter)>();
        long? weightValues = null;
        foreach (var (name, node) in layersJson)
        {
            var layer = modelLayers[name];
            var desc = node as JsonObject ?? throw new InvalidDataException($"Layer '{name}' entry in {cfgPath} is not an object.");
            var at = $"{cfgPath}, layer '{name}'";
            int inF = Int(desc, "in_features", at), outF = Int(desc, "out_features", at);
            if (inF != layer.InFeatures || outF != layer.OutFeatures)
                throw new InvalidDataException($"{at}: the adapter file is for {inF}→{outF} but the model's layer is {layer.InFeatures}→{layer.OutFeatures}.");
            string method = Str(desc, "method", at);
            CheckSizeAgainstWeights(desc, at, path, ref weightValues);
            if (layer.Adapter is { } existing)
            {
                if (existing.Method != method)
                    throw new InvalidDataException($"{at}: the adapter file holds a {method} adapter but the model's is {existing.Method}.");
                using var probe = FromDescription(desc, at);
                if (!SameOptions(existing, probe))
                    throw new InvalidDataException($"{at}: the adapter file's options ({Options(probe)}) differ from the model's adapter ({Options(existing)}).");
            }
            else toAttach.Add((layer, FromDescription(desc, at)));
        }

        using var tensors = new DisposableDict(SafetensorsReader.Read(path));
        try
        {
            // check every tensor: names and shapes, both ways
            var expected = new Dictionary<string, Tensor>();
            foreach (var (name, _) in layersJson)
            {
                var a = modelLayers[name].Adapter ?? toAttach.First(t => t.Item1 == modelLayers[name]).Item2;
                foreach (var (k, t) in a.state_dict()) expected[$"{name}.{a.Method}.{k}"] = t;
            }
            foreach (var (key, t) in expected)
            {
                if (!tensors.Dict.TryGetValue(key, out var src))
                    throw new InvalidDataException($"Adapter tensor '{key}' (shape [{string.Join(", ", t.shape)}]) is missing from {path}.");
                if (!src.shape.SequenceEqual(t.shape))
                    throw new InvalidDataException(
                        $"Adapter tensor '{key}' has shape [{string.Join(", ", src.shape)}] in {path} but the model expects [{string.Join(", ", t.shape)}]" +
                        (src.numel() == t.numel() ? " (same number of elements: a transposed or reshaped factor?)." : "."));
            }
            foreach (var key in tensors.Dict.Keys)
                if (!expected.ContainsKey(key))
                    throw new InvalidDataException($"{path} has tensor '{key}', which the model's adapters do not have.");
            // a transposed QuanTA tensor keeps its shape (a k×k matrix, or a pair of equal axes swapped): check the values
            foreach (var (name, _) in layersJson)
                if ((modelLayers[name].Adapter ?? toAttach.First(t => t.Item1 == modelLayers[name]).Item2) is QuanTAAdapter q)
                    RefuseTransposedQuanTA(name, q, tensors.Dict, path);
        }
        catch { foreach (var (_, a) in toAttach) a.Dispose(); throw; }

        foreach (var (layer, a) in toAttach) { a.to(layer.weight.device); layer.Attach(a); }
        using (no_grad())
            foreach (var (name, _) in layersJson)
            {
                var a = modelLayers[name].Adapter!;
                foreach (var (k, t) in a.state_dict())
                    t.copy_(tensors.Dict[$"{name}.{a.Method}.{k}"].to(t.dtype, t.device));
            }
        AdapterInjector.FreezeAllButAdapters(model);
        return AdapterInjector.Report(model);
    }

    /// <summary>
    /// Refuses a QuanTA tensor stored transposed. A tensor T_i [d_m, d_n, d_m, d_n] keeps its shape when transposed as the
    /// k×k matrix it stands for (out ↔ in, permute(2, 3, 0, 1)), and so does one whose pair has equal axes (d_m = d_n) with those
    /// axes swapped; a low-rank T_i = U·V keeps its factors' shapes when they are swapped and transposed (U' = Vᵀ, V' = Uᵀ).
    /// None of these is visible in the shapes, so the values are checked against the file's frozen copy S_i (the random init
    /// T started from): a trained T stays far closer to S than to any transposition of S. T_i is refused when one of the
    /// permutations above brings it at least 4× closer to S_i than it is as stored. What cannot be detected: a file whose
    /// T_i and S_i were both transposed (it is consistent with itself and computes another ΔW), a T_i trained so far from its
    /// init that S no longer tells the orientation, and LoRA factors of a square layer swapped and transposed (A' = Bᵀ,
    /// B' = Aᵀ: the same shapes and no reference to compare with). Transpositions that change a shape (non-square axis pairs
    /// with swapped axes, a low-rank factor transposed, LoRA factors of a non-square layer) are refused by the shape check.
    /// </summary>
    static void RefuseTransposedQuanTA(string layer, QuanTAAdapter a, Dictionary<string, Tensor> file, string path)
    {
        using var scope = NewDisposeScope();
        var layout = a.Layout;
        for (int i = 0; i < layout.TensorCount; i++)
        {
            long[] shape = layout.TensorShape(i);                                                  // [d_m, d_n, d_m, d_n]
            string p = $"{layer}.quanta.", sKey = $"{p}S_{i}";
            bool low = file.ContainsKey($"{p}T_{i}_U");
            var t = low
                ? file[$"{p}T_{i}_U"].to_type(ScalarType.Float64).matmul(file[$"{p}T_{i}_V"].to_type(ScalarType.Float64)).view(shape)   // (k, r)(r, k)
                : file[$"{p}T_{i}"].to_type(ScalarType.Float64);
            var s = file[sKey].to_type(ScalarType.Float64);
            double stored = (t - s).norm().item<double>();
            if (stored == 0) continue;                                                              // untrained: T = S
            var perms = new List<(long[] Perm, string What)> { ([2, 3, 0, 1], $"as the {shape[0] * shape[1]}×{shape[0] * shape[1]} matrix it stands for, out and in swapped") };
            if (shape[0] == shape[1])
            {
                perms.Add(([1, 0, 3, 2], "its two axes of equal size swapped"));
                perms.Add(([3, 2, 1, 0], "out and in swapped and its two axes swapped"));
            }
            foreach (var (perm, what) in perms)
            {
                double other = (t.permute(perm) - s).norm().item<double>();
                if (other * 4 > stored) continue;
                string key = low ? $"{p}T_{i}_U' and '{p}T_{i}_V" : $"{p}T_{i}";
                string shapes = low
                    ? $"shapes [{string.Join(", ", file[$"{p}T_{i}_U"].shape)}] and [{string.Join(", ", file[$"{p}T_{i}_V"].shape)}] in {path}, the model expects " +
                      $"[{string.Join(", ", a.get_parameter($"T_{i}_U")!.shape)}] and [{string.Join(", ", a.get_parameter($"T_{i}_V")!.shape)}]"
                    : $"shape [{string.Join(", ", file[$"{p}T_{i}"].shape)}] in {path}, the model expects [{string.Join(", ", shape)}]";
                throw new InvalidDataException(
                    $"Adapter tensor '{key}' looks transposed ({what}): {shapes} — the same shape, so only its values tell — but it matches its " +
                    $"frozen copy '{sKey}' (the init it was trained from) only once transposed: ‖T − S‖ = {stored:G3} as stored, {other:G3} transposed. " +
                    "Export the adapter again without transposing it (or transpose it back); one of T and S was transposed, not both.");
            }
        }
    }

    /// <summary>Rebuilds an adapter from the options <see cref="Adapter.Describe"/> wrote; <paramref name="at"/> names the file and layer.</summary>
    static Adapter FromDescription(JsonObject d, string at)
    {
        int inF = Int(d, "in_features", at), outF = Int(d, "out_features", at);
        double dropout = d["dropout"] is null ? 0 : Dbl(d, "dropout", at);
        try
        {
            switch (Str(d, "method", at))
            {
                case "quanta":
                    var (dims, pairs) = Layout(d, at);
                    int? rank = d["rank"] is JsonValue rv && rv.GetValueKind() == JsonValueKind.Number ? Int(d, "rank", at) : null;   // "full": null
                    return new QuanTAAdapter(inF, outF, new AxisLayout(dims, pairs), rank, dropout);
                case "lora":
                    return new LoRAAdapter(inF, outF, Int(d, "rank", at), Dbl(d, "alpha", at), dropout);
                default:
                    throw new InvalidDataException($"{at}: unknown adapter method {Show(d["method"])} (expected quanta or lora).");
            }
        }
        catch (ArgumentException e) { throw new InvalidDataException($"{at}: {e.Message}", e); }
    }

    /// <summary>
    /// Refuses options whose tensors could not fit in the weights file, before they are allocated: QuanTA's frozen S_i alone
    /// holds (d_m·d_n)² values per axis pair, LoRA r·(in + out); every one of them must be in the file, so a layout or rank
    /// damaged into a huge number is reported here instead of exhausting memory.
    /// </summary>
    static void CheckSizeAgainstWeights(JsonObject d, string at, string path, ref long? weightValues)
    {
        if (weightValues is null)
        {
            using var s = File.OpenRead(path);
            weightValues = SafetensorsReader.ReadHeader(s, path, out _)
                .Sum(e => e.Shape.Aggregate(1.0, (n, x) => n * x) is var n && n < long.MaxValue ? (long)n : long.MaxValue);
        }
        double needed;
        switch (Str(d, "method", at))
        {
            case "quanta":
                var (dims, pairs) = Layout(d, at);
                needed = pairs.Sum(p => p.M >= 0 && p.M < dims.Length && p.N >= 0 && p.N < dims.Length ? Math.Pow((double)dims[p.M] * dims[p.N], 2) : 0);
                break;
            case "lora":
                needed = (double)Int(d, "rank", at) * ((double)Int(d, "in_features", at) + Int(d, "out_features", at));
                break;
            default:
                return;   // FromDescription names the unknown method
        }
        if (needed > weightValues)
            throw new InvalidDataException($"{at}: its options need at least {needed:G4} values but {path} holds {weightValues:N0} in all " +
                "(a layout or rank that does not belong to these weights, or a damaged file).");
    }

    static (int[] Dims, AxisPair[] Pairs) Layout(JsonObject d, string at)
    {
        var dims = IntArray(d["layout"], "layout", at);
        var pairs = d["pairs"] is JsonArray a
            ? a.Select(p => IntArray(p, "pairs", at) is [var m, var n] ? new AxisPair(m, n) : throw new InvalidDataException($"{at}: \"pairs\" holds {Show(p)}, not a pair [m, n].")).ToArray()
            : throw new InvalidDataException($"{at}: \"pairs\" is missing or not an array ({Show(d["pairs"])}).");
        return (dims, pairs);
    }

    static int Int(JsonObject d, string key, string at) => d[key] is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out var i)
        ? i : throw new InvalidDataException($"{at}: \"{key}\" is missing or not a 32-bit integer ({Show(d[key])}).");

    static double Dbl(JsonObject d, string key, string at) => d[key] is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<double>(out var x)
        ? x : throw new InvalidDataException($"{at}: \"{key}\" is missing or not a number ({Show(d[key])}).");

    static string Str(JsonObject d, string key, string at) => d[key] is JsonValue v && v.TryGetValue<string>(out var s)
        ? s : throw new InvalidDataException($"{at}: \"{key}\" is missing or not a string ({Show(d[key])}).");

    static int[] IntArray(JsonNode? node, string key, string at) => node is JsonArray a
        ? a.Select(x => x is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out var i) ? i
            : throw new InvalidDataException($"{at}: \"{key}\" holds {Show(x)}, not a 32-bit integer.")).ToArray()
        : throw new InvalidDataException($"{at}: \"{key}\" is missing or not an array ({Show(node)}).");

    /// <summary>A JSON value as text for a message, cut short.</summary>
    static string Show(JsonNode? node)
    {
        var text = node?.ToJsonString() ?? "null";
        return text.Length <= 60 ? text : text[..60] + "…";
    }

    static bool SameOptions(Adapter a, Adapter b) => (a, b) switch
    {
        (QuanTAAdapter x, QuanTAAdapter y) => x.Layout.Dims.SequenceEqual(y.Layout.Dims) && x.Layout.Pairs.SequenceEqual(y.Layout.Pairs) && x.Rank == y.Rank,
        (LoRAAdapter x, LoRAAdapter y) => x.Rank == y.Rank && x.Alpha == y.Alpha,
        _ => false,
    };

    static string Options(Adapter a) => a switch
    {
        QuanTAAdapter q => $"layout {q.Layout}, rank {(q.Rank?.ToString() ?? "full")}",
        LoRAAdapter l => $"r={l.Rank}, alpha={l.Alpha}",
        _ => a.GetType().Name,
    };

    sealed class DisposableDict(Dictionary<string, Tensor> dict) : IDisposable
    {
        public Dictionary<string, Tensor> Dict { get; } = dict;
        public void Dispose() { foreach (var t in Dict.Values) t.Dispose(); }
    }
}
