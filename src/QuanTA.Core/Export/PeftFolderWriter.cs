using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Export;

/// <summary>
/// Writes a PEFT adapter folder: <c>adapter_config.json</c> (keys sorted, two-space indent, as PEFT's <c>save_pretrained</c>
/// writes it) and <c>adapter_model.safetensors</c> with the keys of <see cref="PeftNames"/>. LoRA's config carries every field
/// PEFT 0.21 writes for a <c>LoraConfig</c> (test/fixtures/export-conventions/peft-lora-*.json were written by PEFT itself);
/// QuanTA's carries the official code's config fields plus the axis layout, pair chain and rank of each layer (docs/formats.md).
/// A classifier's head goes in as PEFT's modules_to_save <c>score</c>, whole (the rows of every output of the base's head).
/// </summary>
internal static class PeftFolderWriter
{
    /// <summary>The PEFT version whose layout is written (its peft_version field).</summary>
    public const string PeftVersion = "0.21.0";
    /// <summary>Format tag of the QuanTA layout, for readers that check it.</summary>
    public const string QuanTAFormat = "quanta-mlnet-peft";

    public static void Write(ExportSource src, string dir, ScalarType dtype)
    {
        var layers = AdapterInjector.LinearLayers(src.Model).Where(l => l.Layer.Adapter is not null).ToList();
        if (layers.Count == 0) throw new InvalidOperationException("The model has no adapters to export as PEFT.");
        var methods = layers.Select(l => l.Layer.Adapter!.Method).Distinct().ToList();
        if (methods.Count > 1) throw new InvalidOperationException($"The model mixes adapter methods ({string.Join(", ", methods)}); a PEFT folder holds one.");
        bool classifier = src.Task == ExportTask.SequenceClassification;
        var tensors = new List<PlannedTensor>();
        JsonObject config;
        if (methods[0] == "lora")
        {
            var loras = layers.Select(l => (l.Name, A: (LoRAAdapter)l.Layer.Adapter!)).ToList();
            foreach (var (name, a) in loras)
            {
                tensors.Add(new PlannedTensor(PeftNames.LoraA(name), a.LoraA.shape, dtype, () => a.LoraA.detach()));   // (r, in)
                tensors.Add(new PlannedTensor(PeftNames.LoraB(name), a.LoraB.shape, dtype, () => a.LoraB.detach()));   // (out, r)
            }
            config = LoraConfig(src, loras.Select(l => l.A).ToList(), TargetModules(src.Model, layers.Select(l => l.Name).ToList()));
        }
        else
        {
            var quantas = layers.Select(l => (l.Name, A: (QuanTAAdapter)l.Layer.Adapter!)).ToList();
            foreach (var (name, a) in quantas)
                for (int i = 0; i < a.Layout.TensorCount; i++)
                {
                    int j = i;
                    var shape = a.Layout.TensorShape(j);
                    if (a.Rank is int r && r < a.Layout.TensorSide(j))
                    {
                        var u = a.get_parameter($"T_{j}_U")!; var v = a.get_parameter($"T_{j}_V")!;
                        tensors.Add(new PlannedTensor(PeftNames.QuanTA(name, "quanta_weights_u", a.Layout, j), u.shape, dtype, () => u.detach()));  // (k, r)
                        tensors.Add(new PlannedTensor(PeftNames.QuanTA(name, "quanta_weights_v", a.Layout, j), v.shape, dtype, () => v.detach()));  // (r, k)
                    }
                    else tensors.Add(new PlannedTensor(PeftNames.QuanTA(name, "quanta_weights", a.Layout, j), shape, dtype, () => a.TensorT(j).detach()));
                    tensors.Add(new PlannedTensor(PeftNames.QuanTA(name, "quanta_weights2", a.Layout, j), shape, dtype, () => a.TensorS(j).detach()));
                }
            config = QuanTAConfig(src, quantas, TargetModules(src.Model, layers.Select(l => l.Name).ToList()));
        }
        if (classifier)
        {
            var head = src.Model.named_parameters().FirstOrDefault(p => p.name == "score.weight").parameter
                ?? throw new InvalidOperationException("The classifier has no 'score.weight' head to save as modules_to_save.");
            tensors.Add(new PlannedTensor(PeftNames.ModuleToSave("score.weight"), head.shape, dtype, () => head.detach()));   // (labels, hidden)
        }
        tensors.Sort((x, y) => string.CompareOrdinal(x.Name, y.Name));
        SafetensorsWriter.Write(Path.Combine(dir, PeftNames.WeightsFile), tensors);
        File.WriteAllText(Path.Combine(dir, PeftNames.ConfigFile), HfFolderWriter.Json(Sorted(config)));
    }

    /// <summary>PEFT's target_modules for the adapted layers: the list of their last name components when those select exactly
    /// the adapted layers (PEFT matches a list entry as a name suffix), else a regex of their full names (PEFT full-matches a string).</summary>
    internal static JsonNode TargetModules(nn.Module model, IReadOnlyList<string> adapted)
    {
        var all = AdapterInjector.LinearLayers(model).Select(l => l.Name).ToList();
        var suffixes = adapted.Select(n => n.Split('.')[^1]).Distinct().Order(StringComparer.Ordinal).ToList();
        var selected = all.Where(n => suffixes.Contains(n.Split('.')[^1])).ToHashSet();
        if (selected.SetEquals(adapted)) return new JsonArray(suffixes.Select(s => (JsonNode)s).ToArray());
        return JsonValue.Create("^(" + string.Join("|", adapted.Select(Regex.Escape)) + ")$");
    }

    static JsonObject Common(ExportSource src, string peftType, JsonNode targets) => new()
    {
        ["auto_mapping"] = null,
        ["base_model_name_or_path"] = Path.GetFullPath(src.BaseModelPath),
        ["bias"] = "none",
        ["exclude_modules"] = null,
        ["fan_in_fan_out"] = false,
        ["inference_mode"] = true,
        ["modules_to_save"] = src.Task == ExportTask.SequenceClassification
            ? new JsonArray(PeftNames.ClassifierModules.Select(m => (JsonNode)m).ToArray()) : null,
        ["peft_type"] = peftType,
        ["peft_version"] = PeftVersion,
        ["revision"] = null,
        ["target_modules"] = targets,
        ["task_type"] = src.Task == ExportTask.SequenceClassification ? "SEQ_CLS" : "CAUSAL_LM",
    };

    static JsonObject LoraConfig(ExportSource src, IReadOnlyList<LoRAAdapter> adapters, JsonNode targets)
    {
        var first = adapters[0];
        if (adapters.Any(a => a.Rank != first.Rank || a.Alpha != first.Alpha || a.DropoutP != first.DropoutP))
            throw new InvalidOperationException("The LoRA layers differ in rank, alpha or dropout; this export writes one r/lora_alpha for all.");
        var c = Common(src, "LORA", targets);
        c["alora_invocation_tokens"] = null; c["alpha_pattern"] = new JsonObject(); c["arrow_config"] = null; c["corda_config"] = null;
        c["ensure_weight_tying"] = false; c["eva_config"] = null; c["init_lora_weights"] = true; c["kasa_config"] = null;
        c["layer_replication"] = null; c["layers_pattern"] = null; c["layers_to_transform"] = null; c["loftq_config"] = new JsonObject();
        c["lora_alpha"] = first.Alpha == Math.Floor(first.Alpha) ? JsonValue.Create((long)first.Alpha) : JsonValue.Create(first.Alpha);
        c["lora_bias"] = false; c["lora_dropout"] = first.DropoutP; c["lora_ga_config"] = null; c["megatron_config"] = null;
        c["megatron_core"] = "megatron.core"; c["monteclora_config"] = null; c["qalora_group_size"] = 16; c["r"] = first.Rank;
        c["rank_pattern"] = new JsonObject(); c["target_parameters"] = null; c["trainable_token_indices"] = null; c["use_bdlora"] = null;
        c["use_dora"] = false; c["use_qalora"] = false; c["use_rslora"] = false; c["velora_config"] = null;
        return c;
    }

    static JsonObject QuanTAConfig(ExportSource src, IReadOnlyList<(string Name, QuanTAAdapter A)> adapters, JsonNode targets)
    {
        var first = adapters[0].A;
        bool oneLayout = adapters.All(a => a.A.Layout.Dims.SequenceEqual(first.Layout.Dims) && a.A.Layout.Pairs.SequenceEqual(first.Layout.Pairs));
        if (adapters.Any(a => a.A.Rank != first.Rank || a.A.DropoutP != first.DropoutP))
            throw new InvalidOperationException("The QuanTA layers differ in rank or dropout; this export writes one rank and dropout for all.");
        var c = Common(src, "QUANTA", targets);
        // the official QuanTAConfig's fields (quanta/tuners/quanta.py)
        c["d"] = first.Layout.AxisCount;
        c["per_dim_features"] = oneLayout ? Ints(first.Layout.Dims) : null;
        c["per_dim_features2"] = null;
        c["quanta_dropout"] = first.DropoutP;
        c["initialize_mode"] = "sum_opposite_freeze_one";
        c["merge_weights"] = false;
        c["sum_mode"] = false;
        // this project's additions: the chain and rank, and each layer's layout (a derived layout differs between layer sizes)
        c["format"] = QuanTAFormat;
        c["format_version"] = 1;
        c["pairs"] = oneLayout ? Pairs(first.Layout) : null;
        c["tensor_count"] = oneLayout ? first.Layout.TensorCount : null;
        c["rank"] = first.Rank;
        c["layers"] = new JsonObject(adapters.Select(a => KeyValuePair.Create(a.Name, (JsonNode?)new JsonObject
        {
            ["in_features"] = a.A.InFeatures,
            ["out_features"] = a.A.OutFeatures,
            ["per_dim_features"] = Ints(a.A.Layout.Dims),
            ["pairs"] = Pairs(a.A.Layout),
        })));
        return c;
    }

    static JsonArray Ints(IEnumerable<int> xs) => new(xs.Select(x => (JsonNode)x).ToArray());
    static JsonArray Pairs(AxisLayout l) => new(l.Pairs.Select(p => (JsonNode)new JsonArray(p.M, p.N)).ToArray());

    static JsonObject Sorted(JsonObject o) =>
        new(o.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => KeyValuePair.Create(kv.Key, kv.Value?.DeepClone())));
}
