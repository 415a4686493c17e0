using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Models;

/// <summary>Grouped-query attention without repeated k/v (the training path) against the repeat-k/v formulation.</summary>
public class GroupedAttentionTests
{
    [Theory]
    [InlineData(2, 3)]   // n_kv 2, 3 query heads per kv head
    [InlineData(1, 4)]   // multi-query
    public void OutputAndGradientsEqualRepeatedKV(int nKv, int groups)
    {
        manual_seed(7);
        var (B, T, hd) = (2L, 9L, 8L);
        using var q = randn(B, nKv * groups, T, hd).requires_grad_(true);
        using var k = randn(B, nKv, T, hd).requires_grad_(true);
        using var v = randn(B, nKv, T, hd).requires_grad_(true);
        using var w = randn(B, T, nKv * groups * hd);                        // a loss that weighs every output

        using var grouped = LlamaAttention.GroupedCausalAttention(q, k, v, groups);
        var (gq, gk, gv) = Grads(grouped);
        using var repeated = nn.functional.scaled_dot_product_attention(q, LlamaAttention.RepeatKV(k, groups), LlamaAttention.RepeatKV(v, groups), is_casual: true)
            .transpose(1, 2).reshape(B, T, nKv * groups * hd);
        var (rq, rk, rv) = Grads(repeated);

        Assert.Equal(repeated.shape, grouped.shape);
        Assert.True(Fixture.MaxAbsDiff(grouped, repeated) < 1e-5);
        Assert.True(Fixture.MaxAbsDiff(gq, rq) < 1e-5);
        Assert.True(Fixture.MaxAbsDiff(gk, rk) < 1e-5, "k's gradient must be summed over its query group");
        Assert.True(Fixture.MaxAbsDiff(gv, rv) < 1e-5);
        // Negative control: the head order matters (query head h·G + g reads kv head h).
        if (nKv > 1)
        {
            using var swapped = LlamaAttention.GroupedCausalAttention(q.detach().roll(1, 1), k.detach(), v.detach(), groups).roll(-(int)hd, 2);
            Assert.True(Fixture.MaxAbsDiff(swapped, repeated.detach()) > 1e-2);
        }

        (Tensor, Tensor, Tensor) Grads(Tensor y)
        {
            foreach (var t in new[] { q, k, v }) t.grad?.zero_();
            (y * w).sum().backward();
            return (q.grad!.clone(), k.grad!.clone(), v.grad!.clone());
        }
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void UnpaddedRowsMatchTransformersThroughTheGroupedPath(string name)
    {
        // Rows without padding run plain causal attention (no mask): the grouped path, against transformers' logits.
        var r = Fixture.Reference(name);
        using var model = CausalLM.FromPretrained(Fixture.Dir(name));
        using var _ = no_grad();
        var mask = r["attention_mask"];
        int checkedRows = 0;
        for (int row = 0; row < mask.shape[0]; row++)
        {
            if (!mask[row].eq(1).all().item<bool>()) continue;
            using var logits = model.forward(r["input_ids"][row..(row + 1)]);
            Assert.True(Fixture.MaxAbsDiff(logits, r["logits"][row..(row + 1)]) < 1e-4);
            checkedRows++;
        }
        Assert.True(checkedRows > 0, "the fixture has no unpadded row");
    }
}
