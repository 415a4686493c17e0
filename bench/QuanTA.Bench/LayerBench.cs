using System.Diagnostics;
using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Bench;

/// <summary>
/// One adapted projection of a LLaMA shape (q_proj: hidden → hidden, and v_proj: hidden → kv width), tokens × hidden input,
/// forward + backward, timed per phase for each fused QuanTA training path in the same process:
/// stacked (ΔW in the graph: the backward forms ∂L/∂ΔW = gᵀx and runs the chain's backward over (out, in)),
/// layerwise (W0 + ΔW built again in the backward); the layerwise path takes ∂L/∂R_B
/// from the tokens or through ∂L/∂ΔW, whichever is cheaper for the layer.
/// bf16 on CUDA, fp32 on the CPU. Isolates the adapter's cost from the rest of the model.
/// </summary>
static class LayerBench
{
    sealed class One : nn.Module<Tensor, Tensor>
    {
        public readonly AdaptableLinear Layer;
        public One(int inF, int outF, ScalarType dtype, Device dev) : base("One")
        { Layer = new AdaptableLinear(inF, outF, false, dtype, dev); register_module("proj", Layer); }
        public override Tensor forward(Tensor x) => Layer.forward(x);
    }

    public static List<Dictionary<string, object>> Run(string shape, int tokens, int reps)
    {
        var (config, layout, _) = LlamaShapes.Get(shape);
        var dev = TrainBench.Dev;
        var dtype = dev.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        int hidden = config.HiddenSize, kv = config.HiddenSize / config.NumAttentionHeads * config.NumKeyValueHeads;
        var results = new List<Dictionary<string, object>>();
        foreach (var (name, outF) in new[] { ("q_proj", hidden), ("v_proj", kv) }.DistinctBy(p => p.Item2))
            foreach (var path in new[] { QuanTATrainingPath.Stacked, QuanTATrainingPath.Layerwise })
            {
                manual_seed(0);
                using var m = new One(hidden, outF, dtype, dev);
                using (no_grad()) m.Layer.weight.normal_(0, 0.02);
                AdapterInjector.Inject(m, new QuanTAConfig { Layout = layout, Seed = 0 }, TargetModules.All());
                using var bank = QuanTABank.Create(m, path);
                var ps = bank.OptimizerParameters(m).Select(p => p.Parameter).ToArray();
                using var x = randn(tokens, hidden, dtype: dtype, device: dev).requires_grad_(true);
                var phase = new double[3];
                for (int s = 0; s < reps + 1; s++)
                {
                    using var scope = NewDisposeScope();
                    TrainBench.Sync(); long t0 = Stopwatch.GetTimestamp();
                    double[] t = new double[3];
                    bank.Materialize(dtype); TrainBench.Sync(); t[0] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds; t0 = Stopwatch.GetTimestamp();
                    var y = m.forward(x); TrainBench.Sync(); t[1] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds; t0 = Stopwatch.GetTimestamp();
                    y.sin().sum().backward(); TrainBench.Sync(); t[2] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                    bank.Clear();
                    foreach (var p in ps) p.grad?.zero_();
                    x.grad?.zero_();
                    if (s > 0) for (int i = 0; i < 3; i++) phase[i] += t[i] / reps;   // the first repetition warms up
                }
                var r = new Dictionary<string, object>
                {
                    ["verb"] = "layer", ["shape"] = shape, ["projection"] = name, ["in"] = hidden, ["out"] = outF, ["tokens"] = tokens,
                    ["dtype"] = dtype.ToString(), ["device"] = dev.type.ToString(), ["training_path"] = QuanTATrainingPaths.Name(path),
                    ["materialize_ms"] = Math.Round(phase[0], 2), ["forward_ms"] = Math.Round(phase[1], 2), ["backward_ms"] = Math.Round(phase[2], 2),
                    ["total_ms"] = Math.Round(phase.Sum(), 2),
                };
                results.Add(r);
            }
        return results;
    }
}
