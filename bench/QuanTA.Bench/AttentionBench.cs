using System.Diagnostics;
using QuanTA.Core.Models.Llama;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// The attention of one decoder layer on a LLaMA shape, forward + backward in bf16: the backbone's checkpointed
/// grouped-query node (keeps q and the unrepeated k/v, runs the attention forward again in the backward) against the
/// plain graph (repeat k/v to every query head, one SDPA call, autograd keeps the repeated k/v and the output).
/// Prints time per call (forward + backward) and the largest output difference.
/// </summary>
static class AttentionBench
{
    public static Dictionary<string, object> Run(string shape, int? batchOverride, int seq, int reps = 50)
    {
        var (config, _, batch) = LlamaShapes.Get(shape);
        batch = batchOverride ?? batch;
        var dev = TrainBench.Dev;
        int nh = config.NumAttentionHeads, nkv = config.NumKeyValueHeads, hd = config.HeadDim, groups = nh / nkv;
        manual_seed(0);
        using var q = randn([batch, nh, seq, hd], dtype: ScalarType.BFloat16, device: dev).requires_grad_(true);
        using var k = randn([batch, nkv, seq, hd], dtype: ScalarType.BFloat16, device: dev).requires_grad_(true);
        using var v = randn([batch, nkv, seq, hd], dtype: ScalarType.BFloat16, device: dev).requires_grad_(true);
        using var g = randn([batch, seq, nh * hd], dtype: ScalarType.BFloat16, device: dev);

        var returned = new QuanTA.Core.Runtime.ReturnedGradients();
        Tensor Grouped() { returned.ReleaseAll(); return CheckpointedGroupedAttention.Apply(q, k, v, groups, returned).transpose(1, 2).reshape(batch, seq, nh * hd); }
        Tensor Repeated() => nn.functional.scaled_dot_product_attention(q, LlamaAttention.RepeatKV(k, groups), LlamaAttention.RepeatKV(v, groups), is_casual: true)
            .transpose(1, 2).reshape(batch, seq, nh * hd);

        double Time(Func<Tensor> f)
        {
            void Once() { using var scope = NewDisposeScope(); f().backward([g]); q.grad!.zero_(); k.grad!.zero_(); v.grad!.zero_(); }
            for (int i = 0; i < 3; i++) Once();
            TrainBench.Sync();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) Once();
            TrainBench.Sync();
            return sw.Elapsed.TotalMilliseconds / reps;
        }
        double diff;
        using (var scope = NewDisposeScope())
        using (var _ = no_grad())
            diff = (Grouped().to_type(ScalarType.Float32) - Repeated().to_type(ScalarType.Float32)).abs().max().item<float>();
        var grouped = Time(Grouped);
        var repeated = Time(Repeated);
        returned.ReleaseAll();
        return new()
        {
            ["shape"] = shape, ["batch"] = batch, ["seq"] = seq, ["heads"] = nh, ["kv_heads"] = nkv,
            ["checkpointed_fwd_bwd_ms"] = Math.Round(grouped, 3), ["plain_fwd_bwd_ms"] = Math.Round(repeated, 3),
            ["max_abs_output_diff"] = diff,
        };
    }
}
