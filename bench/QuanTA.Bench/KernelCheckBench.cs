using System.Diagnostics;
using QuanTA.Core.Kernels;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// <c>kernel-check</c>: the CUDA kernels against the libtorch expressions they replace, on this device, in values and
/// gradients, then a timing of both. RMSNorm: odd sizes (hidden 4096, 4095, 33 × rows 1, 7, 2048), a strided input, a
/// trainable weight, mixed input/weight types. Bounds (norm-wise relative error, kernel vs libtorch):
/// fp32 1e-5 (both accumulate in fp32; only the summation order differs);
/// bf16 8e-3 and fp16 1e-3 — one unit in the last place of the 16-bit result (2⁻⁷ resp. 2⁻¹⁰ relative) bounds each element,
/// as both round the same fp32 value to 16 bits and that value differs only by the summation order (a few fp32 ulps), so
/// elements differ by at most one 16-bit ulp and only where the fp32 value lies next to a rounding boundary. Each row also
/// reports both paths' error against an fp64 evaluation of the same formula, to show the kernel is no less accurate.
/// </summary>
public static class KernelCheckBench
{
    const double Eps = 1e-5;
    static readonly System.Text.Json.JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    static Tensor Draw(long[] shape, ScalarType dtype, Device device, ulong seed, double scale = 1, double shift = 0)
    {
        using var g = new Generator(seed);                                           // drawn on the CPU: the same on every device
        return (randn(shape, dtype: ScalarType.Float32, generator: g) * scale + shift).to_type(dtype).to(device);
    }

    // the fp64 truth: the formula without any rounding, on the (already rounded) inputs
    static (Tensor Y, Tensor Dx, Tensor Dw) Fp64(Tensor x, Tensor w, Tensor dy)
    {
        using var scope = NewDisposeScope();
        var xd = x.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var wd = w.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var y = wd * (xd * rsqrt(xd.pow(2).mean([-1], keepdim: true) + Eps));
        var g = autograd.grad([(y * dy.to_type(ScalarType.Float64)).sum()], [xd, wd]);
        return (y.detach().MoveToOuterDisposeScope(), g[0].MoveToOuterDisposeScope(), g[1].MoveToOuterDisposeScope());
    }

    /// <summary>One JSON-ready row per RMSNorm case; "ok" when values and gradients are within the type's bound.</summary>
    public static IEnumerable<object> Check(Device device)
    {
        var cases = new List<(long Rows, int Hidden, ScalarType X, ScalarType W, bool Strided, bool TrainWeight)>();
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var hidden in new[] { 4096, 4095, 33 })
                foreach (var rows in new long[] { 1, 7, 2048 })
                    cases.Add((rows, hidden, dt, dt, false, rows == 7));
        cases.Add((2048, 4096, ScalarType.Float32, ScalarType.Float32, true, true));
        cases.Add((2048, 4096, ScalarType.BFloat16, ScalarType.BFloat16, true, false));
        cases.Add((7, 4095, ScalarType.Float16, ScalarType.Float16, true, true));
        cases.Add((2048, 4096, ScalarType.BFloat16, ScalarType.Float32, false, true));
        cases.Add((33, 4095, ScalarType.Float32, ScalarType.BFloat16, false, true));
        int seed = 0;
        foreach (var c in cases)
        {
            using var scope = NewDisposeScope();
            seed += 10;
            using var norm = new LlamaRMSNorm(c.Hidden, Eps, c.W, device);
            using (no_grad()) norm.weight.copy_(Draw([c.Hidden], c.W, device, (ulong)seed, 0.1, 1.0));
            norm.weight.requires_grad_(c.TrainWeight);
            // a strided input: the transpose of a (hidden, rows) tensor, as a permuted activation would arrive
            var x = c.Strided ? Draw([c.Hidden, c.Rows], c.X, device, (ulong)seed + 1).t() : Draw([c.Rows, c.Hidden], c.X, device, (ulong)seed + 1);
            x.requires_grad_(true);
            var dy = Draw([c.Rows, c.Hidden], RMSNormKernel.OutputType(c.X, c.W), device, (ulong)seed + 2);
            var wrt = c.TrainWeight ? new[] { x, norm.weight } : [x];

            var yk = RMSNormKernel.TryForward(x, norm.weight, Eps);
            if (yk is null)
            {
                yield return new { check = "rmsnorm", error = $"kernel not used: {KernelAvailability.Reason}" };
                continue;
            }
            var gk = autograd.grad([yk], wrt, [dy]);
            var yr = norm.LibTorchForward(x);
            var gr = autograd.grad([yr], wrt, [dy]);
            var (yt, dxt, dwt) = Fp64(x, norm.weight, dy);

            double bound = Math.Max(CheckErrors.KernelBound(c.X), CheckErrors.KernelBound(c.W));                      // the least precise type rounds last
            double ve = CheckErrors.RelErr(yk, yr), dxe = CheckErrors.RelErr(gk[0], gr[0]), dwe = c.TrainWeight ? CheckErrors.RelErr(gk[1], gr[1]) : 0;
            yield return new
            {
                check = "rmsnorm", rows = c.Rows, hidden = c.Hidden, x_dtype = c.X.ToString(), w_dtype = c.W.ToString(), strided = c.Strided,
                weight_grad = c.TrainWeight, bound,
                value_rel_err = ve, dx_rel_err = dxe, dw_rel_err = c.TrainWeight ? dwe : (double?)null,
                kernel_vs_fp64 = new { y = CheckErrors.RelErr(yk, yt), dx = CheckErrors.RelErr(gk[0], dxt), dw = c.TrainWeight ? CheckErrors.RelErr(gk[1], dwt) : (double?)null },
                libtorch_vs_fp64 = new { y = CheckErrors.RelErr(yr, yt), dx = CheckErrors.RelErr(gr[0], dxt), dw = c.TrainWeight ? CheckErrors.RelErr(gr[1], dwt) : (double?)null },
                same_dtypes = yk.dtype == yr.dtype && gk[0].dtype == gr[0].dtype,
                ok = yk.dtype == yr.dtype && ve < bound && dxe < bound && dwe < bound,
            };
        }
        RMSNormKernel.Returned.ReleaseAll();
    }

    /// <summary>ms per forward+backward (x needs a gradient, frozen weight) and per forward (no graph), kernel and libtorch.</summary>
    public static IEnumerable<object> Time(Device device, int reps = 50)
    {
        foreach (var (name, rows, hidden) in new[] { ("llama7b", 2048L, 4096), ("tinyllama", 4096L, 2048), ("llama7b-b8", 4096L, 4096) })
        {
            using var scope = NewDisposeScope();
            using var norm = new LlamaRMSNorm(hidden, Eps, ScalarType.BFloat16, device);
            var x = Draw([rows, hidden], ScalarType.BFloat16, device, 1).requires_grad_(true);
            var dy = Draw([rows, hidden], ScalarType.BFloat16, device, 2);
            var sw = new Stopwatch();
            double Ms(Func<Tensor, Tensor> f, bool backward)
            {
                for (int i = 0; i < reps + 5; i++)
                {
                    if (i == 5) { cuda.synchronize(); sw.Restart(); }
                    using var s = NewDisposeScope();
                    if (backward) { var y = f(x); autograd.grad([y], [x], [dy]); }
                    else using (no_grad()) f(x);
                }
                cuda.synchronize();
                return sw.Elapsed.TotalMilliseconds / reps;
            }
            Func<Tensor, Tensor> kernel = t => RMSNormKernel.TryForward(t, norm.weight, Eps) ?? throw new InvalidOperationException("kernel not used");
            Func<Tensor, Tensor> libtorch = norm.LibTorchForward;
            double kFb = Ms(kernel, true), lFb = Ms(libtorch, true), kF = Ms(kernel, false), lF = Ms(libtorch, false);
            RMSNormKernel.Returned.ReleaseAll();
            yield return new
            {
                timing = "rmsnorm", shape = name, rows, hidden, dtype = "BFloat16", reps,
                kernel_fwd_bwd_ms = kFb, libtorch_fwd_bwd_ms = lFb, fwd_bwd_speedup = lFb / kFb,
                kernel_fwd_ms = kF, libtorch_fwd_ms = lF, fwd_speedup = lF / kF,
            };
        }
    }

    /// <summary>Every kernel's checks and timings, in the order they run.</summary>
    static readonly (Func<Device, IEnumerable<object>> Check, Func<Device, IEnumerable<object>> Time)[] Kernels =
    [
        (Check, d => Time(d)),
        (DequantizeKernelCheck.Check, d => DequantizeKernelCheck.Time(d)),
        (SwiGLUKernelCheck.Check, d => SwiGLUKernelCheck.Time(d)),
        (RoPEKernelCheck.Check, d => RoPEKernelCheck.Time(d)),
    ];

    /// <summary>The <c>kernel-check</c> verb: first use, the checks, the timings, one JSON line each (also to --out FILE);
    /// exit code 1 when a check failed or the kernel was not used.</summary>
    public static int Run(Device device, string[] args)
    {
        if (device.type != DeviceType.CUDA) { Console.Error.WriteLine("kernel-check needs a CUDA device (set QUANTA_LIBTORCH_DIR to a CUDA libtorch)."); return 2; }
        int i = Array.IndexOf(args, "--out");
        var lines = new List<string>();
        void Emit(object o) { var line = System.Text.Json.JsonSerializer.Serialize(o, Json); lines.Add(line); Console.WriteLine(line); }
        int failed = 0;
        var first = FirstUse(device);
        Emit(first);
        if (!(bool)first.GetType().GetProperty("used")!.GetValue(first)!) failed++;
        else
        {
            foreach (var (check, time) in Kernels)
            {
                foreach (var r in check(device))
                {
                    Emit(r);
                    if (r.GetType().GetProperty("ok")?.GetValue(r) is not true) failed++;
                }
                foreach (var r in time(device)) Emit(r);
            }
        }
        Emit(new { verb = "kernel-check", gpu = Array.IndexOf(args, "--gpu-name") is var gi && gi >= 0 && gi + 1 < args.Length ? args[gi + 1] : "", failed });
        if (i >= 0 && i + 1 < args.Length) QuanTA.Core.Runtime.AtomicFile.WriteAllText(args[i + 1], string.Join("\n", lines) + "\n");
        return failed == 0 ? 0 : 1;
    }

    /// <summary>How long the first use took (binding, NVRTC compile or disk-cache hit, module load), and what was decided.</summary>
    public static object FirstUse(Device device)
    {
        using var scope = NewDisposeScope();
        using var norm = new LlamaRMSNorm(64, Eps, ScalarType.BFloat16, device);
        var x = ones(2, 64, dtype: ScalarType.BFloat16, device: device);
        var sw = Stopwatch.StartNew();
        var y = RMSNormKernel.TryForward(x, norm.weight, Eps);
        cuda.synchronize();
        var module = KernelAvailability.ModuleFor(x, RMSNormKernel.SourceFile);
        return new
        {
            first_use = "rmsnorm", used = y is not null, ms = sw.Elapsed.TotalMilliseconds, decision = KernelAvailability.Reason,
            target = module?.Target, cache = KernelModules.CacheDirectory(),
        };
    }
}
