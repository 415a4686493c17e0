using System.Text.Json.Nodes;
using QuanTA.Core.Adapters;
using QuanTA.Core.Export;
using QuanTA.Core.Models;
using TorchSharp.PyBridge;
using static TorchSharp.torch;
using static QuanTA.Core.Tests.Export.ExportFixture;

namespace QuanTA.Core.Tests.Export;

/// <summary>The merged Hugging Face folder: layout and values checked against what transformers itself writes
/// (test/fixtures/export-conventions/hf-save.json, written by transformers 5.17's save_pretrained) and against the adapters' own ΔW.</summary>
public class HfExportTests
{
    static JsonObject Reference(string file) =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(Dir("export-conventions"), file)))!;

    [Fact]
    public void ShardsIndexAndConfigAreWhatSavePretrainedWrites()
    {
        // transformers' reference: llama-tiny saved in bf16 with max_shard_size="1MB" (10⁶ bytes)
        var reference = Reference("hf-save.json");
        Assert.Equal("50GB", (string?)reference["default_max_shard_size"]);
        Assert.Equal(50_000_000_000, ModelExportOptions.TransformersDefaultMaxShardSize);
        using var model = CausalLM.FromPretrained(Dir("llama-tiny"));
        var output = TempDir();
        ModelExporter.Export(new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") }, output,
            new ModelExportOptions { DType = ScalarType.BFloat16, MaxShardSizeBytes = 1_000_000 });
        var expectedFiles = reference["files"]!.AsArray().Select(f => (string)f!)
            .Concat(["merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"]).Order(StringComparer.Ordinal);
        Assert.Equal(expectedFiles, Directory.EnumerateFiles(output).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var index = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(output, "model.safetensors.index.json")))!;
        Assert.True(JsonNode.DeepEquals(reference["index"], index), $"index differs:\n{index}\nvs transformers':\n{reference["index"]}");
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(output, "config.json")));
        Assert.True(JsonNode.DeepEquals(reference["config"], config), $"config.json differs:\n{config}\nvs transformers':\n{reference["config"]}");
        foreach (var shard in Directory.EnumerateFiles(output, "model-*.safetensors"))
            Assert.Equal("pt", SafetensorsHeader(shard)["__metadata__"]?["format"]?.GetValue<string>());
        // the sharded folder loads back: same weights as the base, rounded to bf16
        using var back = CausalLM.FromPretrained(output);
        using var bf = CausalLM.FromPretrained(Dir("llama-tiny"));
        foreach (var (k, t) in back.state_dict())
            Assert.Equal(Bits(bf.state_dict()[k].to_type(ScalarType.BFloat16)), Bits(t.to_type(ScalarType.BFloat16)));
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    public static TheoryData<string> Methods => new() { "quanta", "lora" };

    [Theory]
    [MemberData(nameof(Methods))]
    public void EachBf16WeightIsRoundFp32BasePlusFp32Delta(string method)
    {
        // QuanTA's layout is derived per layer ([6,6,6] for 128-wide q/v, [8,8,8] for down_proj 384→128): padded and cropped
        IAdapterConfig cfg = method == "lora" ? new LoRAConfig { Rank = 4, Alpha = 8, Seed = 2 } : new QuanTAConfig { AxisCount = 3, Seed = 2 };
        using var model = Causal(cfg, "q_proj", "v_proj", "down_proj");
        AdapterInjector.MergeAll(model);                                   // a merged model exports the same (W0 is kept aside)
        var output = TempDir();
        ModelExporter.Export(new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") }, output, new ModelExportOptions());
        var exported = Safetensors.LoadStateDict(Path.Combine(output, "model.safetensors"));
        var w0 = Safetensors.LoadStateDict(Path.Combine(Dir("llama-tiny"), "model.safetensors"));   // the base, read apart from the model
        var layers = AdapterInjector.LinearLayers(model).ToDictionary(l => l.Name + ".weight", l => l.Layer);
        Assert.Equal(w0.Keys.Order(), exported.Keys.Order());
        int adapted = 0, changedByDelta = 0;
        foreach (var (key, t) in exported)
        {
            Assert.Equal(ScalarType.BFloat16, t.dtype);
            var basis = w0[key].to_type(ScalarType.Float32);
            Tensor expected;
            if (layers.TryGetValue(key, out var layer) && layer.Adapter is { } a)
            {
                adapted++;
                using var delta = a.DeltaWeight();                           // fp32, the adapter's own computation
                expected = (basis + delta).to_type(ScalarType.BFloat16);
                if (!Bits(expected).SequenceEqual(Bits(basis.to_type(ScalarType.BFloat16)))) changedByDelta++;
            }
            else expected = basis.to_type(ScalarType.BFloat16);
            Assert.True(Bits(expected).SequenceEqual(Bits(t)), $"'{key}' is not round(fp32(W0) + fp32(ΔW)) bit for bit");
        }
        Assert.Equal(6, adapted);
        Assert.Equal(6, changedByDelta);                                   // ΔW is not lost in the rounding
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void Fp32ExportLoadsBackWithIdenticalLogits(string method)
    {
        IAdapterConfig cfg = method == "lora" ? new LoRAConfig { Rank = 4, Alpha = 8, Seed = 2 } : new QuanTAConfig { Layout = [8, 4, 4], Seed = 2 };
        using var model = Causal(cfg);
        AdapterInjector.MergeAll(model);
        using var expected = Logits(model);
        var output = TempDir();
        ModelExporter.Export(new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") }, output, new ModelExportOptions { DType = ScalarType.Float32 });
        using var back = CausalLM.FromPretrained(output);
        using var got = Logits(back);
        Assert.Equal(Bits(expected), Bits(got));
        using var plain = CausalLM.FromPretrained(Dir("llama-tiny"));
        using var baseLogits = Logits(plain);
        Assert.True((baseLogits - got).abs().max().item<float>() > 1e-3, "the adapter had no effect on the exported model");
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    internal static JsonObject SafetensorsHeader(string file)
    {
        using var s = File.OpenRead(file);
        var len = new byte[8];
        s.ReadExactly(len);
        var header = new byte[BitConverter.ToInt64(len)];
        s.ReadExactly(header);
        return (JsonObject)JsonNode.Parse(header)!;
    }
}
