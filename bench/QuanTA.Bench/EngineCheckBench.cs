using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Bench;

/// <summary>
/// <c>engine-check</c>: the ΔW engine on the device (CUDA when present), fp32, pinned to the adapter's per-pair reference
/// (<see cref="QuanTAAdapter.ReferenceDeltaWeight"/>) in values and gradients, at the real models' layouts and widths, and the
/// QuanTA bank's stacked and layerwise paths against the same reference. One JSON line per case; "ok" compares with the
/// CPU tests' bounds (values 1e-6, gradients 1e-5 relative; 1e-5 / 1e-4 for D ≥ 2048, whose sums are longer).
/// </summary>
public static class EngineCheckBench
{
    static readonly (string Layout, int In, int Out)[] Cases =
    [
        ("6,6,6,6", 768, 768), ("16,8,4,4", 2048, 2048), ("16,8,4,4", 2048, 256), ("16,8,8,4", 4096, 4096), ("3,5,2", 17, 30), ("2,3,2", 10, 9),
    ];

    static void Randomize(nn.Module m, double scale, long seed)
    {
        using var _ = no_grad();
        using var g = new Generator((ulong)seed);                                  // drawn on the CPU: the same values on every device
        foreach (var p in m.parameters()) p.add_(randn(p.shape, dtype: p.dtype, generator: g).to(p.device) * scale);
    }

    sealed class Layers : nn.Module<Tensor, Tensor>
    {
        public readonly AdaptableLinear[] Items;
        public Layers(Device device, params (int In, int Out)[] shapes) : base("Layers")
        {
            Items = shapes.Select(s => new AdaptableLinear(s.In, s.Out, false, device: device)).ToArray();
            for (int i = 0; i < Items.Length; i++) register_module($"l{i}", Items[i]);
            using var _ = no_grad();
            foreach (var l in Items) l.weight.normal_(0, 0.02);
        }
        public override Tensor forward(Tensor x) => throw new NotSupportedException();
    }

    public static IEnumerable<object> Run(Device device)
    {
        foreach (var (spec, inF, outF) in Cases)
            foreach (var rank in new int?[] { null, 4 })
            {
                using var scope = NewDisposeScope();
                var layout = new AxisLayout(spec.Split(',').Select(int.Parse).ToArray());
                using var a = new QuanTAAdapter(inF, outF, layout, rank, generator: new Generator(7));
                a.to(device);
                Randomize(a, 0.3, 11);
                var ps = a.parameters().ToArray();
                var sw = System.Diagnostics.Stopwatch.StartNew();
                var engine = a.DeltaWeight();
                var reference = a.ReferenceDeltaWeight();
                var w = randn(engine.shape, generator: new Generator(5)).to(device);
                var ge = autograd.grad([(engine * w).sum()], ps);
                var gr = autograd.grad([(reference * w).sum()], ps);
                double ve = CheckErrors.RelErr(engine, reference), worst = 0;
                for (int i = 0; i < ps.Length; i++) worst = Math.Max(worst, CheckErrors.RelErr(ge[i], gr[i]));
                bool big = layout.D >= 2048;
                yield return new { check = "delta-weight", layout = spec, @in = inF, @out = outF, rank = rank?.ToString() ?? "full", device = device.ToString(),
                                   value_rel_err = ve, grad_rel_err = worst, ok = ve < (big ? 1e-5 : 1e-6) && worst < (big ? 1e-4 : 1e-5), ms = sw.Elapsed.TotalMilliseconds };
            }
        foreach (var layerwise in new[] { false, true })
        {
            using var scope = NewDisposeScope();
            using var holder = new Layers(device, (2048, 2048), (2048, 256));
            var layers = holder.Items;
            AdapterInjector.Inject(holder, new QuanTAConfig { Layout = [16, 8, 4, 4], Seed = 4 }, TargetModules.All());
            holder.to(device);
            foreach (var l in layers) Randomize(l.Adapter!, 0.3, 12);
            using var bank = QuanTABank.Create(holder, layerwise ? QuanTATrainingPath.Layerwise : QuanTATrainingPath.Stacked);
            bank.Materialize(ScalarType.Float32);
            double worst = 0;
            foreach (var l in layers)
            {
                var a = (QuanTAAdapter)l.Adapter!;
                var reference = a.ReferenceDeltaWeight();
                if (layerwise)
                {
                    var x = randn(8, l.InFeatures, generator: new Generator(8)).to(device);
                    worst = Math.Max(worst, CheckErrors.RelErr(l.forward(x), nn.functional.linear(x, l.weight + reference)));
                }
                else worst = Math.Max(worst, CheckErrors.RelErr(a.StepDelta!, reference));
            }
            bank.Clear();
            yield return new { check = layerwise ? "bank-layerwise" : "bank-stacked", layout = "16,8,4,4", device = device.ToString(), value_rel_err = worst, ok = worst < 1e-5 };
        }
    }
}
