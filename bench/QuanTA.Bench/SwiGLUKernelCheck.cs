using System.Diagnostics;
using QuanTA.Core.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// The SwiGLU kernel (<c>swiglu.cu</c>) against libtorch's <c>silu(g) · u</c> on this device, in values and both gradients,
/// then a timing of both; the lead wires it into <c>kernel-check</c>. Cases: fp32, bf16, fp16; odd sizes (1 × 11008,
/// 7 × 4095, 3 × 5 × 33) and a LLaMA-7B MLP activation (2048 × 11008); a strided (transposed) gate input, an input that
/// starts one element into its buffer (so the kernel's unaligned loop runs), and inputs of which only one needs a gradient.
/// Bounds (norm-wise relative error, kernel vs libtorch): fp32 1e-5; bf16 8e-3 and fp16 1e-3, one unit in the last place
/// of the 16-bit result (2⁻⁷ resp. 2⁻¹⁰ relative). The kernel performs libtorch's fp32 operations in libtorch's order and
/// rounds to 16 bits exactly where libtorch stores a 16-bit tensor (silu's output, mul's gradients, silu_backward's result),
/// so the values are expected bit-identical; what may differ is an fp32 rounding or two — NVRTC's <c>expf</c> against the
/// one PyTorch was built with, and the FMA the kernel writes for silu_backward's 1 + g·(1 − sig) where nvcc contracts it —
/// which moves a 16-bit result by at most one ulp, and only where the fp32 value lies next to a rounding boundary. Each
/// row reports the fraction of elements that are bit-identical, and both paths' error against fp64.
/// </summary>
public static class SwiGLUKernelCheck
{
    // fraction of elements with the same value (all these values are finite)
    static double SameFraction(Tensor a, Tensor b)
    {
        using var _ = NewDisposeScope();
        return a.eq(b).to_type(ScalarType.Float64).mean().item<double>();
    }

    // drawn on the CPU (the same on every device); offset > 0: a view that starts that many elements into its buffer
    static Tensor Draw(long[] shape, ScalarType dtype, Device device, ulong seed, double scale = 1, int offset = 0)
    {
        using var g = new Generator(seed);
        long n = shape.Aggregate(1L, (a, b) => a * b);
        return (randn(n + offset, dtype: ScalarType.Float32, generator: g) * scale).to_type(dtype).to(device)[offset..].view(shape);
    }

    // the fp64 truth: silu(g) · u and its gradients without any rounding, on the (already rounded) inputs
    static (Tensor H, Tensor Dg, Tensor Du) Fp64(Tensor g, Tensor u, Tensor dh)
    {
        using var scope = NewDisposeScope();
        var gd = g.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var ud = u.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var h = nn.functional.silu(gd) * ud;
        var grads = autograd.grad([h], [gd, ud], [dh.to_type(ScalarType.Float64)]);
        return (h.detach().MoveToOuterDisposeScope(), grads[0].MoveToOuterDisposeScope(), grads[1].MoveToOuterDisposeScope());
    }

    /// <summary>One JSON-ready row per SwiGLU case; "ok" when values and gradients are within the type's bound.</summary>
    public static IEnumerable<object> Check(Device device)
    {
        var cases = new List<(long[] Shape, ScalarType Type, string Layout, bool GradG, bool GradU)>();
        foreach (var dt in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
            foreach (var shape in new[] { new long[] { 1, 11008 }, [7, 4095], [3, 5, 33], [2048, 11008] })
                cases.Add((shape, dt, "contiguous", true, true));
        cases.Add(([2048, 11008], ScalarType.BFloat16, "strided", true, true));
        cases.Add(([7, 4095], ScalarType.Float32, "strided", true, true));
        cases.Add(([7, 4095], ScalarType.BFloat16, "offset", true, true));
        cases.Add(([3, 5, 33], ScalarType.Float16, "offset", true, true));
        cases.Add(([7, 4095], ScalarType.BFloat16, "contiguous", true, false));
        cases.Add(([7, 4095], ScalarType.BFloat16, "contiguous", false, true));
        int seed = 0;
        foreach (var c in cases)
        {
            using var scope = NewDisposeScope();
            seed += 10;
            int offset = c.Layout == "offset" ? 1 : 0;
            // strided (2-D shapes): the transpose of a (columns, rows) tensor, as a permuted activation would arrive
            var g = c.Layout == "strided"
                ? Draw([c.Shape[1], c.Shape[0]], c.Type, device, (ulong)seed, 3).t()
                : Draw(c.Shape, c.Type, device, (ulong)seed, 3, offset);
            var u = Draw(c.Shape, c.Type, device, (ulong)seed + 1, 1, offset);
            var dh = Draw(g.shape, c.Type, device, (ulong)seed + 2);
            g.requires_grad_(c.GradG);
            u.requires_grad_(c.GradU);
            var wrt = new[] { (c.GradG, g), (c.GradU, u) }.Where(p => p.Item1).Select(p => p.Item2).ToArray();

            var hk = SwiGLUKernel.TryForward(g, u);
            if (hk is null)
            {
                yield return new { check = "swiglu", error = $"kernel not used: {KernelAvailability.Reason}" };
                continue;
            }
            var gk = autograd.grad([hk], wrt, [dh]);
            var hr = SwiGLUKernel.ReferenceForward(g, u);
            var gr = autograd.grad([hr], wrt, [dh]);
            var (ht, dgt, dut) = Fp64(g, u, dh);
            int uAt = c.GradG ? 1 : 0;                                             // where du sits in the gradients of wrt
            var (dgk, duk) = (c.GradG ? gk[0] : null, c.GradU ? gk[uAt] : null);
            var (dgr, dur) = (c.GradG ? gr[0] : null, c.GradU ? gr[uAt] : null);

            double bound = CheckErrors.KernelBound(c.Type);
            double ve = CheckErrors.RelErr(hk, hr);
            double? dge = dgk is null ? null : CheckErrors.RelErr(dgk, dgr!), due = duk is null ? null : CheckErrors.RelErr(duk, dur!);
            bool sameTypes = hk.dtype == hr.dtype && (dgk is null || dgk.dtype == dgr!.dtype) && (duk is null || duk.dtype == dur!.dtype);
            yield return new
            {
                check = "swiglu", shape = string.Join("x", c.Shape), dtype = c.Type.ToString(), layout = c.Layout,
                grad_g = c.GradG, grad_u = c.GradU, bound,
                value_rel_err = ve, dg_rel_err = dge, du_rel_err = due,
                identical = new
                {
                    h = SameFraction(hk, hr),
                    dg = dgk is null ? (double?)null : SameFraction(dgk, dgr!),
                    du = duk is null ? (double?)null : SameFraction(duk, dur!),
                },
                kernel_vs_fp64 = new { h = CheckErrors.RelErr(hk, ht), dg = dgk is null ? (double?)null : CheckErrors.RelErr(dgk, dgt), du = duk is null ? (double?)null : CheckErrors.RelErr(duk, dut) },
                libtorch_vs_fp64 = new { h = CheckErrors.RelErr(hr, ht), dg = dgr is null ? (double?)null : CheckErrors.RelErr(dgr, dgt), du = dur is null ? (double?)null : CheckErrors.RelErr(dur, dut) },
                same_dtypes = sameTypes,
                ok = sameTypes && ve < bound && (dge ?? 0) < bound && (due ?? 0) < bound,
            };
        }
        SwiGLUKernel.Returned.ReleaseAll();
    }

    /// <summary>ms per forward+backward (both inputs need a gradient) and per forward (no graph), kernel and libtorch, bf16,
    /// at the MLP activation shapes of LLaMA-7B (B = 4, T = 512, I = 11008) and TinyLlama (B = 8, T = 512, I = 5632).</summary>
    public static IEnumerable<object> Time(Device device, int reps = 50)
    {
        foreach (var (name, rows, inter) in new[] { ("llama7b", 4L * 512, 11008L), ("tinyllama", 8L * 512, 5632L) })
        {
            using var scope = NewDisposeScope();
            var g = Draw([rows, inter], ScalarType.BFloat16, device, 1, 3).requires_grad_(true);
            var u = Draw([rows, inter], ScalarType.BFloat16, device, 2).requires_grad_(true);
            var dh = Draw([rows, inter], ScalarType.BFloat16, device, 3);
            var sw = new Stopwatch();
            double Ms(Func<Tensor, Tensor, Tensor> f, bool backward)
            {
                for (int i = 0; i < reps + 5; i++)
                {
                    if (i == 5) { cuda.synchronize(); sw.Restart(); }
                    using var s = NewDisposeScope();
                    if (backward) { var h = f(g, u); autograd.grad([h], [g, u], [dh]); }
                    else using (no_grad()) f(g, u);
                }
                cuda.synchronize();
                return sw.Elapsed.TotalMilliseconds / reps;
            }
            Func<Tensor, Tensor, Tensor> kernel = (a, b) => SwiGLUKernel.TryForward(a, b) ?? throw new InvalidOperationException("kernel not used");
            Func<Tensor, Tensor, Tensor> libtorch = SwiGLUKernel.ReferenceForward;
            double kFb = Ms(kernel, true), lFb = Ms(libtorch, true), kF = Ms(kernel, false), lF = Ms(libtorch, false);
            SwiGLUKernel.Returned.ReleaseAll();
            long bytes = rows * inter * 2;                                         // one (B·T, I) bf16 tensor
            yield return new
            {
                timing = "swiglu", shape = name, rows, intermediate = inter, dtype = "BFloat16", reps,
                kernel_fwd_bwd_ms = kFb, libtorch_fwd_bwd_ms = lFb, fwd_bwd_speedup = lFb / kFb,
                kernel_fwd_ms = kF, libtorch_fwd_ms = lF, fwd_speedup = lF / kF,
                // by construction, not measured: the node keeps g and u; libtorch's graph keeps g (silu), silu(g) and u (mul)
                saved_for_backward_mib = new { kernel = 2.0 * bytes / (1 << 20), libtorch = 3.0 * bytes / (1 << 20) },
            };
        }
    }
}
