using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Quantization;
using QuanTA.Core.Tests.Adapters;
using QuanTA.Core.Tests.Models;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Quantization;

/// <summary>
/// The llama-tiny-bnb-nf4 fixture: llama-tiny saved in bitsandbytes' NF4 layout (double quantization) by
/// tools/make_bnb_nf4_fixture.py, which also dequantized two of its weights (reference-dequant.safetensors).
/// </summary>
public class BitsAndBytesCheckpointTests(ITestOutputHelper output)
{
    static BitsAndBytesCheckpointTests() => TestUtil.Init();
    const string Bnb = "llama-tiny-bnb-nf4";

    static Dictionary<string, Tensor> Reference() => Safetensors.LoadStateDict(Path.Combine(Fixture.Dir(Bnb), "reference-dequant.safetensors"));

    [Fact]
    public void TheBitsAndBytesFolderLoadsAsNF4AndDequantizesToTheExpectedWeights()
    {
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir(Bnb));
        Assert.Equal(BaseQuantization.NF4, model.Config.Quantization);
        Assert.Equal("nf4", model.Config.BitsAndBytes!.QuantType);
        Assert.All(QuantizedModelTests.Projections(model), l => Assert.True(((NF4Weight)l.QuantizedWeight!).DoubleQuantized));
        var expected = Reference();
        Assert.Equal(2, expected.Count);
        using var q = model.model.layers[0].self_attn.q_proj.DequantizedWeight();
        using var down = model.model.layers[1].mlp.down_proj.DequantizedWeight();
        Assert.Equal(0f, Fixture.MaxAbsDiff(q, expected["model.layers.0.self_attn.q_proj.weight"]));
        Assert.Equal(0f, Fixture.MaxAbsDiff(down, expected["model.layers.1.mlp.down_proj.weight"]));

        // …and they are the original llama-tiny weights up to NF4's error (absmax × half the widest level gap, 0.152 absmax,
        // plus the double-quantized absmax's small error).
        using var dense = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        using var orig = dense.model.layers[0].self_attn.q_proj.weight.detach();
        var err = Fixture.MaxAbsDiff(q, orig);
        using var absmax = orig.abs().max();
        output.WriteLine($"q_proj: max |W − dequant(W)| {err:E3}, max |W| {absmax.item<float>():E3}");
        Assert.True(err > 0 && err <= 0.16 * absmax.item<float>());
    }

    [Fact]
    public void OurQuantizerWritesTheSameCodesAsTheBitsAndBytesLayout()
    {
        using var dense = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        using var bnb = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir(Bnb));
        long codes = 0, codeDiffs = 0, absmaxDiffs = 0, blocks = 0;
        foreach (var (d, b) in QuantizedModelTests.Projections(dense).Zip(QuantizedModelTests.Projections(bnb)))
        {
            using var ours = NF4Weight.Quantize(d.weight.detach(), ScalarType.Float32, doubleQuant: true);
            var theirs = (NF4Weight)b.QuantizedWeight!;
            Assert.Equal(theirs.Packed.shape, ours.Packed.shape);
            using var diff = ours.Packed.ne(theirs.Packed);
            codeDiffs += diff.sum().item<long>(); codes += diff.numel();
            using var absDiff = ours.Absmax.ne(theirs.Absmax);
            absmaxDiffs += absDiff.sum().item<long>(); blocks += absDiff.numel();
            Assert.Equal(theirs.QuantMap.data<float>().ToArray(), ours.QuantMap.data<float>().ToArray());
            Assert.Equal(theirs.NestedOffset, ours.NestedOffset, 6);
            var mapDiff = Fixture.MaxAbsDiff(ours.NestedQuantMap!, theirs.NestedQuantMap!);
            Assert.True(mapDiff < 1e-7, $"dynamic map differs by {mapDiff}");
        }
        output.WriteLine($"packed bytes differing: {codeDiffs} of {codes}; absmax codes differing: {absmaxDiffs} of {blocks}");
        Assert.True(codeDiffs <= codes / 1000, $"{codeDiffs} of {codes} packed bytes differ");
        Assert.True(absmaxDiffs <= blocks / 100, $"{absmaxDiffs} of {blocks} absmax codes differ");
    }

    [Fact]
    public void TheBitsAndBytesFolderGivesTheSameLogitsDequantizedOrNot()
    {
        var r = Fixture.Reference("llama-tiny");
        using var nf4 = CausalLM.FromPretrained(Fixture.Dir(Bnb));
        using var dense = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir(Bnb), quantization: BaseQuantization.None);
        Assert.Null(dense.model.layers[0].self_attn.q_proj.QuantizedWeight);
        Assert.Equal(0f, Fixture.MaxAbsDiff(dense.model.layers[0].self_attn.q_proj.weight, Reference()["model.layers.0.self_attn.q_proj.weight"]));
        using var _ = no_grad();
        using var a = nf4.forward(r["input_ids"], r["attention_mask"]);
        using var b = dense.forward(r["input_ids"], r["attention_mask"]);
        Assert.True(Fixture.MaxAbsDiff(a, b) < 1e-5);
    }

    [Fact]
    public void AMissingQuantStateTensorIsNamed()
    {
        var dir = Fixture.CopyToTemp(Bnb);
        const string gone = "model.layers.1.mlp.up_proj.weight.quant_state.bitsandbytes__nf4";
        RewriteWeights(dir, sd => { sd[gone].Dispose(); sd.Remove(gone); });
        var e = Assert.Throws<InvalidDataException>(() => CausalLM.FromPretrained(dir).Dispose());
        Assert.Contains($"'{gone}' is missing", e.Message);
    }

    [Fact]
    public void AnFP4QuantStateTensorIsRefusedByName()
    {
        var dir = Fixture.CopyToTemp(Bnb);
        const string nf4 = "model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__nf4";
        RewriteWeights(dir, sd => { var t = sd[nf4]; sd.Remove(nf4); sd[nf4[..^3] + "fp4"] = t; });
        var e = Assert.Throws<NotSupportedException>(() => CausalLM.FromPretrained(dir).Dispose());
        Assert.Contains("model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__fp4", e.Message);
        Assert.Contains("only nf4", e.Message);
    }

    [Theory]
    [InlineData("\"bnb_4bit_quant_type\": \"nf4\"", "\"bnb_4bit_quant_type\": \"fp4\"", "bnb_4bit_quant_type \"fp4\"")]
    [InlineData("\"quant_method\": \"bitsandbytes\"", "\"quant_method\": \"gptq\"", "quant_method \"gptq\"")]
    [InlineData("\"load_in_8bit\": false", "\"load_in_8bit\": true", "load_in_8bit = true")]
    public void AnUnsupportedQuantizationConfigIsNamed(string from, string to, string named)
    {
        var dir = Fixture.CopyToTemp(Bnb);
        var path = Path.Combine(dir, "config.json");
        var text = File.ReadAllText(path);
        Assert.Contains(from, text);
        File.WriteAllText(path, text.Replace(from, to));
        var e = Assert.Throws<NotSupportedException>(() => CausalLM.FromPretrained(dir).Dispose());
        Assert.Contains(named, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    static void RewriteWeights(string dir, Action<Dictionary<string, Tensor>> edit)
    {
        var file = Path.Combine(dir, "model.safetensors");
        var sd = Safetensors.LoadStateDict(file);
        edit(sd);
        Safetensors.SaveStateDict(file, sd);
        foreach (var t in sd.Values) t.Dispose();
    }
}
