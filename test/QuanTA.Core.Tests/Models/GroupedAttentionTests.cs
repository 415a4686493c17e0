using QuanTA.Core.Runtime;
using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Models;

/// <summary>The checkpointed grouped-query attention (training path) against the plain repeat-k/v graph.</summary>
public class GroupedAttentionTests
{
    [Theory]
    [InlineData(2, 3)]   // n_kv 2, 3 query heads per kv head
    [InlineData(1, 4)]   // multi-query
    public void CheckpointedAttentionGivesTheSameOutputAndGradients(int nKv, int groups)
    {
        manual_seed(7);
        var (B, T, hd) = (2L, 9L, 8L);
        using var q = randn(B, nKv * groups, T, hd).requires_grad_(true);
        using var k = randn(B, nKv, T, hd).requires_grad_(true);
        using var v = randn(B, nKv, T, hd).requires_grad_(true);
        using var w = randn(B, nKv * groups, T, hd);                         // a loss that weighs every output

        var returned = new ReturnedGradients();
        var (yc, gq, gk, gv) = Run(() => CheckpointedGroupedAttention.Apply(q, k, v, groups, returned));
        returned.ReleaseAll();
        var (yr, rq, rk, rv) = Run(() => nn.functional.scaled_dot_product_attention(q, LlamaAttention.RepeatKV(k, groups), LlamaAttention.RepeatKV(v, groups), is_casual: true));

        Assert.Equal(yr.shape, yc.shape);
        Assert.True(Fixture.MaxAbsDiff(yc, yr) < 1e-6);
        Assert.True(Fixture.MaxAbsDiff(gq, rq) < 1e-6);
        Assert.True(Fixture.MaxAbsDiff(gk, rk) < 1e-6, "k's gradient must be summed over its query group");
        Assert.True(Fixture.MaxAbsDiff(gv, rv) < 1e-6);
        Assert.True(rk.abs().max().item<float>() > 0);

        (Tensor Y, Tensor Gq, Tensor Gk, Tensor Gv) Run(Func<Tensor> attend)
        {
            foreach (var t in new[] { q, k, v }) t.grad?.zero_();
            var y = attend();
            (y * w).sum().backward();
            return (y.detach(), q.grad!.clone(), k.grad!.clone(), v.grad!.clone());
        }
    }

    [Fact]
    public void AGroupedQueryModelTrainsTheSameWithAndWithoutTheCheckpoint()
    {
        // llama-tiny has 4 query / 2 kv heads. Unpadded rows take plain causal attention, the checkpointed path when training.
        var r = Fixture.Reference("llama-tiny");
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        AdapterInjector.Inject(model, new LoRAConfig { Rank = 2, Seed = 1 }, TargetModules.Names("q_proj", "v_proj"));
        foreach (var (_, p) in model.named_parameters()) if (p.requires_grad) using (no_grad()) p.normal_(0, 0.05);
        model.train();
        var ids = r["input_ids"][0..1];
        var attention = ((LlamaForCausalLM)model).model.layers[0].self_attn;
        (float Loss, Tensor[] Grads, int Held) Step(bool checkpoint)
        {
            LlamaAttention.CheckpointGroupedAttention = checkpoint;
            try
            {
                model.zero_grad();
                using var scope = NewDisposeScope();
                var logits = model.forward(ids);
                var loss = QuanTA.Core.Training.Losses.CausalLMUnchecked(logits, ids);
                loss.backward();
                return (loss.item<float>(), model.parameters().Where(p => p.requires_grad).Select(p => p.grad!.clone().DetachFromDisposeScope()).ToArray(),
                        attention.Returned.PendingCount);                     // what the checkpointed nodes handed to libtorch

            }
            finally { LlamaAttention.CheckpointGroupedAttention = true; }
        }
        var plain = Step(false);
        var checkpointed = Step(true);
        Assert.Equal(0, plain.Held);
        Assert.True(checkpointed.Held > 0, "the training step took the checkpointed attention node");
        Assert.Equal(plain.Loss, checkpointed.Loss, 5);
        Assert.Equal(plain.Grads.Length, checkpointed.Grads.Length);
        for (int i = 0; i < plain.Grads.Length; i++)
            Assert.True(Fixture.MaxAbsDiff(checkpointed.Grads[i], plain.Grads[i]) < 1e-6, $"parameter {i}");
        Assert.Contains(plain.Grads, g => g.abs().max().item<float>() > 0);
    }
}
