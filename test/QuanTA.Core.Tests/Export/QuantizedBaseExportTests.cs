using QuanTA.Core.Adapters;
using QuanTA.Core.Export;
using QuanTA.Core.Models;
using QuanTA.Core.Quantization;
using TorchSharp.PyBridge;
using static TorchSharp.torch;
using static QuanTA.Core.Tests.Export.ExportFixture;

namespace QuanTA.Core.Tests.Export;

/// <summary>A model fine-tuned on a quantized base (NF4, Int8) exports merged weights from the dequantized W0: each linear weight
/// of the hf folder is round(dequantize(W0) + ΔW), with its real shape, and the folder loads back with the quantized model's logits
/// (fp32, up to the summation order of the unmerged adapter path).</summary>
public class QuantizedBaseExportTests
{
    [Theory]
    [InlineData(BaseQuantization.NF4)]
    [InlineData(BaseQuantization.Int8)]
    public void MergedWeightsComeFromTheDequantizedBase(BaseQuantization quantization)
    {
        using var model = CausalLM.FromPretrained(Dir("llama-tiny"), quantization: quantization);
        AdapterInjector.Inject(model, new QuanTAConfig { AxisCount = 3, Seed = 5 }, TargetModules.Names(["q_proj", "v_proj"]));
        using (no_grad())
        {
            var gen = new Generator(13);
            foreach (var p in model.parameters().Where(p => p.requires_grad)) p.add_(randn(p.shape, generator: gen) * 0.05);
        }
        model.eval();
        var output = TempDir();
        try
        {
            ModelExporter.Export(new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") }, output, new ModelExportOptions { DType = ScalarType.Float32 });
            var exported = Safetensors.LoadStateDict(Path.Combine(output, "model.safetensors"));
            int quantized = 0, adapted = 0;
            foreach (var (name, layer) in AdapterInjector.LinearLayers(model))
            {
                if (layer.QuantizedWeight is null) continue;
                quantized++;
                var got = exported[name + ".weight"];
                Assert.Equal(new long[] { layer.OutFeatures, layer.InFeatures }, got.shape);
                using var w0 = layer.DequantizedWeight();
                var expected = layer.Adapter is { } a ? w0 + a.DeltaWeight() : w0;
                if (layer.Adapter is not null) adapted++;
                Assert.True(got.eq(expected).all().item<bool>(), $"{name}: not dequantize(W0) + ΔW bit for bit");
            }
            Assert.True(quantized >= 7, $"only {quantized} quantized layers");
            Assert.Equal(4, adapted);                                        // q and v of the fixture's 2 layers

            using var back = CausalLM.FromPretrained(output);
            var (ids, mask) = Batch();
            using var _ = no_grad();
            var want = model.forward(ids, mask);
            var have = back.forward(ids, mask);
            var diff = (want - have).abs().max().item<float>();
            Assert.True(diff < 1e-4f, $"reloaded merged export differs from the quantized model by {diff}");
        }
        finally { if (Directory.Exists(Path.GetDirectoryName(output)!)) Directory.Delete(Path.GetDirectoryName(output)!, true); }
    }
}
