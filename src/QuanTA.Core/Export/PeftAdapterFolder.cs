using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Core.Export;

/// <summary>
/// Loads a PEFT adapter folder into a model: a LoRA folder written by PEFT (or by this project's export) and a QuanTA folder
/// written by this project's export ("peft_type": "QUANTA", docs/formats.md). Each adapted layer gets its adapter built from
/// the config and tensors, a classifier's modules_to_save head is copied into <c>score.weight</c>, and every other parameter is
/// frozen. Nothing is changed when anything is wrong: a key the model has no layer for, a missing tensor, a shape that differs,
/// or a PEFT option this project does not compute (DoRA, rsLoRA, trained biases, fan_in_fan_out) throws naming it.
/// </summary>
public static class PeftAdapterFolder
{
    /// <summary>True when <paramref name="path"/> is a folder holding an adapter_config.json.</summary>
    public static bool IsPeftFolder(string path) => Directory.Exists(path) && File.Exists(Path.Combine(path, PeftNames.ConfigFile));

    /// <summary>Loads the adapter folder <paramref name="folder"/> into <paramref name="model"/> (replacing adapters already attached
    /// to the same layers) and reports what is adapted.</summary>
    public static InjectionReport Load(nn.Module model, string folder)
    {
        using var parsed = Parse(model, folder);
        foreach (var (layer, adapter, values) in parsed.Built)
        {
            adapter.to(layer.weight.device);
            layer.Attach(adapter);
            using var _ = no_grad();
            foreach (var (k, t) in adapter.state_dict()) t.copy_(values[k]);
        }
        parsed.CopyHeads();
        parsed.Built.Clear();                                                     // attached: the model owns them now
        AdapterInjector.FreezeAllButAdapters(model);
        return AdapterInjector.Report(model);
    }

    /// <summary>
    /// Starts a fine-tune from <paramref name="folder"/>: the adapters already attached to <paramref name="model"/> (built from the
    /// fit's options) take the folder's values, and a classifier head saved beside them (modules_to_save) is copied too. The
    /// folder must adapt exactly the layers the model adapts, with the same method and shapes (and, for LoRA, the same alpha):
    /// anything else throws naming the layer, what differs and the option to change; the model is left as it was.
    /// </summary>
    public static void InitializeFrom(nn.Module model, string folder)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var parsed = Parse(model, folder);
        var attached = AdapterInjector.LinearLayers(model).Where(l => l.Layer.Adapter is not null).ToDictionary(l => l.Layer, l => l.Name);
        var fromFolder = parsed.Built.ToDictionary(b => b.Layer, b => b);
        var missing = attached.Where(kv => !fromFolder.ContainsKey(kv.Key)).Select(kv => kv.Value).ToList();
        var extra = parsed.Built.Where(b => !attached.ContainsKey(b.Layer)).Select(b => parsed.NameOf(b.Layer)).ToList();
        if (missing.Count > 0 || extra.Count > 0)
            throw new InvalidDataException($"The adapter folder '{folder}' does not adapt the layers this fit targets: " +
                (missing.Count > 0 ? $"no adapter for {string.Join(", ", missing.Take(4))}{(missing.Count > 4 ? $" and {missing.Count - 4} more" : "")}; " : "") +
                (extra.Count > 0 ? $"adapters for {string.Join(", ", extra.Take(4))}{(extra.Count > 4 ? $" and {extra.Count - 4} more" : "")}, which this fit does not target; " : "") +
                "set TargetModules (CLI --target-modules) to the folder's target_modules.");
        foreach (var (layer, loaded, values) in parsed.Built)
        {
            var own = layer.Adapter!;
            string name = attached[layer];
            if (own.GetType() != loaded.GetType())
                throw new InvalidDataException($"The adapter folder '{folder}' holds a {loaded.Method} adapter for '{name}' but this fit trains {own.Method}: " +
                    "set Adapter (CLI --adapter) to the folder's method.");
            var ownShapes = own.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
            foreach (var (key, value) in values)
                if (!ownShapes.TryGetValue(key, out var shape) || !shape.SequenceEqual(value.shape))
                    throw new InvalidDataException($"The adapter folder '{folder}' gives '{name}' tensor '{key}' shape [{string.Join(", ", value.shape)}] but this fit's " +
                        $"adapter has {(shape is null ? "no such tensor" : $"[{string.Join(", ", shape)}]")}: set the adapter options to the folder's " +
                        $"({Describe(loaded)}; CLI --lora-rank / --rank / --axis-layout / --pairs / --tensor-count).");
            if (own is LoRAAdapter a && loaded is LoRAAdapter b && a.Alpha != b.Alpha)
                throw new InvalidDataException($"The adapter folder '{folder}' has lora_alpha {b.Alpha} for '{name}' but this fit uses {a.Alpha}: " +
                    "set LoRAAlpha (CLI --lora-alpha) to the folder's.");
        }
        using (no_grad())
            foreach (var (layer, _, values) in parsed.Built)
                foreach (var (k, t) in layer.Adapter!.state_dict()) t.copy_(values[k]);
        parsed.CopyHeads();
    }

    static string Describe(Adapter a) => string.Join(", ", a.Describe().Select(kv => $"{kv.Key} {System.Text.Json.JsonSerializer.Serialize(kv.Value)}"));

    /// <summary>A folder read and checked against the model, nothing changed yet: the adapters built from it (not attached),
    /// the heads to copy, and the file's tensors (all freed on dispose).</summary>
    sealed class Parsed(Dictionary<string, Tensor> file, Dictionary<string, AdaptableLinear> layers) : IDisposable
    {
        public Dictionary<string, Tensor> File => file;
        public List<(AdaptableLinear Layer, Adapter Adapter, Dictionary<string, Tensor> Values)> Built { get; } = [];
        public List<(Tensor Target, Tensor Value, string Key)> Heads { get; } = [];
        public string NameOf(AdaptableLinear layer) => layers.First(kv => ReferenceEquals(kv.Value, layer)).Key;
        public void CopyHeads() { using (no_grad()) foreach (var (target, value, _) in Heads) target.copy_(value); }
        public void Dispose()
        {
            foreach (var (_, a, _) in Built) a.Dispose();
            foreach (var t in file.Values) t.Dispose();
        }
    }

    static Parsed Parse(nn.Module model, string folder)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        var cfgPath = Path.Combine(folder, PeftNames.ConfigFile);
        var weightsPath = Path.Combine(folder, PeftNames.WeightsFile);
        if (!File.Exists(cfgPath)) throw new FileNotFoundException($"'{folder}' is not a PEFT adapter folder: it has no {PeftNames.ConfigFile}.", cfgPath);
        if (!File.Exists(weightsPath))
            throw new FileNotFoundException($"The PEFT adapter folder '{folder}' has no {PeftNames.WeightsFile} (PyTorch adapter_model.bin files are not read; save with safetensors).", weightsPath);
        JsonObject cfg;
        try { cfg = JsonNode.Parse(File.ReadAllText(cfgPath)) as JsonObject ?? throw new InvalidDataException($"{cfgPath} is not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{cfgPath} is not valid JSON (line {e.LineNumber + 1}): {e.Message}", e); }
        string peftType = (string?)cfg["peft_type"] ?? throw new InvalidDataException($"{cfgPath} has no \"peft_type\".");

        var layers = AdapterInjector.LinearLayers(model).ToDictionary(l => l.Name, l => l.Layer);
        var sd = model.state_dict();
        var parsed = new Parsed(SafetensorsReader.Read(weightsPath), layers);
        var file = parsed.File;
        try
        {
            var used = new HashSet<string>();
            switch (peftType)
            {
                case "LORA": BuildLoRA(cfg, cfgPath, file, layers, parsed.Built, used); break;
                case "QUANTA": BuildQuanTA(cfg, cfgPath, file, layers, parsed.Built, used); break;
                default: throw new NotSupportedException($"{cfgPath}: peft_type '{peftType}' cannot be loaded; LORA and QUANTA can.");
            }
            // modules_to_save (a classifier's head) and anything left over
            foreach (var (key, value) in file)
            {
                if (used.Contains(key)) continue;
                var name = key.StartsWith(PeftNames.Prefix, StringComparison.Ordinal) ? key[PeftNames.Prefix.Length..] : key;
                name = name.Replace(".modules_to_save.", ".", StringComparison.Ordinal);      // PEFT < 0.15 kept the wrapper's name
                if (!sd.TryGetValue(name, out var target))
                    throw new InvalidDataException($"{weightsPath} has tensor '{key}', which matches no adapted layer or parameter of the model " +
                        $"(model layers e.g. {string.Join(", ", layers.Keys.Take(4))}). Was the adapter trained on another base model?");
                if (!target.shape.SequenceEqual(value.shape))
                    throw new InvalidDataException($"{weightsPath}: tensor '{key}' has shape [{string.Join(", ", value.shape)}] but the model's '{name}' is " +
                        $"[{string.Join(", ", target.shape)}] (a classifier head for another number of labels?).");
                parsed.Heads.Add((target, value, key));
            }
            return parsed;
        }
        catch { parsed.Dispose(); throw; }
    }

    static void BuildLoRA(JsonObject cfg, string cfgPath, Dictionary<string, Tensor> file, Dictionary<string, AdaptableLinear> layers,
        List<(AdaptableLinear Layer, Adapter Adapter, Dictionary<string, Tensor> Values)> built, HashSet<string> used)
    {
        foreach (var (option, allowed) in new (string, JsonNode?)[] { ("use_dora", false), ("use_rslora", false), ("fan_in_fan_out", false), ("lora_bias", false), ("bias", "none") })
            if (cfg[option] is JsonNode v && v.ToJsonString() != allowed!.ToJsonString())
                throw new NotSupportedException($"{cfgPath}: \"{option}\": {v.ToJsonString()} is not supported (only {allowed.ToJsonString()}); " +
                    "this project computes plain LoRA, ΔW = (lora_alpha / r) · B A.");
        double alpha = (double?)cfg["lora_alpha"] ?? 8;
        double dropout = (double?)cfg["lora_dropout"] ?? 0;
        var alphaPattern = cfg["alpha_pattern"] as JsonObject;
        var aKeys = file.Keys.Where(k => k.EndsWith(".lora_A.weight", StringComparison.Ordinal)).ToList();
        if (aKeys.Count == 0) throw new InvalidDataException($"{Path.Combine(Path.GetDirectoryName(cfgPath)!, PeftNames.WeightsFile)} holds no '….lora_A.weight' tensor.");
        foreach (var aKey in aKeys)
        {
            var name = LayerName(aKey, ".lora_A.weight", layers, cfgPath);
            var layer = layers[name];
            var bKey = PeftNames.LoraB(name);
            if (!file.TryGetValue(bKey, out var b)) throw new InvalidDataException($"The adapter has '{aKey}' but not '{bKey}'.");
            var a = file[aKey];
            long r = a.shape[0];
            Expect(aKey, a, [r, layer.InFeatures], name, layer);
            Expect(bKey, b, [layer.OutFeatures, r], name, layer);
            double layerAlpha = alphaPattern?.FirstOrDefault(kv => Regex.IsMatch(name, $"(^|\\.){kv.Key}$")).Value is JsonNode p ? (double)p : alpha;
            var adapter = new LoRAAdapter(layer.InFeatures, layer.OutFeatures, (int)r, layerAlpha, dropout);
            built.Add((layer, adapter, new() { ["A"] = a, ["B"] = b }));
            used.Add(aKey); used.Add(bKey);
        }
    }

    static void BuildQuanTA(JsonObject cfg, string cfgPath, Dictionary<string, Tensor> file, Dictionary<string, AdaptableLinear> layers,
        List<(AdaptableLinear Layer, Adapter Adapter, Dictionary<string, Tensor> Values)> built, HashSet<string> used)
    {
        var layersJson = cfg["layers"] as JsonObject
            ?? throw new InvalidDataException($"{cfgPath} has no \"layers\" object (each adapted layer's per_dim_features and pairs); it was not written by this project's export.");
        int? rank = cfg["rank"] is JsonValue rv && rv.TryGetValue<int>(out var rr) ? rr : null;
        double dropout = (double?)cfg["quanta_dropout"] ?? 0;
        foreach (var (name, node) in layersJson)
        {
            if (!layers.TryGetValue(name, out var layer))
                throw new InvalidDataException($"{cfgPath}: layer '{name}' is not a linear layer of the model (model layers e.g. {string.Join(", ", layers.Keys.Take(4))}).");
            var d = node as JsonObject ?? throw new InvalidDataException($"{cfgPath}: layers.{name} is not an object.");
            int inF = (int)d["in_features"]!, outF = (int)d["out_features"]!;
            if (inF != layer.InFeatures || outF != layer.OutFeatures)
                throw new InvalidDataException($"{cfgPath}: layer '{name}' is {inF}→{outF} in the adapter but {layer.InFeatures}→{layer.OutFeatures} in the model.");
            var dims = d["per_dim_features"]!.AsArray().Select(x => (int)x!).ToArray();
            var pairs = d["pairs"]!.AsArray().Select(p => new AxisPair((int)p![0]!, (int)p[1]!)).ToArray();
            var layout = new AxisLayout(dims, pairs);
            var adapter = new QuanTAAdapter(inF, outF, layout, rank, dropout);
            var values = new Dictionary<string, Tensor>();
            try
            {
                for (int i = 0; i < layout.TensorCount; i++)
                {
                    bool low = adapter.get_parameter($"T_{i}_U") is not null;
                    foreach (var (kind, local) in low
                        ? new[] { ("quanta_weights_u", $"T_{i}_U"), ("quanta_weights_v", $"T_{i}_V"), ("quanta_weights2", $"S_{i}") }
                        : [("quanta_weights", $"T_{i}"), ("quanta_weights2", $"S_{i}")])
                    {
                        var key = PeftNames.QuanTA(name, kind, layout, i);
                        if (!file.TryGetValue(key, out var t)) throw new InvalidDataException($"The QuanTA adapter of layer '{name}' needs tensor '{key}', which {PeftNames.WeightsFile} lacks.");
                        var expected = (adapter.get_parameter(local) ?? adapter.get_buffer(local))!.shape;
                        Expect(key, t, expected, name, layer);
                        values[local] = t;
                        used.Add(key);
                    }
                }
            }
            catch { adapter.Dispose(); throw; }
            built.Add((layer, adapter, values));
        }
    }

    static string LayerName(string key, string suffix, Dictionary<string, AdaptableLinear> layers, string cfgPath)
    {
        var name = key[..^suffix.Length];
        if (name.StartsWith(PeftNames.Prefix, StringComparison.Ordinal)) name = name[PeftNames.Prefix.Length..];
        if (layers.ContainsKey(name)) return name;
        if (layers.ContainsKey("model." + name)) return "model." + name;      // an adapter saved on a bare decoder (no "model.")
        throw new InvalidDataException($"Adapter tensor '{key}' (from {cfgPath}'s folder) is for layer '{name}', which is not a linear layer of the model " +
            $"(model layers e.g. {string.Join(", ", layers.Keys.Take(4))}). Load the adapter on the base model it was trained on.");
    }

    static void Expect(string key, Tensor t, long[] shape, string layerName, AdaptableLinear layer)
    {
        if (!t.shape.SequenceEqual(shape))
            throw new InvalidDataException($"Adapter tensor '{key}' has shape [{string.Join(", ", t.shape)}] but layer '{layerName}' " +
                $"({layer.InFeatures}→{layer.OutFeatures}) needs [{string.Join(", ", shape)}]" +
                (t.numel() == shape.Aggregate(1L, (a, b) => a * b) ? " (same number of elements: transposed?)." : "."));
    }
}
