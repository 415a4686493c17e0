using System.Text.Json.Nodes;
using QuanTA.Core.Adapters;
using QuanTA.Core.Export;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp.PyBridge;
using static TorchSharp.torch;
using static QuanTA.Core.Tests.Export.ExportFixture;

namespace QuanTA.Core.Tests.Export;

/// <summary>PEFT adapter folders: key names and config fields against what PEFT 0.21 itself writes
/// (test/fixtures/export-conventions/peft-lora-*.json), QuanTA's against the official code's names and shapes
/// (test/fixtures/quanta-layer/reference.json), and the way back through <see cref="AdapterFile.Load"/> (the --adapter path).</summary>
public class PeftExportTests
{
    static JsonObject Reference(string file) =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(Dir("export-conventions"), file)))!;

    static Dictionary<string, long[]> Keys(string folder) =>
        HfExportTests.SafetensorsHeader(Path.Combine(folder, PeftNames.WeightsFile)).Where(kv => kv.Key != "__metadata__")
            .ToDictionary(kv => kv.Key, kv => kv.Value!["shape"]!.AsArray().Select(d => (long)d!).ToArray());

    public static TheoryData<string> Tasks => new() { "causal", "seqcls" };

    [Theory]
    [MemberData(nameof(Tasks))]
    public void LoRAKeysShapesAndConfigAreWhatPeftWrites(string task)
    {
        // PEFT's reference: LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj","v_proj"]) saved by save_pretrained
        var reference = Reference($"peft-lora-{task}.json");
        var cfg = new LoRAConfig { Rank = 4, Alpha = 8, Seed = 1 };
        using nn.Module model = task == "causal" ? Causal(cfg) : Classifier(cfg);
        var output = TempDir();
        var source = new ExportSource
        {
            Model = model, BaseModelPath = Dir(task == "causal" ? "llama-tiny" : "llama-tiny-seqcls"),
            Task = task == "causal" ? ExportTask.CausalLM : ExportTask.SequenceClassification,
            ClassNames = task == "causal" ? null : ["a", "b", "c"], PadTokenId = 1,
        };
        ModelExporter.Export(source, output, new ModelExportOptions { Format = ExportFormat.Peft });
        Assert.Equal(new[] { PeftNames.ConfigFile, PeftNames.WeightsFile }, Directory.EnumerateFiles(output).Select(Path.GetFileName).Order());
        var expectedKeys = reference["keys"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(d => (long)d!).ToArray());
        var keys = Keys(output);
        Assert.Equal(expectedKeys.Keys.Order(), keys.Keys.Order());
        foreach (var (k, shape) in expectedKeys) Assert.Equal(shape, keys[k]);
        Assert.Equal("pt", HfExportTests.SafetensorsHeader(Path.Combine(output, PeftNames.WeightsFile))["__metadata__"]?["format"]?.GetValue<string>());
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, PeftNames.ConfigFile)))!;
        var expected = reference["config"]!.AsObject();
        Assert.Equal(expected.Select(kv => kv.Key).Order(StringComparer.Ordinal), config.Select(kv => kv.Key).Order(StringComparer.Ordinal));
        foreach (var (k, v) in expected)
            if (k != "base_model_name_or_path")                                            // (the reference names the path it ran in)
                Assert.True(JsonNode.DeepEquals(v, config[k]), $"adapter_config.json \"{k}\": {config[k]?.ToJsonString()} but PEFT writes {v?.ToJsonString()}");
        Assert.Equal(Path.GetFullPath(source.BaseModelPath), (string?)config["base_model_name_or_path"]);
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    [Fact]
    public void QuanTATensorsHaveTheOfficialCodesNamesAndShapes()
    {
        // the official layer's tensors for layout [4,4,4,2] on a 128→128 layer (case sq128 of the quanta-layer fixture)
        var official = ((JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(Dir("quanta-layer"), "reference.json")))!)
            .Where(kv => kv.Key.StartsWith("sq128.T[", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key["sq128.T[".Length..^1], kv => kv.Value!.AsArray().Select(d => (long)d!).ToArray());
        Assert.Equal(6, official.Count);
        using var model = Causal(new QuanTAConfig { Layout = [4, 4, 4, 2], Seed = 1 }, "q_proj");
        var output = TempDir();
        ModelExporter.Export(new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") }, output, new ModelExportOptions { Format = ExportFormat.Peft });
        var keys = Keys(output);
        foreach (var layer in new[] { "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj" })
            foreach (var kind in new[] { "quanta_weights", "quanta_weights2" })
            {
                var prefix = $"base_model.model.{layer}.{kind}.";
                var mine = keys.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);
                Assert.Equal(official.Keys.Order(), mine.Keys.Order());
                foreach (var (pair, shape) in official) Assert.Equal(shape, mine[pair]);
            }
        Assert.Equal(2 * 2 * 6, keys.Count);
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, PeftNames.ConfigFile)))!;
        Assert.Equal("QUANTA", (string?)config["peft_type"]);
        Assert.Equal(4, (int)config["d"]!);
        Assert.Equal("[4,4,4,2]", config["per_dim_features"]!.ToJsonString());
        Assert.Equal("[[2,3],[1,3],[0,3],[1,2],[0,2],[0,1]]", config["pairs"]!.ToJsonString());   // the official order
        Assert.Equal(6, (int)config["tensor_count"]!);
        Assert.Null(config["rank"]);
        Assert.Equal("[\"q_proj\"]", config["target_modules"]!.ToJsonString());
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    public static TheoryData<string, string> Cases => new()
    {
        { "lora", "causal" }, { "quanta", "causal" }, { "quanta-rank", "causal" }, { "lora", "seqcls" }, { "quanta", "seqcls" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void APeftFolderLoadsBackThroughAdapterFileWithEqualOutputs(string method, string task)
    {
        IAdapterConfig cfg = method switch
        {
            "lora" => new LoRAConfig { Rank = 4, Alpha = 16, Seed = 1 },
            "quanta" => new QuanTAConfig { AxisCount = 3, Seed = 1 },                         // per-layer derived layouts (o/q 128, k/v 128→64)
            _ => new QuanTAConfig { Layout = [8, 4, 4], Rank = 3, Pairs = [new(0, 1), new(1, 2), new(0, 1)], Seed = 1 },  // low rank, a repeated pair
        };
        string[] targets = ["q_proj", "k_proj", "v_proj"];
        using nn.Module model = task == "causal" ? Causal(cfg, targets) : Classifier(cfg, targets);
        using var expected = Logits(model);
        var output = TempDir();
        ModelExporter.Export(new ExportSource
        {
            Model = model, BaseModelPath = Dir(task == "causal" ? "llama-tiny" : "llama-tiny-seqcls"),
            Task = task == "causal" ? ExportTask.CausalLM : ExportTask.SequenceClassification, ClassNames = task == "causal" ? null : ["x", "y"],
        }, output, new ModelExportOptions { Format = ExportFormat.Peft });
        using nn.Module back = task == "causal" ? CausalLM.FromPretrained(Dir("llama-tiny")) : LlamaForSequenceClassification.FromPretrained(Dir("llama-tiny-seqcls"));
        using (var before = Logits(back)) Assert.True((before - expected).abs().max().item<float>() > 1e-4, "the adapter had no effect");
        var report = AdapterFile.Load(back, output);                                           // what --adapter does
        back.eval();
        Assert.Equal(6, report.Layers.Count);
        using var got = Logits(back);
        Assert.Equal(Bits(expected), Bits(got));
        // merged, the loaded model gives the merged original's outputs bit for bit (the same ΔW)
        AdapterInjector.MergeAll(model); AdapterInjector.MergeAll(back);
        using var e2 = Logits(model);
        using var g2 = Logits(back);
        Assert.Equal(Bits(e2), Bits(g2));
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    [Fact]
    public void AnAdapterForAnotherModelIsRefusedNamingTheTensor()
    {
        using var model = Causal(new LoRAConfig { Rank = 2, Seed = 1 }, "q_proj");
        var output = TempDir();
        ModelExporter.Export(new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") }, output, new ModelExportOptions { Format = ExportFormat.Peft });
        // a LoRA tensor for a layer the model does not have
        var path = Path.Combine(output, PeftNames.WeightsFile);
        var sd = Safetensors.LoadStateDict(path);
        sd["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = zeros(2, 128);
        sd["base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight"] = zeros(128, 2);
        Safetensors.SaveStateDict(path, sd);
        using var fresh = CausalLM.FromPretrained(Dir("llama-tiny"));
        var e = Assert.Throws<InvalidDataException>(() => AdapterFile.Load(fresh, output));
        Assert.Contains("model.layers.7.self_attn.q_proj", e.Message);
        Assert.DoesNotContain(AdapterInjector.LinearLayers(fresh), l => l.Layer.Adapter is not null);   // nothing attached
        // DoRA is not computed here: refused by name
        var cfgPath = Path.Combine(output, PeftNames.ConfigFile);
        File.WriteAllText(cfgPath, File.ReadAllText(cfgPath).Replace("\"use_dora\": false", "\"use_dora\": true"));
        var d = Assert.Throws<NotSupportedException>(() => AdapterFile.Load(fresh, output));
        Assert.Contains("use_dora", d.Message);
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }
}
