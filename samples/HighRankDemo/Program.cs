// HighRankDemo — the QuanTA paper's claim on a toy problem: with the same number of trainable parameters,
// LoRA cannot fit an update that needs high rank, QuanTA can; on a low-rank update LoRA is fine.
//
// Each run fits a dense target update ΔW* (D×D, D = 64) by training an adapter with Adam on random inputs:
//   loss = mean over a batch x ~ N(0, I) of ‖Δ(x) − x ΔW*ᵀ‖² / D,   relative error = ‖ΔW − ΔW*‖_F / ‖ΔW*‖_F.
// Targets (all full rank except the control):
//   Kronecker A⊗B⊗C of three random Gaussian 4×4 matrices (skewed spectrum), normalized to ‖ΔW*‖_F = √D;
//   Kronecker A⊗B⊗C of three random orthogonal 4×4 matrices (flat spectrum: every σ = 1);
//   QuanTA-structured teacher: the ΔW = crop(M_T − M_S) of a QuanTA adapter with the student's own frozen S and
//     T = S + noise — high rank and reachable by QuanTA by construction;
//   low-rank control: G H with G (D×4), H (4×D) Gaussian (rank 4), normalized.
// Budget: QuanTA [4,4,4] = 3 tensors of 16×16 = 768 parameters; LoRA r = 6 on 64×64 = 6·(64+64) = 768 parameters.
// Note: QuanTA's update is M_T − M_S with S a random frozen init, so what it can reach is M_S + (chain manifold),
// not every full-rank matrix; the table shows where that helps and where it does not.
//
// Usage: dotnet run --project samples/HighRankDemo -c Release [-- --steps 800 --out artifacts/highrank-spectra.png]
using QuanTA.Core.Adapters;
using ScottPlot;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

int steps = 800;
string outPng = Path.Combine("artifacts", "highrank-spectra.png");
for (int i = 0; i < args.Length - 1; i++)
{
    if (args[i] == "--steps") steps = int.Parse(args[i + 1]);
    if (args[i] == "--out") outPng = args[i + 1];
}

TorchRuntime.Initialize();
torch.set_num_threads(1);   // tiny matrices: one thread is fastest
const int D = 64;
int[] layout = [4, 4, 4];
int loraRank = new AxisLayout(layout).ParameterCount() is var qp && qp % (2 * D) == 0 ? (int)(qp / (2 * D)) : throw new InvalidOperationException("budgets differ");

using var gen = new Generator(2024);
var quanta = new QuanTAConfig { Layout = layout, Seed = 1 };
var targets = new (string Name, Tensor W)[]
{
    ("Kronecker A⊗B⊗C, Gaussian", Normalize(Kron(Kron(randn(4, 4, generator: gen), randn(4, 4, generator: gen)), randn(4, 4, generator: gen)))),
    ("Kronecker A⊗B⊗C, orthogonal", Normalize(Kron(Kron(Orth(gen), Orth(gen)), Orth(gen)))),
    ("QuanTA-structured teacher", Teacher(quanta, D, gen)),
    ("low-rank control (rank 4)", Normalize(randn(D, 4, generator: gen).matmul(randn(4, D, generator: gen)))),
};

var rows = new List<(string Target, string Method, long Params, double RelErr, long Rank, double[] Spectrum)>();
var sw = System.Diagnostics.Stopwatch.StartNew();
foreach (var (name, target) in targets)
{
    rows.Add((name, "target", 0, 0, MatrixRank.Of(target), MatrixRank.SingularValues(target)));
    foreach (var adapter in new Adapter[]
             {
                 quanta.Create(D, D),
                 new LoRAConfig { Rank = loraRank, Alpha = loraRank, Seed = 1 }.Create(D, D),
             })
    {
        double err = Fit(adapter, target, steps);
        using var dw = adapter.DeltaWeight().detach();
        rows.Add((name, adapter.Method == "quanta" ? $"QuanTA {string.Join("x", layout)}" : $"LoRA r={loraRank}",
                  adapter.TrainableParameterCount, err, MatrixRank.Of(dw), MatrixRank.SingularValues(dw)));
        adapter.Dispose();
    }
}

Console.WriteLine($"Fitting a dense {D}x{D} update with Adam on random inputs ({steps} steps, batch 128), equal parameter budgets:");
Console.WriteLine();
Console.WriteLine($"| {"target",-30} | {"method",-14} | {"params",6} | {"final rel. error",16} | {"rank of ΔW",10} |");
Console.WriteLine($"|{new string('-', 32)}|{new string('-', 16)}|{new string('-', 8)}|{new string('-', 18)}|{new string('-', 12)}|");
foreach (var r in rows)
    Console.WriteLine($"| {r.Target,-30} | {r.Method,-14} | {(r.Method == "target" ? "-" : r.Params.ToString()),6} | {(r.Method == "target" ? "-" : r.RelErr < 1e-3 ? r.RelErr.ToString("0.0e+0") : r.RelErr.ToString("F4")),16} | {r.Rank,10} |");
Console.WriteLine();
Console.WriteLine($"(rank: singular values above σ_max·{D}·ε_fp32; wall time {sw.Elapsed.TotalSeconds:F1} s)");

// Singular-value spectra (log scale, σ_i / σ_1 of the target, floored at 1e-8): one panel per target.
var multiplot = new ScottPlot.Multiplot();
multiplot.AddPlots(targets.Length);
multiplot.Layout = new ScottPlot.MultiplotLayouts.Grid(2, 2);
var colors = new Dictionary<string, ScottPlot.Color> { ["target"] = ScottPlot.Colors.Black, ["QuanTA"] = ScottPlot.Colors.Blue, ["LoRA"] = ScottPlot.Colors.OrangeRed };
for (int t = 0; t < targets.Length; t++)
{
    var plot = multiplot.GetPlot(t);
    var panel = rows.Where(r => r.Target == targets[t].Name).ToList();
    double top = panel[0].Spectrum[0];
    foreach (var r in panel)
    {
        var ys = r.Spectrum.Select(v => Math.Log10(Math.Max(v / top, 1e-8))).ToArray();
        var xs = Enumerable.Range(1, ys.Length).Select(i => (double)i).ToArray();
        var sc = plot.Add.Scatter(xs, ys);
        sc.Color = colors[r.Method.Split(' ')[0]];
        sc.MarkerSize = 3;
        sc.LineWidth = r.Method == "target" ? 3 : 1.5f;
        sc.LegendText = r.Method == "target" ? "target" : $"{r.Method} (err {r.RelErr:F3})";
    }
    plot.Title(targets[t].Name);
    plot.XLabel("index i");
    plot.YLabel("log10 σ_i / σ_1(target)");
    plot.Axes.SetLimitsY(-8.5, 1);
    plot.ShowLegend(ScottPlot.Alignment.LowerLeft);
}
QuanTA.Core.Runtime.AtomicFile.WriteViaPath(outPng, tmp => multiplot.SavePng(tmp, 1400, 1000));   // temp file + rename
Console.WriteLine($"wrote {Path.GetFullPath(outPng)}");

// ---------------------------------------------------------------------------------------------------------------
static double Fit(Adapter adapter, Tensor target, int steps)
{
    var opt = optim.Adam(adapter.parameters(), lr: 1e-2);
    var sched = optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min: 1e-4);
    using var g = new Generator(7);
    for (int step = 0; step < steps; step++)
    {
        using var scope = NewDisposeScope();
        var x = randn(128, target.shape[1], generator: g);                    // (B, D) random inputs
        var y = x.matmul(target.t());                                          // (B, D) target outputs x ΔW*ᵀ
        var loss = (adapter.Delta(x) - y).square().sum(1).mean() / target.shape[0];
        opt.zero_grad();
        loss.backward();
        opt.step();
        sched.step();
    }
    using var _ = no_grad();
    using var s = NewDisposeScope();
    return ((adapter.DeltaWeight() - target).norm() / target.norm()).item<float>();
}

static Tensor Kron(Tensor a, Tensor b) => torch.kron(a, b);

// A random 4×4 orthogonal matrix (Q of a Gaussian's QR).
static Tensor Orth(Generator g) => linalg.qr(randn(4, 4, generator: g)).Q;

// ΔW of a QuanTA adapter with the same frozen S as the student (same seed) and T = S + a random perturbation:
// full rank and reachable by construction.
static Tensor Teacher(QuanTAConfig cfg, int d, Generator g)
{
    using var teacher = cfg.Create(d, d);
    using (no_grad())
        foreach (var p in teacher.parameters()) p.add_(randn(p.shape, generator: g).mul_(0.5 / Math.Sqrt(p.shape[0] * p.shape[1])));
    using (no_grad()) return teacher.DeltaWeight().detach().clone();
}

static Tensor Normalize(Tensor w) => w.div(w.norm()).mul(Math.Sqrt(w.shape[0]));   // ‖ΔW*‖_F = √D
