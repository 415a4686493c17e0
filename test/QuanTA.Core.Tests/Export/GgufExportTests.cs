using System.Text.Json.Nodes;
using QuanTA.Core.Adapters;
using QuanTA.Core.Export;
using QuanTA.Core.Export.Gguf;
using static TorchSharp.torch;
using static QuanTA.Core.Tests.Export.ExportFixture;

namespace QuanTA.Core.Tests.Export;

/// <summary><see cref="ExportFormat.Gguf"/>: a fine-tuned model (adapters with ΔW ≠ 0) → one model.gguf that
/// <c>@huggingface/gguf</c> reads, whose every tensor is the merged fp32 weight W0 + ΔW encoded once (checked byte for byte by
/// <see cref="GgufConverterTests.CheckTensors"/> against the merged fp32 Hugging Face export of the same model).</summary>
public sealed class GgufExportTests
{
    [Theory]
    [InlineData("quanta", "f32")]
    [InlineData("quanta", "q8_0")]
    [InlineData("lora", "bf16")]
    public void A_fine_tuned_model_exports_as_one_gguf_of_its_merged_weights(string method, string type)
    {
        IAdapterConfig cfg = method == "lora" ? new LoRAConfig { Rank = 4, Alpha = 8, Seed = 3 } : new QuanTAConfig { AxisCount = 3, Seed = 3 };
        using var model = Causal(cfg, "q_proj", "k_proj", "v_proj", "down_proj");
        var source = new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") };
        var merged = TempDir();
        var gguf = TempDir();
        try
        {
            ModelExporter.Export(source, merged, new ModelExportOptions { DType = ScalarType.Float32 });
            ModelExporter.Export(source, gguf, new ModelExportOptions { Format = ExportFormat.Gguf, GgufType = ModelExportOptions.ParseGgufType(type) });

            Assert.Equal([ModelExporter.GgufFileName], Directory.EnumerateFileSystemEntries(gguf).Select(Path.GetFileName));  // the fp32 temporary is gone
            var path = Path.Combine(gguf, ModelExporter.GgufFileName);
            var file = OutsideGgufReader.Read(path);
            var meta = (JsonObject)file["metadata"]!;
            Assert.Equal("llama", (string?)meta["general.architecture"]?["value"]);
            Assert.Equal("llama-tiny", (string?)meta["general.name"]?["value"]);
            var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "config.json")))!;
            GgufConverterTests.CheckTensors(merged, path, file, config, "llama", type);

            // and the merged weights are not the base's: ΔW reached the file
            using var exported = LoadState(merged);
            using var w0 = LoadState(Dir("llama-tiny"));
            Assert.False(exported.Get("model.layers.0.self_attn.v_proj.weight").eq(w0.Get("model.layers.0.self_attn.v_proj.weight")).all().item<bool>());
        }
        finally
        {
            foreach (var d in new[] { merged, gguf }) if (Directory.Exists(Path.GetDirectoryName(d)!)) Directory.Delete(Path.GetDirectoryName(d)!, true);
        }
    }

    [Fact]
    public void A_sequence_classifier_is_refused_naming_the_formats_that_hold_it()
    {
        using var model = Classifier(new LoRAConfig { Rank = 2, Seed = 1 });
        var output = TempDir();
        var e = Assert.Throws<NotSupportedException>(() => ModelExporter.Export(
            new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny-seqcls"), Task = ExportTask.SequenceClassification, ClassNames = ["a", "b"] },
            output, new ModelExportOptions { Format = ExportFormat.Gguf }));
        Assert.Contains("hf", e.Message);
        Assert.False(Directory.Exists(output));
    }

    [Theory]
    [InlineData("f16", GgufFileType.F16)]
    [InlineData("BF16", GgufFileType.BF16)]
    [InlineData("q8_0", GgufFileType.Q8_0)]
    [InlineData("f32", GgufFileType.F32)]
    public void Gguf_type_names_parse(string text, GgufFileType expected) => Assert.Equal(expected, ModelExportOptions.ParseGgufType(text));

    [Fact]
    public void An_unknown_gguf_type_names_the_flag_and_the_choices()
    {
        var e = Assert.Throws<ArgumentException>(() => ModelExportOptions.ParseGgufType("q4_k"));
        Assert.Contains("--gguf-type", e.Message);
        Assert.Contains("q8_0", e.Message);
    }

    sealed class StateDict(Dictionary<string, Tensor> d) : IDisposable
    {
        public Tensor Get(string key) => d[key];
        public void Dispose() { foreach (var t in d.Values) t.Dispose(); }
    }

    static StateDict LoadState(string dir) => new(GgufExpectations.LoadWeights(dir));
}
