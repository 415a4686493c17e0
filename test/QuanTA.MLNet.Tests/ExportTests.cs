using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Adapters;
using QuanTA.Core.Export;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.MLNet.Tests;

/// <summary>Four fine-tuned models (QuanTA and LoRA × generation and head classification), a few optimizer steps each so
/// that every adapter is trained away from zero, shared by <see cref="ExportTests"/>.</summary>
public sealed class ExportFixture : IDisposable
{
    public readonly MLContext Ml = new(seed: 5);
    public readonly Dictionary<string, QuanTAFineTuneTransformer> Models = [];
    public readonly Dictionary<string, ITransformer> Pipelines = [];

    public ExportFixture()
    {
        foreach (var adapter in new[] { AdapterMethod.QuanTA, AdapterMethod.LoRA })
        {
            var gen = Ml.Transforms.QuanTAFineTune(Options(adapter, QuanTATask.TextGeneration, "llama-tiny"))
                .Fit(ToyData.View(Ml, ToyData.Generation(16)));
            Models[$"{adapter}-generation"] = gen;
            Pipelines[$"{adapter}-generation"] = gen;
            var train = ToyData.View(Ml, ToyData.Classification(24, seed: 1));
            var cls = Ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(Ml.MulticlassClassification.Trainers.QuanTAFineTune(Options(adapter, QuanTATask.TextClassification, "llama-tiny-seqcls")))
                .Fit(train);
            Models[$"{adapter}-classification"] = ((IEnumerable<ITransformer>)cls).OfType<QuanTAFineTuneTransformer>().Single();
            Pipelines[$"{adapter}-classification"] = cls;
        }
    }

    internal static QuanTAFineTuneOptions Options(AdapterMethod adapter, QuanTATask task, string baseModel) => new()
    {
        Task = task, BaseModelPath = ToyData.Fixture(baseModel), Adapter = adapter,
        AxisLayout = [8, 4, 4], LoRARank = 4, LoRAAlpha = 8, TargetModules = ["q_proj", "v_proj"],
        Epochs = 1, BatchSize = 8, LearningRate = 1e-2, MaxSequenceLength = 32, MaxNewTokens = 4,
    };

    public void Dispose() { foreach (var m in Models.Values) m.Dispose(); }
}

public class ExportTests(ExportFixture f) : IClassFixture<ExportFixture>
{
    public static TheoryData<string> Cases => new() { "QuanTA-generation", "LoRA-generation", "QuanTA-classification", "LoRA-classification" };

    static readonly string[] Texts = ["the apple is on the small table", "music from the garden window"];

    static string TempDir() => Path.Combine(Path.GetTempPath(), $"quanta-mlnet-export-{Guid.NewGuid():N}", "out");

    /// <summary>Logits of a batch of two right-padded rows: (2, T, V) for a causal LM, (2, labels) for a classifier.</summary>
    static Tensor Logits(QuanTAFineTuneTransformer q, nn.Module model)
    {
        var ids = Texts.Select(t => q.Model.Tokenizer.Encode(t, addSpecialTokens: true)).ToArray();
        int len = ids.Max(r => r.Length);
        var flat = ids.SelectMany(r => r.Concat(Enumerable.Repeat(q.Model.Tokenizer.PadId, len - r.Length))).Select(i => (long)i).ToArray();
        var mask = ids.SelectMany(r => Enumerable.Repeat(1L, r.Length).Concat(Enumerable.Repeat(0L, len - r.Length))).ToArray();
        using var input = tensor(flat, [2, len]);
        using var m = tensor(mask, [2, len]);
        using var _ = no_grad();
        return model switch
        {
            CausalLM lm => lm.forward(input, m),
            LlamaForSequenceClassification c => c.forward(input, m),
            _ => throw new ArgumentException(model.GetType().Name),
        };
    }

    static byte[] Bits(Tensor t) => t.cpu().contiguous().bytes.ToArray();

    static float[][] Probabilities(QuanTAFineTuneTransformer q) =>
        q.Model.ClassProbabilities(Texts.Select(t => q.Model.EncodeClassification(t, null)).ToList());

    [Theory]
    [MemberData(nameof(Cases))]
    public void HfFolderReloadsWithTheModelsLogitsAndItsLabels(string name)
    {
        var q = f.Models[name];
        bool classifier = name.EndsWith("classification", StringComparison.Ordinal);
        using var expected = Logits(q, q.Model.Module);                                    // the transformer's own (merged) model
        var output = TempDir();
        q.Export(output, new ModelExportOptions { DType = ScalarType.Float32 });
        using nn.Module back = classifier ? LlamaForSequenceClassification.FromPretrained(output) : CausalLM.FromPretrained(output);
        using var got = Logits(q, back);
        if (classifier)
        {
            Assert.Equal(3, q.ClassNames.Count);
            using var used = expected[.., ..3].contiguous();                                // the base head has 5 outputs, the model uses 3
            Assert.Equal(Bits(used), Bits(got));
            var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")))!;
            Assert.Equal("[\"LlamaForSequenceClassification\"]", config["architectures"]!.ToJsonString());
            Assert.Equal(3, (int)config["num_labels"]!);
            Assert.Equal(q.ClassNames, Enumerable.Range(0, 3).Select(i => (string)config["id2label"]![i.ToString()]!));
            Assert.Equal(Enumerable.Range(0, 3), q.ClassNames.Select(n => (int)config["label2id"]![n]!));
            Assert.Equal(q.Model.Tokenizer.PadId, (int)config["pad_token_id"]!);
            Assert.Equal("float32", (string?)config["dtype"]);
        }
        else Assert.Equal(Bits(expected), Bits(got));
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    /// <summary>Fits <paramref name="name"/>'s configuration again, starting from <paramref name="folder"/>.</summary>
    QuanTAFineTuneTransformer FitFrom(string name, string folder, Action<QuanTAFineTuneOptions>? change = null, double learningRate = 1e-12)
    {
        bool classifier = name.EndsWith("classification", StringComparison.Ordinal);
        var adapter = name.StartsWith("LoRA", StringComparison.Ordinal) ? AdapterMethod.LoRA : AdapterMethod.QuanTA;
        var o = ExportFixture.Options(adapter, classifier ? QuanTATask.TextClassification : QuanTATask.TextGeneration, classifier ? "llama-tiny-seqcls" : "llama-tiny");
        o.InitialAdapterPath = folder;
        o.LearningRate = learningRate;                                                      // one step that moves nothing measurable
        change?.Invoke(o);
        if (!classifier) return f.Ml.Transforms.QuanTAFineTune(o).Fit(ToyData.View(f.Ml, ToyData.Generation(8)));
        var cls = f.Ml.Transforms.Conversion.MapValueToKey("Label").Append(f.Ml.MulticlassClassification.Trainers.QuanTAFineTune(o))
            .Fit(ToyData.View(f.Ml, ToyData.Classification(24, seed: 1)));
        return ((IEnumerable<ITransformer>)cls).OfType<QuanTAFineTuneTransformer>().Single();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void AFitStartsFromAnExportedPeftFolder(string name)
    {
        var q = f.Models[name];
        using var expected = Logits(q, q.Model.Module);
        var output = TempDir();
        q.Export(output, new ModelExportOptions { Format = ExportFormat.Peft });
        try
        {
            using var resumed = FitFrom(name, output);
            using var got = Logits(resumed, resumed.Model.Module);
            double diff = (got - expected).abs().max().item<float>();
            Assert.True(diff < 1e-4, $"{name}: the fit did not start from the folder's adapter (max |Δlogit| {diff})");
            using var fresh = FitFrom(name, output, o => o.InitialAdapterPath = null);       // control: a fresh adapter differs
            using var freshLogits = Logits(fresh, fresh.Model.Module);
            Assert.True((freshLogits - expected).abs().max().item<float>() > 1e-3, "a fresh adapter gave the trained model's logits");
        }
        finally { Directory.Delete(Path.GetDirectoryName(output)!, true); }
    }

    [Theory]
    [InlineData("LoRA-classification", "LoRARank", "--lora-rank")]
    [InlineData("LoRA-classification", "LoRAAlpha", "--lora-alpha")]
    [InlineData("QuanTA-classification", "AxisLayout", "--axis-layout")]
    [InlineData("QuanTA-classification", "TargetModules", "--target-modules")]
    [InlineData("QuanTA-classification", "Adapter", "--adapter")]
    public void AFolderThatIsAnotherAdapterIsRefusedNamingTheFlag(string name, string option, string flag)
    {
        var output = TempDir();
        f.Models[name].Export(output, new ModelExportOptions { Format = ExportFormat.Peft });
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => FitFrom(name, output, o =>
            {
                switch (option)
                {
                    case "LoRARank": o.LoRARank = 2; break;
                    case "LoRAAlpha": o.LoRAAlpha = 16; break;
                    case "AxisLayout": o.AxisLayout = [4, 8, 4]; break;
                    case "TargetModules": o.TargetModules = ["q_proj"]; break;
                    case "Adapter": o.Adapter = AdapterMethod.LoRA; break;
                }
            }, learningRate: 1e-3));
            Assert.StartsWith("InitialAdapterPath (CLI --init-adapter):", e.Message);
            Assert.Contains(flag, e.Message);
            Assert.Contains(output, e.Message);
        }
        finally { Directory.Delete(Path.GetDirectoryName(output)!, true); }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void PeftFolderLoadsBackThroughAdapterWithTheModelsLogits(string name)
    {
        var q = f.Models[name];
        bool classifier = name.EndsWith("classification", StringComparison.Ordinal);
        using var expected = Logits(q, q.Model.Module);
        var output = TempDir();
        q.Export(output, new ModelExportOptions { Format = ExportFormat.Peft });
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, PeftNames.ConfigFile)))!;
        Assert.Equal(name.StartsWith("LoRA", StringComparison.Ordinal) ? "LORA" : "QUANTA", (string?)config["peft_type"]);
        Assert.Equal(classifier ? "SEQ_CLS" : "CAUSAL_LM", (string?)config["task_type"]);
        Assert.Equal("[\"q_proj\",\"v_proj\"]", config["target_modules"]!.ToJsonString());
        var baseDir = q.Options.BaseModelPath;
        using nn.Module back = classifier ? LlamaForSequenceClassification.FromPretrained(baseDir) : CausalLM.FromPretrained(baseDir);
        using (var plain = Logits(q, back)) Assert.True((plain - expected).abs().max().item<float>() > 1e-4, "training left the model unchanged");
        AdapterFile.Load(back, output);                                                     // what --adapter does
        back.eval();
        AdapterInjector.MergeAll(back);                                                     // as the transformer runs
        using var got = Logits(q, back);
        Assert.Equal(Bits(expected), Bits(got));
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ExportingLeavesTheModelsPredictionsAndStateUnchanged(string name)
    {
        var q = f.Models[name];
        bool classifier = name.EndsWith("classification", StringComparison.Ordinal);
        var stateBefore = q.Model.Module.state_dict().ToDictionary(kv => kv.Key, kv => Bits(kv.Value));
        bool merged = q.IsMerged;
        var data = classifier ? ToyData.View(f.Ml, ToyData.Classification(6, seed: 3)) : ToyData.View(f.Ml, ToyData.Generation(4));
        string column = classifier ? "Score" : "GeneratedText";
        string Predictions() => classifier
            ? string.Join(";", f.Pipelines[name].Transform(data).GetColumn<float[]>(column).Select(s => string.Join(",", s.Select(x => BitConverter.SingleToInt32Bits(x)))))
            : string.Join(";", f.Pipelines[name].Transform(data).GetColumn<string>(column));
        var before = Predictions();
        var dir = TempDir();
        q.Export(dir, new ModelExportOptions());                                            // bf16 hf
        q.Export(dir + "-peft", new ModelExportOptions { Format = ExportFormat.Peft });
        q.SetMerged(false);
        q.Export(dir, new ModelExportOptions { Overwrite = true });                         // unmerged too
        q.SetMerged(merged);
        Assert.Equal(before, Predictions());
        Assert.Equal(merged, q.IsMerged);
        foreach (var (k, t) in q.Model.Module.state_dict()) Assert.True(stateBefore[k].SequenceEqual(Bits(t)), $"'{k}' changed");
        Directory.Delete(Path.GetDirectoryName(dir)!, true);
    }
    [Fact]
    public void AChatModelsTrainingTemplateTravelsWithTheHfFolder()
    {
        var ml = new MLContext(seed: 1);
        var jsonl = Path.Combine(Path.GetTempPath(), $"quanta-export-chat-{Guid.NewGuid():N}.jsonl");
        File.WriteAllLines(jsonl, Chat.ChatFixture.Conversations(8).Select(c => System.Text.Json.JsonSerializer.Serialize(new
        {
            messages = c.Select(t => new { role = t.Role, content = t.Content }),
        })));
        var options = Chat.ChatFixture.Options();
        options.Epochs = 1;
        using var model = ml.Transforms.QuanTAFineTune(options).Fit(ml.Data.LoadFromChatJsonl(jsonl));
        var output = TempDir();
        model.Export(output);
        Assert.Equal(Chat.ChatFixture.Template, File.ReadAllText(Path.Combine(output, "chat_template.jinja")));
        Assert.Equal(Chat.ChatFixture.Template, (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "tokenizer_config.json")))!["chat_template"]);
        var turns = Chat.ChatFixture.Conversations(1)[0];
        Assert.Equal(model.Model.Chat.Template.Render(turns, addGenerationPrompt: true),
            Core.Chat.ChatTemplate.FromModelFolder(output).Render(turns, addGenerationPrompt: true));   // the folder's own template, read back
        File.Delete(jsonl);
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }
}
