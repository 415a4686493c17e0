using System.Diagnostics;
using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>∂L/∂R_B of one adapted layer by the two routes, timed alone (tokengrad verb).</summary>
static class TokenGradBench
{
    public static List<Dictionary<string, object>> Run(string shape, int tokens, int reps)
    {
        var (config, layout, _) = LlamaShapes.Get(shape);
        var dev = TrainBench.Dev;
        var dtype = dev.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        int d = config.HiddenSize, kv = d / config.NumAttentionHeads * config.NumKeyValueHeads;
        var res = new List<Dictionary<string, object>>();
        foreach (var outF in new[] { d, kv }.Distinct())
        {
            using var scope = NewDisposeScope();
            var lay = new AxisLayout(layout);
            var plan = QuanTAChainBlocks.MakePlan(lay, 1024, d, outF);
            manual_seed(0);
            var ops = plan.BlockSizes.Select(k => randn(k, k, dtype: dtype, device: dev).div(Math.Sqrt(k))).ToArray();
            var x = randn(tokens, d, dtype: dtype, device: dev); var g = randn(tokens, outF, dtype: dtype, device: dev);
            var minusS = zeros(plan.Basis, lay.D, dtype: dtype, device: dev);
            var step = new QuanTALayerwiseStep(plan, ops, minusS, null, new QuanTA.Core.Runtime.ReturnedGradients());
            double Time(Action a) { a(); TrainBench.Sync(); var sw = Stopwatch.StartNew(); for (int i = 0; i < reps; i++) { using var s = NewDisposeScope(); a(); } TrainBench.Sync(); return sw.Elapsed.TotalMilliseconds / reps; }
            double tok = Time(() => { using var _ = no_grad(); QuanTAChainBlocks.TokenGradients(plan, ops, x, g); });
            double viaDelta = Time(() =>
            {
                var leaves = ops.Select(o => o.detach().requires_grad_(true)).ToArray();
                var delta = step.Delta(leaves);                                           // the layerwise node's ΔW, with a graph
                Tensor gd; using (no_grad()) gd = g.t().mm(x);
                autograd.grad([delta], leaves, [gd]);
            });
            res.Add(new() { ["verb"] = "tokengrad", ["shape"] = shape, ["in"] = d, ["out"] = outF, ["tokens"] = tokens, ["dtype"] = dtype.ToString(),
                ["token_route_ms"] = Math.Round(tok, 2), ["delta_route_ms"] = Math.Round(viaDelta, 2), ["model_prefers_tokens"] = QuanTAChainBlocks.TokenGradientsCheaper(plan, tokens, rebuildsDelta: true) });
        }
        return res;
    }
}
