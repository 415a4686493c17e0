using System.Text.Json.Nodes;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using TorchSharp.PyBridge;

namespace QuanTA.Samples;

/// <summary>
/// Turns a causal-LM checkpoint (LlamaForCausalLM) into a sequence-classification checkpoint
/// (LlamaForSequenceClassification) with a freshly initialised <c>score</c> head of one output per class, as Hugging Face's
/// <c>AutoModelForSequenceClassification.from_pretrained(causal_lm, num_labels=n)</c> does: same backbone weights, lm_head
/// dropped, score ~ N(0, initializer_range²). The result is an ordinary Hugging Face folder that
/// <see cref="QuanTA.MLNet.QuanTAFineTuneOptions.BaseModelPath"/> can point to.
/// </summary>
public static class ClassifierCheckpoint
{
    static readonly string[] TokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"];

    /// <summary>Writes the classifier folder to <paramref name="outputDir"/> (overwritten) and returns it.</summary>
    public static string Create(string causalLmDir, string outputDir, IReadOnlyList<string> classNames, int seed)
    {
        Directory.CreateDirectory(outputDir);
        using (var model = LlamaForSequenceClassification.FromPretrained(causalLmDir, torch.ScalarType.Float32, torch.CPU,
                   numLabels: classNames.Count, initializeMissingHead: true, seed: seed))
        {
            var weights = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().contiguous());
            QuanTA.Core.Runtime.AtomicFile.Write(Path.Combine(outputDir, "model.safetensors"), s => Safetensors.SaveStateDict(s, weights, leaveOpen: true));
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(causalLmDir, "config.json")))!.AsObject();
        config["architectures"] = new JsonArray("LlamaForSequenceClassification");
        config["num_labels"] = classNames.Count;
        config["id2label"] = new JsonObject(classNames.Select((n, i) => KeyValuePair.Create(i.ToString(), (JsonNode?)n)));
        config["label2id"] = new JsonObject(classNames.Select((n, i) => KeyValuePair.Create(n, (JsonNode?)i)));
        config["torch_dtype"] = "float32";
        QuanTA.Core.Runtime.AtomicFile.WriteAllText(Path.Combine(outputDir, "config.json"), config.ToJsonString(new() { WriteIndented = true }));
        foreach (var f in TokenizerFiles)
            if (File.Exists(Path.Combine(causalLmDir, f))) File.Copy(Path.Combine(causalLmDir, f), Path.Combine(outputDir, f), overwrite: true);
        return outputDir;
    }
}
