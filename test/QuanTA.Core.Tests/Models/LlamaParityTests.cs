using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Models;

/// <summary>Logits of the .NET backbones against transformers' own outputs on the same checkpoints.</summary>
public class LlamaParityTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void CausalLogitsMatchTransformersOnThePaddedBatch(string name)
    {
        var r = Fixture.Reference(name);
        using var model = CausalLM.FromPretrained(Fixture.Dir(name));
        using var _ = no_grad();
        var ids = r["input_ids"]; var mask = r["attention_mask"]; var expected = r["logits"];   // (3, 12), (3, 12, 1024)

        // 1. Default positions (from the mask): compare the real (non-pad) positions.
        using var logits = model.forward(ids, mask);
        Assert.Equal(expected.shape, logits.shape);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        using var real = mask.to_type(ScalarType.Bool).unsqueeze(-1).expand_as(expected);
        var errReal = Fixture.MaxAbsDiff(logits.masked_select(real), expected.masked_select(real));

        // 2. transformers' plain forward uses positions 0..T-1 for every row: with those, every position matches,
        //    padding positions included (they see the real tokens before them, as in transformers' mask).
        using var pos = arange(ids.shape[1], dtype: ScalarType.Int64).unsqueeze(0).expand(ids.shape[0], -1);
        using var logitsAll = model.forward(ids, mask, pos);
        var errAll = Fixture.MaxAbsDiff(logitsAll, expected);
        // Negative control: RoPE only sees relative positions, so stretch them (×2); that must be visible at this tolerance.
        using var shifted = model.forward(ids, mask, pos * 2);
        var errShifted = Fixture.MaxAbsDiff(shifted, expected);
        using var scale = expected.abs().max();
        output.WriteLine($"{name}: max |Δlogit| real positions {errReal:E2}, all positions {errAll:E2} " +
                         $"(max |logit| {scale.item<float>():F3}; positions×2 would give {errShifted:E2})");
        Assert.True(errShifted > 1e-3, "the check is too weak to see wrong positions");
        Assert.True(errReal < 1e-4, $"max logit error {errReal} on real tokens");
        Assert.True(errAll < 1e-4, $"max logit error {errAll} on all positions");
    }

    [Fact]
    public void SequenceClassificationLogitsMatchTransformers()
    {
        var r = Fixture.Reference("llama-tiny-seqcls");
        using var model = LlamaForSequenceClassification.FromPretrained(Fixture.Dir("llama-tiny-seqcls"));
        Assert.Equal(5, model.NumLabels);
        using var _ = no_grad();
        using var logits = model.forward(r["input_ids"], r["attention_mask"]);                 // (3, 5)
        Assert.Equal(new long[] { 3, 5 }, logits.shape);
        var err = Fixture.MaxAbsDiff(logits, r["logits"]);
        output.WriteLine($"llama-tiny-seqcls: max |Δlogit| {err:E2}");
        Assert.True(err < 1e-4, $"max logit error {err}");
    }

    [Fact]
    public void PaddingSideDoesNotChangeRealTokenLogits()
    {
        // Left-pad row 1 instead of right-padding it: positions come from the mask, so its real tokens are unchanged.
        var r = Fixture.Reference("llama-tiny");
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        using var _ = no_grad();
        var ids = r["input_ids"]; var mask = r["attention_mask"];
        var n = (int)mask[1].sum().item<long>();                                               // 6 real tokens
        using var rowIds = cat([full(12 - n, 1L, dtype: ScalarType.Int64), ids[1, ..n]]).unsqueeze(0);
        using var rowMask = cat([zeros(12 - n, dtype: ScalarType.Int64), ones(n, dtype: ScalarType.Int64)]).unsqueeze(0);
        using var left = model.forward(rowIds, rowMask);
        Assert.False(left.isnan().any().item<bool>());
        var err = Fixture.MaxAbsDiff(left[0, (12 - n)..], r["logits"][1, ..n]);
        Assert.True(err < 1e-4, $"left-padded row differs by {err}");
    }

    [Fact]
    public void EveryProjectionIsAnAdaptableLinearNamedLikeHuggingFace()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var linears = model.named_modules().Where(m => m.module is AdaptableLinear).Select(m => m.name).ToHashSet();
        foreach (var p in new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" })
            for (var l = 0; l < 2; l++) Assert.Contains($"model.layers.{l}.{p}", linears);
        Assert.Contains("lm_head", linears);
        Assert.Equal(2 * 7 + 1, linears.Count);
        Assert.All(model.parameters(), p => Assert.False(p.requires_grad));
    }

    [Fact]
    public void TiedEmbeddingsShareOneWeight()
    {
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("qwen2-tiny"));
        Assert.True(model.Config.TieWordEmbeddings);
        Assert.Same(model.lm_head.weight, model.model.embed_tokens.weight);
        // The shared weight is counted once (as transformers' model.parameters() does):
        // embed 1024·128 + 2 × (q,k,v with bias, o, gate/up/down, 2 norms) + final norm.
        Assert.DoesNotContain("lm_head.weight", model.named_parameters().Select(p => p.name));
        long layer = (128 * 128 + 128) + 2 * (64 * 128 + 64) + 128 * 128 + 3 * 128 * 384 + 2 * 128;
        Assert.Equal(1024 * 128 + 2 * layer + 128, model.parameters().Sum(p => p.numel()));
        Assert.True(model.model.layers[0].self_attn.q_proj.bias is not null);
        Assert.Null(model.model.layers[0].self_attn.o_proj.bias);
    }

    [Theory]
    [InlineData(ScalarType.BFloat16, 0.03)]
    [InlineData(ScalarType.Float16, 0.005)]
    public void HalfPrecisionLoadsAsAskedAndStaysClose(ScalarType dtype, double tol)
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"), dtype);
        Assert.All(model.parameters(), p => Assert.Equal(dtype, p.dtype));
        using var _ = no_grad();
        using var logits = model.forward(r["input_ids"], r["attention_mask"]);                  // padded batch
        Assert.Equal(ScalarType.Float32, logits.dtype);
        using var real = r["attention_mask"].to_type(ScalarType.Bool).unsqueeze(-1).expand_as(r["logits"]);
        var err = Fixture.MaxAbsDiff(logits.masked_select(real), r["logits"].masked_select(real));
        output.WriteLine($"{dtype}: max |Δlogit| {err:E2}");
        Assert.True(err < tol, $"{dtype} logits differ by {err}");
    }
}
