using System.Diagnostics;
using QuanTA.Core.Kernels;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// The RoPE kernel (<c>rope.cu</c>) against the libtorch expression it replaces
/// (<see cref="LlamaRotaryEmbedding.LibTorchApply"/>), on this device, in values and ∂L/∂x, then a timing of both. Cases: fp32,
/// bf16 and fp16; LLaMA-7B and TinyLlama head shapes; odd sizes (T 33, 5 heads, hd 2 and 12); the attention's transposed
/// view of the projection (the usual, non-contiguous input), a contiguous input, a q slice of a fused q/k/v projection, an
/// input strided in the head dimension, and cos/sin broadcast from one row.
/// Bounds (norm-wise relative error, kernel vs libtorch): fp32 1e-5, bf16 8e-3, fp16 1e-3 — the bounds of KernelCheckBench,
/// one 16-bit ulp (2⁻⁷ resp. 2⁻¹⁰ relative) per element. The kernel is expected to match libtorch bit for bit: both
/// compute every product and the sum in fp32 from the same 16-bit inputs and round to T after each op (no FMA contraction
/// in the kernel, no reduction anywhere), so each row also reports whether values and gradients are identical; the
/// bound only keeps a difference in the sign of a zero, or an unforeseen libtorch vectorization, from reading as a fault.
/// </summary>
public static class RoPEKernelCheck
{
    static bool Identical(Tensor a, Tensor b)
    {
        using var _ = NewDisposeScope();
        return a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>();
    }

    static Tensor Draw(long[] shape, ScalarType dtype, Device device, ulong seed)
    {
        using var g = new Generator(seed);                                           // drawn on the CPU: the same on every device
        return randn(shape, dtype: ScalarType.Float32, generator: g).to_type(dtype).to(device);
    }

    /// <summary>cos/sin (rows, T, hd) in <paramref name="dtype"/> as LlamaModel builds them, for positions offset per row.</summary>
    static (Tensor Cos, Tensor Sin) CosSin(long rows, long t, int hd, ScalarType dtype, Device device)
    {
        var rope = new LlamaRotaryEmbedding(hd, new RopeParameters());
        var positions = arange(t, dtype: ScalarType.Int64, device: device).unsqueeze(0).expand(rows, t)
                        + 7 * arange(rows, dtype: ScalarType.Int64, device: device).unsqueeze(1);      // (rows, T)
        return rope.Forward(positions, dtype);
    }

    /// <summary>A leaf the gradient is taken against and the map from it to x (B, H, T, hd) in the given layout.</summary>
    static (Tensor Leaf, Func<Tensor, Tensor> ToX) Input(string layout, long b, long h, long t, int hd, ScalarType dtype, Device device, ulong seed)
        => layout switch
        {
            // q_proj(x).view(B, T, H, hd).transpose(1, 2), as the attention passes it
            "transposed" => (Draw([b, t, h * hd], dtype, device, seed), l => l.view(b, t, h, hd).transpose(1, 2)),
            "contiguous" => (Draw([b, h, t, hd], dtype, device, seed), l => l),
            // q of a fused (B, T, 3·H·hd) q/k/v projection
            "fused-qkv-slice" => (Draw([b, t, 3 * h * hd], dtype, device, seed), l => l.narrow(-1, 0, h * hd).view(b, t, h, hd).transpose(1, 2)),
            // stride ≠ 1 in hd: the kernel copies it first
            "hd-strided" => (Draw([b, h, hd, t], dtype, device, seed), l => l.transpose(2, 3)),
            _ => throw new ArgumentException($"unknown layout {layout}"),
        };

    // the fp64 truth: the expression without any rounding, on the (already rounded) inputs; the gradient is ∂L/∂leaf
    static (Tensor Y, Tensor DLeaf) Fp64(Tensor leaf, Func<Tensor, Tensor> toX, Tensor cos, Tensor sin, Tensor dy)
    {
        using var scope = NewDisposeScope();
        var ld = leaf.detach().to_type(ScalarType.Float64).requires_grad_(true);
        var y = RoPEKernel.ReferenceForward(toX(ld), cos.to_type(ScalarType.Float64), sin.to_type(ScalarType.Float64));
        var g = autograd.grad([y], [ld], [dy.to_type(ScalarType.Float64)]);
        return (y.detach().MoveToOuterDisposeScope(), g[0].MoveToOuterDisposeScope());
    }

    /// <summary>One JSON-ready row per RoPE case; "ok" when the kernel ran and values and ∂L/∂x are within the type's bound.</summary>
    public static IEnumerable<object> Check(Device device)
    {
        var cases = new List<(string Layout, long B, long H, long T, int Hd, ScalarType D, long CosRows)>();
        foreach (var d in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
        {
            cases.Add(("transposed", 4, 32, 512, 128, d, 4));                        // LLaMA-7B q/k
            cases.Add(("transposed", 8, 4, 512, 64, d, 8));                          // TinyLlama k (GQA 32/4)
            cases.Add(("transposed", 3, 5, 33, 12, d, 3));                           // odd sizes
            cases.Add(("contiguous", 3, 5, 33, 12, d, 1));                           // cos/sin broadcast from one row
        }
        cases.Add(("transposed", 1, 1, 1, 2, ScalarType.BFloat16, 1));               // the smallest: one pair
        cases.Add(("fused-qkv-slice", 2, 7, 65, 64, ScalarType.BFloat16, 2));
        cases.Add(("fused-qkv-slice", 2, 7, 65, 64, ScalarType.Float32, 1));
        cases.Add(("hd-strided", 2, 3, 17, 16, ScalarType.BFloat16, 2));
        cases.Add(("hd-strided", 2, 3, 17, 16, ScalarType.Float32, 2));
        ulong seed = 0;
        foreach (var c in cases)
        {
            using var scope = NewDisposeScope();
            seed += 10;
            var (leaf, toX) = Input(c.Layout, c.B, c.H, c.T, c.Hd, c.D, device, seed);
            leaf.requires_grad_(true);
            var x = toX(leaf);
            var (cos, sin) = CosSin(c.CosRows, c.T, c.Hd, c.D, device);
            var dy = Draw([c.B, c.H, c.T, c.Hd], c.D, device, seed + 1);

            var yk = RoPEKernel.TryApply(x, cos, sin);
            if (yk is null)
            {
                yield return new { check = "rope", ok = false, error = $"kernel not used: {KernelAvailability.Reason}" };
                continue;
            }
            var gk = autograd.grad([yk], [leaf], [dy])[0];
            var yr = LlamaRotaryEmbedding.LibTorchApply(x, cos, sin);
            var gr = autograd.grad([yr], [leaf], [dy])[0];
            var (yt, dxt) = Fp64(leaf, toX, cos, sin, dy);

            double bound = CheckErrors.KernelBound(c.D);
            double ve = CheckErrors.RelErr(yk, yr), dxe = CheckErrors.RelErr(gk, gr);
            yield return new
            {
                check = "rope", layout = c.Layout, batch = c.B, heads = c.H, seq = c.T, head_dim = c.Hd, dtype = c.D.ToString(), cos_rows = c.CosRows,
                bound, value_rel_err = ve, dx_rel_err = dxe,
                values_identical = Identical(yk, yr), grads_identical = Identical(gk, gr),
                kernel_vs_fp64 = new { y = CheckErrors.RelErr(yk, yt), dx = CheckErrors.RelErr(gk, dxt) },
                libtorch_vs_fp64 = new { y = CheckErrors.RelErr(yr, yt), dx = CheckErrors.RelErr(gr, dxt) },
                same_strides = yk.stride().SequenceEqual(yr.stride()),
                ok = yk.dtype == yr.dtype && gk.dtype == gr.dtype && ve < bound && dxe < bound,
            };
        }
        RoPEKernel.Returned.ReleaseAll();
    }

    /// <summary>
    /// ms per forward+backward of one attention layer's RoPE (q and k, from (B, T, H·hd) projections viewed as (B, H, T, hd),
    /// both needing a gradient, bf16), kernel and libtorch, at LLaMA-7B (B 4, T 512, 32/32 heads, hd 128) and TinyLlama
    /// (B 8, T 512, 32/4 heads, hd 64) shapes, and per forward alone (no graph).
    /// </summary>
    public static IEnumerable<object> Time(Device device, int reps = 50)
    {
        foreach (var (name, b, t, nh, nkv, hd) in new[] { ("llama7b", 4L, 512L, 32L, 32L, 128), ("tinyllama", 8L, 512L, 32L, 4L, 64) })
        {
            using var scope = NewDisposeScope();
            var qLeaf = Draw([b, t, nh * hd], ScalarType.BFloat16, device, 1).requires_grad_(true);
            var kLeaf = Draw([b, t, nkv * hd], ScalarType.BFloat16, device, 2).requires_grad_(true);
            var q = qLeaf.view(b, t, nh, hd).transpose(1, 2);                        // (B, nh, T, hd)
            var k = kLeaf.view(b, t, nkv, hd).transpose(1, 2);                       // (B, nkv, T, hd)
            var dq = Draw([b, nh, t, hd], ScalarType.BFloat16, device, 3);
            var dk = Draw([b, nkv, t, hd], ScalarType.BFloat16, device, 4);
            var (cos, sin) = CosSin(b, t, hd, ScalarType.BFloat16, device);
            var sw = new Stopwatch();
            double Ms(Func<Tensor, Tensor> rope, bool backward)
            {
                for (int i = 0; i < reps + 5; i++)
                {
                    if (i == 5) { cuda.synchronize(); sw.Restart(); }
                    using var s = NewDisposeScope();
                    if (backward) { var (yq, yk) = (rope(q), rope(k)); autograd.grad([yq, yk], [qLeaf, kLeaf], [dq, dk]); }
                    else using (no_grad()) { rope(q); rope(k); }
                }
                cuda.synchronize();
                return sw.Elapsed.TotalMilliseconds / reps;
            }
            Func<Tensor, Tensor> kernel = x => RoPEKernel.TryApply(x, cos, sin) ?? throw new InvalidOperationException($"kernel not used: {KernelAvailability.Reason}");
            Func<Tensor, Tensor> libtorch = x => LlamaRotaryEmbedding.LibTorchApply(x, cos, sin);
            double kFb = Ms(kernel, true), lFb = Ms(libtorch, true), kF = Ms(kernel, false), lF = Ms(libtorch, false);
            RoPEKernel.Returned.ReleaseAll();
            yield return new
            {
                timing = "rope", shape = name, batch = b, seq = t, heads = nh, kv_heads = nkv, head_dim = hd, dtype = "BFloat16", reps,
                kernel_fwd_bwd_ms = kFb, libtorch_fwd_bwd_ms = lFb, fwd_bwd_speedup = lFb / kFb,
                kernel_fwd_ms = kF, libtorch_fwd_ms = lF, fwd_speedup = lF / kF,
            };
        }
    }
}
