using System.Text.Json;
using System.Text.Json.Nodes;
using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Export;

/// <summary>
/// Writes a merged Hugging Face folder, as transformers' <c>save_pretrained</c> lays it out: <c>config.json</c> (the base's, with
/// <c>dtype</c> set, and for a classifier the <c>…ForSequenceClassification</c> architecture, <c>num_labels</c>,
/// <c>id2label</c>/<c>label2id</c> and <c>pad_token_id</c>), the weights under the base checkpoint's key names in safetensors
/// shards of at most <c>maxShardSize</c> bytes (keys in sorted order, a new shard when the next tensor would not fit, a tensor
/// larger than the limit alone in its shard; <c>model.safetensors</c> when one shard suffices, else
/// <c>model-0000i-of-0000n.safetensors</c> + <c>model.safetensors.index.json</c>), and the tokenizer files and
/// <c>generation_config.json</c> copied. An adapted layer's weight is <see cref="AdaptableLinear.MergedWeight"/>:
/// round(fp32(W0) + fp32(ΔW)), rounded once.
/// </summary>
internal static class HfFolderWriter
{
    /// <summary>Files copied from the base folder when present (tokenizer, chat template, generation defaults).</summary>
    internal static readonly string[] CopiedFiles = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
        "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json"];

    public static void Write(ExportSource src, string dir, ScalarType dtype, long maxShardSize)
    {
        var config = ReadConfig(src.BaseModelPath);
        var tensors = PlanTensors(src, dtype, config);
        var shards = PlanShards(tensors, maxShardSize);
        if (shards.Count == 1) SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), shards[0]);
        else
        {
            var map = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                var file = ShardName(i, shards.Count);
                SafetensorsWriter.Write(Path.Combine(dir, file), shards[i]);
                foreach (var t in shards[i]) map[t.Name] = file;
            }
            var index = new JsonObject
            {
                ["metadata"] = new JsonObject
                {
                    ["total_parameters"] = tensors.Sum(t => t.Shape.Aggregate(1L, (a, d) => a * d)),
                    ["total_size"] = tensors.Sum(t => t.ByteSize),
                },
                ["weight_map"] = new JsonObject(map.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            };
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), Json(index));
        }
        File.WriteAllText(Path.Combine(dir, "config.json"), Json(ExportConfig(config, src, dtype)));
        foreach (var f in CopiedFiles)
        {
            var from = Path.Combine(src.BaseModelPath, f);
            if (File.Exists(from)) File.Copy(from, Path.Combine(dir, f));
        }
        if (src.ChatTemplate is { } template) WriteChatTemplate(dir, template);
    }

    /// <summary>The training-time chat template replaces the base's: chat_template.jinja (transformers 5.x's file) and
    /// tokenizer_config.json's "chat_template" (older readers).</summary>
    static void WriteChatTemplate(string dir, string template)
    {
        File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), template);
        var path = Path.Combine(dir, "tokenizer_config.json");
        if (!File.Exists(path)) return;
        var config = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
            ?? throw new InvalidDataException($"The base model's tokenizer_config.json is not a JSON object.");
        config["chat_template"] = template;
        File.WriteAllText(path, Json(config));
    }

    /// <summary>transformers' shard file name, e.g. model-00001-of-00003.safetensors.</summary>
    internal static string ShardName(int i, int count) => $"model-{i + 1:D5}-of-{count:D5}.safetensors";

    /// <summary>The tensors of the merged model, sorted by key: every state-dict entry of the base model (adapter tensors left out;
    /// a tied lm_head left out as transformers does), adapted weights merged, a classifier's head cut to its classes.</summary>
    internal static List<PlannedTensor> PlanTensors(ExportSource src, ScalarType dtype, JsonObject config)
    {
        var model = src.Model;
        var adapted = AdapterInjector.LinearLayers(model).ToDictionary(l => l.Name + ".weight", l => l.Layer);
        var adapterKeys = AdapterInjector.LinearLayers(model)
            .Where(l => l.Layer.Adapter is not null)
            .SelectMany(l => l.Layer.Adapter!.state_dict().Keys.Select(k => $"{l.Name}.{l.Layer.Adapter.Method}.{k}"))
            .ToHashSet();
        bool tied = config["tie_word_embeddings"] is JsonValue v && v.TryGetValue<bool>(out var b) && b;
        var list = new List<PlannedTensor>();
        foreach (var (key, t) in model.state_dict())
        {
            if (adapterKeys.Contains(key) || (tied && key == "lm_head.weight")) continue;
            long[] shape = t.shape;
            Func<Tensor> produce;
            if (key == "score.weight" && src.Task == ExportTask.SequenceClassification)   // (the head is an AdaptableLinear too)
            {
                if (adapted.TryGetValue(key, out var h) && h.Adapter is not null)
                    throw new NotSupportedException("The classification head 'score' carries an adapter; export supports a trained head (modules_to_save), not an adapted one.");
                int classes = src.ClassNames!.Count;
                if (classes > shape[0])
                    throw new InvalidOperationException($"The model has {classes} classes but its head 'score.weight' only {shape[0]} rows.");
                shape = [classes, shape[1]];
                produce = () => t.detach()[..classes];                                   // (C, hidden): the classes the model was trained on
            }
            else if (adapted.TryGetValue(key, out var layer))
            {
                shape = [layer.OutFeatures, layer.InFeatures];                           // (a quantized layer's weight is a placeholder)
                produce = () => layer.MergedWeight(dtype);                               // W0 (dequantized when quantized) + ΔW
            }
            else produce = () => t.detach();
            list.Add(new PlannedTensor(key, shape, dtype, produce));
        }
        if (src.Task == ExportTask.SequenceClassification && !list.Any(t => t.Name == "score.weight"))
            throw new InvalidOperationException("The model has no classification head 'score.weight' to export as …ForSequenceClassification.");
        list.Sort((x, y) => string.CompareOrdinal(x.Name, y.Name));
        return list;
    }

    /// <summary>Splits tensors into shards of at most <paramref name="maxShardSize"/> bytes, as huggingface_hub's
    /// <c>split_state_dict_into_shards</c> does: in order, a new shard when the next tensor would overflow the current one,
    /// a tensor larger than the limit in a shard of its own.</summary>
    internal static List<List<PlannedTensor>> PlanShards(IReadOnlyList<PlannedTensor> tensors, long maxShardSize)
    {
        var shards = new List<List<PlannedTensor>>();
        var current = new List<PlannedTensor>();
        long size = 0;
        foreach (var t in tensors)
        {
            if (t.ByteSize > maxShardSize) { shards.Add([t]); continue; }
            if (size + t.ByteSize > maxShardSize && current.Count > 0) { shards.Add(current); current = []; size = 0; }
            current.Add(t);
            size += t.ByteSize;
        }
        if (current.Count > 0 || shards.Count == 0) shards.Add(current);
        return shards;
    }

    /// <summary>The base config.json with the export's dtype and, for a classifier, its head described.</summary>
    internal static JsonObject ExportConfig(JsonObject baseConfig, ExportSource src, ScalarType dtype)
    {
        var c = (JsonObject)baseConfig.DeepClone();
        string name = DTypeName(dtype);
        c["dtype"] = name;                                                  // transformers 5.x
        if (c.ContainsKey("torch_dtype")) c["torch_dtype"] = name;          // a 4.x-style config keeps its own key current
        if (src.Task != ExportTask.SequenceClassification) return c;
        c["architectures"] = new JsonArray(ClassifierArchitecture(c));
        var names = src.ClassNames!;
        if (names.Distinct().Count() != names.Count)
            throw new InvalidOperationException($"The class names are not distinct ({string.Join(", ", names)}); label2id needs one id per name.");
        c["num_labels"] = names.Count;
        c["id2label"] = new JsonObject(names.Select((n, i) => KeyValuePair.Create(i.ToString(System.Globalization.CultureInfo.InvariantCulture), (JsonNode?)n)));
        c["label2id"] = new JsonObject(names.Select((n, i) => KeyValuePair.Create(n, (JsonNode?)i)));
        if (src.PadTokenId is int pad) c["pad_token_id"] = pad;
        return c;
    }

    /// <summary>The …ForSequenceClassification class of the base's architecture (LlamaForCausalLM → LlamaForSequenceClassification).</summary>
    static string ClassifierArchitecture(JsonObject config)
    {
        var arch = (config["architectures"] as JsonArray)?.FirstOrDefault()?.GetValue<string>();
        if (arch is not null && arch.EndsWith("ForSequenceClassification", StringComparison.Ordinal)) return arch;
        if (arch is not null && arch.EndsWith("ForCausalLM", StringComparison.Ordinal)) return arch[..^"ForCausalLM".Length] + "ForSequenceClassification";
        return (string?)config["model_type"] switch
        {
            "llama" => "LlamaForSequenceClassification",
            "qwen2" => "Qwen2ForSequenceClassification",
            "mistral" => "MistralForSequenceClassification",
            var t => throw new InvalidOperationException($"Cannot name the sequence-classification architecture of model_type '{t}' (config.json architectures: {arch ?? "none"})."),
        };
    }

    /// <summary>config.json's name of a dtype.</summary>
    internal static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        _ => throw new ArgumentException($"dtype {t} cannot be exported."),
    };

    static JsonObject ReadConfig(string baseDir)
    {
        var path = Path.Combine(baseDir, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"The base model folder has no config.json: {path}", path);
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path} is not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON (line {e.LineNumber + 1}): {e.Message}", e); }
    }

    /// <summary>JSON as transformers writes it: two-space indent, keys as given, a final newline.</summary>
    internal static string Json(JsonNode node) => node.ToJsonString(JsonOptions) + "\n";

    // Templates and class names stay readable ('<', '>', '&', '\'' and non-ASCII letters unescaped); still valid JSON.
    static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
