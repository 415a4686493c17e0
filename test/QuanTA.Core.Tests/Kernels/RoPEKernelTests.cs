using QuanTA.Core.Kernels;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Kernels;

/// <summary>
/// The RoPE kernel's CPU-side guarantees: on CPU the libtorch path runs and is exactly transformers' apply_rotary_pos_emb,
/// the roundings the kernel places (rope.cu's per-half formulas) reproduce that expression and its autograd bit for bit,
/// and the hand-derived backward (<see cref="RoPEKernel.ReferenceBackward"/>) equals autograd. The kernel itself is
/// checked on the GPU by <c>quanta-bench kernel-check</c> and its once-per-device self-check.
/// </summary>
public class RoPEKernelTests
{
    public RoPEKernelTests() => TorchRuntime.Initialize();

    const int B = 2, T = 5, H = 3, HeadDim = 12;

    // transformers' rotate_half / apply_rotary_pos_emb (unsqueeze_dim=1), written out here independently of the module
    static Tensor HuggingFaceExpression(Tensor x, Tensor cos, Tensor sin)
    {
        var x1 = x.narrow(-1, 0, x.shape[^1] / 2);
        var x2 = x.narrow(-1, x.shape[^1] / 2, x.shape[^1] / 2);
        return x * cos.unsqueeze(1) + cat([-x2, x1], -1) * sin.unsqueeze(1);
    }

    // q as the attention passes it: the (B, T, H, hd) projection output viewed as (B, H, T, hd), not contiguous
    static (Tensor Leaf, Tensor X) TransposedInput(ScalarType dtype, ulong seed, int heads = H, int headDim = HeadDim)
    {
        var leaf = randn(B, T, heads, headDim, dtype: ScalarType.Float64, generator: new Generator(seed)).to_type(dtype).requires_grad_(true);
        return (leaf, leaf.transpose(1, 2));
    }

    // cos/sin as LlamaModel builds them: real rope angles for positions (B, T), in x's type
    static (Tensor Cos, Tensor Sin) CosSin(ScalarType dtype, long rows = B, int headDim = HeadDim, long offset = 0)
    {
        var rope = new LlamaRotaryEmbedding(headDim, new RopeParameters());
        var positions = (arange(T, dtype: ScalarType.Int64) + offset).unsqueeze(0).expand(rows, T) + 3 * arange(rows, dtype: ScalarType.Int64).unsqueeze(1);
        return rope.Forward(positions, dtype);
    }

    static byte[] Bits(Tensor t) => t.contiguous().bytes.ToArray();

    static double RelErr(Tensor a, Tensor b)
    {
        using var _ = NewDisposeScope();
        var d = (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).norm().item<double>();
        return d / b.to_type(ScalarType.Float64).norm().item<double>();
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    public void OnCpuTheLibTorchPathRunsAndEqualsTheExpressionBitForBit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (leaf, x) = TransposedInput(dtype, 1);
        Assert.False(x.is_contiguous());
        var (cos, sin) = CosSin(dtype);
        var dy = randn(B, H, T, HeadDim, generator: new Generator(2)).to_type(dtype);

        Assert.False(KernelAvailability.EnabledFor(DeviceType.CPU));
        Assert.True(RoPEKernel.Covers(x, cos, sin));                                 // a case the kernel takes on a GPU …
        Assert.Null(RoPEKernel.TryApply(x, cos, sin));                               // … but on CPU: never the kernel

        var y = LlamaRotaryEmbedding.Apply(x, cos, sin);
        var g = autograd.grad([(y * dy).sum()], [leaf])[0];
        var yr = HuggingFaceExpression(x, cos, sin);
        var gr = autograd.grad([(yr * dy).sum()], [leaf])[0];

        Assert.Equal(dtype, y.dtype);
        Assert.Equal(x.shape, y.shape);
        Assert.Equal(Bits(yr), Bits(y));                                             // bit for bit
        Assert.Equal(Bits(gr), Bits(g));
        Assert.Equal(Bits(yr), Bits(RoPEKernel.ReferenceForward(x, cos, sin)));      // the GPU self-check's reference
    }

    // rope.cu's arithmetic written out: fp32 products and sums of the widened values, rounded to T exactly where the kernel rounds
    static Tensor R(Tensor v, ScalarType t) => v.to_type(t).to_type(ScalarType.Float32);

    static (Tensor Y, Tensor Dx) KernelFormula(Tensor x, Tensor cos, Tensor sin, Tensor dy)
    {
        var t = x.dtype;
        int half = (int)(x.shape[^1] / 2);
        Tensor F(Tensor v) => v.to_type(ScalarType.Float32);
        Tensor Lo(Tensor v) => F(v).narrow(-1, 0, half);
        Tensor Hi(Tensor v) => F(v).narrow(-1, half, half);
        var (c, s) = (cos.unsqueeze(1), sin.unsqueeze(1));
        // forward  y1 = R(R(x1·c1) + R(−x2·s1)),  y2 = R(R(x2·c2) + R(x1·s2))
        var y = cat([R(R(Lo(x) * Lo(c), t) + R(-Hi(x) * Lo(s), t), t), R(R(Hi(x) * Hi(c), t) + R(Lo(x) * Hi(s), t), t)], -1).to_type(t);
        // backward dx1 = R(R(dy1·c1) + R(dy2·s2)),  dx2 = R(R(dy2·c2) − R(dy1·s1))
        var dx = cat([R(R(Lo(dy) * Lo(c), t) + R(Hi(dy) * Hi(s), t), t), R(R(Hi(dy) * Hi(c), t) - R(Lo(dy) * Lo(s), t), t)], -1).to_type(t);
        return (y, dx);
    }

    [Theory]
    [InlineData(ScalarType.Float32, 64)]
    [InlineData(ScalarType.BFloat16, 128)]
    [InlineData(ScalarType.BFloat16, 12)]
    [InlineData(ScalarType.Float16, 64)]
    public void TheKernelsRoundingsReproduceTheLibTorchExpressionAndItsAutogradBitForBit(ScalarType dtype, int headDim)
    {
        using var scope = NewDisposeScope();
        var (leaf, x) = TransposedInput(dtype, 3, heads: 4, headDim: headDim);
        var (cos, sin) = CosSin(dtype, headDim: headDim, offset: 1000);              // large angles: all bits of cos/sin in use
        var dy = randn(B, 4, T, headDim, generator: new Generator(4)).to_type(dtype);

        var y = LlamaRotaryEmbedding.LibTorchApply(x, cos, sin);
        var dx = autograd.grad([y], [leaf], [dy])[0].transpose(1, 2);               // ∂L/∂x as (B, H, T, hd)
        var (yk, dxk) = KernelFormula(x.detach(), cos, sin, dy);

        Assert.Equal(Bits(y), Bits(yk));
        Assert.Equal(Bits(dx), Bits(dxk));
        Assert.Equal(Bits(dx), Bits(RoPEKernel.ReferenceBackward(dy, cos, sin)));  // the formula in T's own ops: exact too
    }

    [Theory]
    [InlineData(2L, false)]
    [InlineData(1L, false)]                                                          // cos/sin broadcast from one row
    [InlineData(2L, true)]                                                           // a transposed (strided) input
    public void HandDerivedBackwardEqualsAutogradInFp64(long cosRows, bool transposed)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(5);
        var leaf = (transposed ? randn(B, T, H, HeadDim, dtype: ScalarType.Float64, generator: gen)
                               : randn(B, H, T, HeadDim, dtype: ScalarType.Float64, generator: gen)).requires_grad_(true);
        var x = transposed ? leaf.transpose(1, 2) : leaf;
        var angle = randn(cosRows, T, HeadDim, dtype: ScalarType.Float64, generator: gen) * 3;   // any cos/sin, not only rope's
        var (cos, sin) = (angle.cos(), angle.sin());
        var dy = randn(B, H, T, HeadDim, dtype: ScalarType.Float64, generator: gen);

        var y = HuggingFaceExpression(x, cos, sin);
        var g = autograd.grad([y], [leaf], [dy])[0];
        var dx = RoPEKernel.ReferenceBackward(dy, cos, sin);
        if (transposed) dx = dx.transpose(1, 2);

        Assert.True(RelErr(dx, g) < 1e-12, $"∂L/∂x rel err {RelErr(dx, g):E2}");
    }

    [Fact]
    public void CoversExactlyWhatTheKernelImplements()
    {
        using var scope = NewDisposeScope();
        var (_, x) = TransposedInput(ScalarType.BFloat16, 6);
        var (cos, sin) = CosSin(ScalarType.BFloat16);
        var (cos1, sin1) = CosSin(ScalarType.BFloat16, rows: 1);
        Assert.True(RoPEKernel.Covers(x, cos, sin));
        Assert.True(RoPEKernel.Covers(x, cos1, sin1));                               // one row broadcast over the batch
        Assert.True(RoPEKernel.Covers(x.contiguous(), cos, sin));
        Assert.False(RoPEKernel.Covers(x, cos.to_type(ScalarType.Float32), sin.to_type(ScalarType.Float32)));   // promotion: libtorch
        Assert.False(RoPEKernel.Covers(x.to_type(ScalarType.Float64), cos.to_type(ScalarType.Float64), sin.to_type(ScalarType.Float64)));
        Assert.False(RoPEKernel.Covers(x.narrow(-1, 0, 11), cos.narrow(-1, 0, 11), sin.narrow(-1, 0, 11)));     // odd head size
        Assert.False(RoPEKernel.Covers(x, cos[.., ..4], sin[.., ..4]));             // T mismatch
        Assert.False(RoPEKernel.Covers(x, cos.unsqueeze(1), sin.unsqueeze(1)));     // 4-D cos: libtorch broadcasts it
        Assert.False(RoPEKernel.Covers(x, cos.detach().clone().requires_grad_(true), sin));   // cos/sin never get a gradient here
    }

    [Fact]
    public void OutputsTakeTheInputsMemoryOrder()
    {
        using var scope = NewDisposeScope();
        var (_, x) = TransposedInput(ScalarType.Float32, 7);                         // (B, H, T, hd) over (B, T, H, hd) memory
        Assert.Equal(new[] { 0, 2, 1 }, RoPEKernel.MemoryOrder(x));
        Assert.Equal(new[] { 0, 1, 2 }, RoPEKernel.MemoryOrder(x.contiguous()));
        // what libtorch's expression returns for the same input: the layout the kernel reproduces for SDPA
        var (cos, sin) = CosSin(ScalarType.Float32);
        Assert.Equal(new[] { 0, 2, 1 }, RoPEKernel.MemoryOrder(LlamaRotaryEmbedding.LibTorchApply(x, cos, sin)));
    }

    [Theory]
    [InlineData(2L)]
    [InlineData(1L)]
    public void TheLaunchWalksTheTransposedViewInMemoryOrderWithCosBroadcastOverHeads(long cosRows)
    {
        using var scope = NewDisposeScope();
        var (_, x) = TransposedInput(ScalarType.BFloat16, 8);                        // (B, H, T, hd) over (B, T, H, hd) memory
        var (cos, sin) = CosSin(ScalarType.BFloat16, rows: cosRows);
        var order = RoPEKernel.MemoryOrder(x);
        var y = RoPEKernel.EmptyInOrder(x.shape, order, x.dtype, x.device);
        Assert.Equal(x.shape, y.shape);
        Assert.Equal(x.stride(), y.stride());                                        // dense input: y has its exact strides

        var p = RoPEKernel.Plan(x, cos, sin, y, order);
        // rows (b, t, h), h fastest: consecutive threads read consecutive memory of the projection output
        Assert.Equal((uint)T, p.N1);
        Assert.Equal((uint)H, p.N2);
        Assert.Equal((uint)(HeadDim / 2), p.Half);
        Assert.Equal((uint)(B * T * H), p.Rows);
        Assert.Equal(3u, p.LaneBits);                                                // 8 lanes ≥ 6 pairs: 32 rows a block
        Assert.Equal(new RoPEKernel.RowStrides(T * H * HeadDim, H * HeadDim, HeadDim), p.In);
        Assert.Equal(p.In, p.Out);
        // cos/sin (rows, T, hd): per batch row, or stride 0 when one row is broadcast; always stride 0 over heads
        Assert.Equal(new RoPEKernel.RowStrides(cosRows == 1 ? 0 : T * HeadDim, HeadDim, 0), p.Cos);
        Assert.Equal(p.Cos, p.Sin);
        Assert.Equal(1u, p.Grid);
        Assert.Equal(3 * sizeof(long), System.Runtime.InteropServices.Marshal.SizeOf<RoPEKernel.RowStrides>());   // rope.cu's struct
    }

    [Fact]
    public void TheSourceIsEmbeddedWithTheEntryPointsTheLauncherCalls()
    {
        var source = KernelModules.Source(RoPEKernel.SourceFile);
        Assert.Contains(RoPEKernel.SourceFile, KernelModules.SourceNames);
        foreach (var t in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
            foreach (var backward in new[] { false, true })
            {
                var name = RoPEKernel.EntryPoint(t, backward);                       // e.g. rope_bwd_bf16
                var (direction, suffix) = (name.Split('_')[1], name.Split('_')[2]);
                Assert.Contains($"extern \"C\" __global__ void rope_{direction}_##TN(", source);
                Assert.Contains($"QUANTA_ROPE({suffix}, ", source);
            }
        Assert.Contains("__fmul_rn", source);                                        // no FMA contraction of the rounded steps
        Assert.Contains("__fadd_rn", source);
    }
}
