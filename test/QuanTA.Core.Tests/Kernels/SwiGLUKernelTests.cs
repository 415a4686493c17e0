using QuanTA.Core.Kernels;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Kernels;

/// <summary>
/// The SwiGLU kernel's CPU-side guarantees: on CPU <see cref="LlamaMLP"/> runs libtorch's <c>silu(g) · u</c> exactly as
/// before, the hand-derived backward the kernel implements (<see cref="SwiGLUKernel.ReferenceBackward"/>) equals autograd
/// of that expression, and the embedded source holds every entry point the C# side launches. The kernel itself is
/// checked on the GPU by <c>quanta-bench kernel-check</c>.
/// </summary>
public class SwiGLUKernelTests
{
    public SwiGLUKernelTests() => TorchRuntime.Initialize();

    static HfModelConfig Config(int hidden, int intermediate) => new()
    {
        ModelType = "llama", VocabSize = 32, HiddenSize = hidden, IntermediateSize = intermediate, NumHiddenLayers = 1,
        NumAttentionHeads = 2, NumKeyValueHeads = 2, HeadDim = hidden / 2,
    };

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
    public void OnCpuTheModuleRunsLibTorchsExpressionBitForBit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var mlp = new LlamaMLP(Config(16, 37), dtype, CPU);
        var gen = new Generator(31);
        using (no_grad())
            foreach (var p in new[] { mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight })
                p.copy_((0.3 * randn(p.shape, generator: gen)).to_type(dtype));
        mlp.up_proj.weight.requires_grad_(true);                                    // one trainable weight, the rest frozen
        var x = randn(2, 5, 16, generator: gen).to_type(dtype).requires_grad_(true);
        var dy = randn(2, 5, 16, generator: gen).to_type(dtype);

        var g0 = nn.functional.linear(x, mlp.gate_proj.weight);
        var u0 = nn.functional.linear(x, mlp.up_proj.weight);
        Assert.Null(SwiGLUKernel.TryForward(g0, u0));                               // CPU: never the kernel

        var y = mlp.forward(x);
        var g = autograd.grad([(y * dy).sum()], [x, mlp.up_proj.weight]);
        // the feed-forward written out here independently of the module: down(silu(gate(x)) * up(x))
        var yr = nn.functional.linear(nn.functional.silu(nn.functional.linear(x, mlp.gate_proj.weight)) * nn.functional.linear(x, mlp.up_proj.weight),
                                      mlp.down_proj.weight);
        var gr = autograd.grad([(yr * dy).sum()], [x, mlp.up_proj.weight]);

        Assert.Equal(dtype, y.dtype);
        Assert.Equal(Bits(yr), Bits(y));                                            // bit for bit
        Assert.Equal(Bits(gr[0]), Bits(g[0]));
        Assert.Equal(Bits(gr[1]), Bits(g[1]));
        Assert.Equal(Bits(nn.functional.silu(g0) * u0), Bits(SwiGLUKernel.ReferenceForward(g0, u0)));   // the GPU self-check's reference
    }

    [Fact]
    public void TheKernelDeclinesWhatItDoesNotCover()
    {
        using var scope = NewDisposeScope();
        var a = randn(3, 4);
        Assert.True(SwiGLUKernel.Covers(a, randn(3, 4)));
        Assert.False(SwiGLUKernel.Covers(a, randn(4, 3)));                          // same element count, other shape
        Assert.False(SwiGLUKernel.Covers(a, randn(3, 4).to_type(ScalarType.BFloat16)));
        Assert.False(SwiGLUKernel.Covers(a.to_type(ScalarType.Float64), randn(3, 4, dtype: ScalarType.Float64)));
        Assert.False(SwiGLUKernel.Covers(empty(0, 4), empty(0, 4)));
        Assert.Null(SwiGLUKernel.TryForward(a, randn(3, 4)));                       // CPU
    }

    [Theory]
    [InlineData(new long[] { 7, 33 }, false)]
    [InlineData(new long[] { 2, 3, 64 }, false)]
    [InlineData(new long[] { 1, 4095 }, false)]
    [InlineData(new long[] { 5, 40 }, true)]            // a strided (transposed) gate input
    public void HandDerivedBackwardEqualsAutogradInFp64(long[] shape, bool strided)
    {
        using var scope = NewDisposeScope();
        var gen = new Generator(41);
        var g = strided
            ? (3 * randn(shape[^1], shape[0], dtype: ScalarType.Float64, generator: gen)).t().requires_grad_(true)
            : (3 * randn(shape, dtype: ScalarType.Float64, generator: gen)).requires_grad_(true);
        Assert.Equal(!strided, g.is_contiguous());
        var u = randn(g.shape, dtype: ScalarType.Float64, generator: gen).requires_grad_(true);
        var dh = randn(g.shape, dtype: ScalarType.Float64, generator: gen);

        var h = nn.functional.silu(g) * u;
        var grads = autograd.grad([(h * dh).sum()], [g, u]);
        var (dg, du) = SwiGLUKernel.ReferenceBackward(g.detach(), u.detach(), dh);

        Assert.True(RelErr(dg, grads[0]) < 1e-12, $"∂L/∂g rel err {RelErr(dg, grads[0]):E2}");
        Assert.True(RelErr(du, grads[1]) < 1e-12, $"∂L/∂u rel err {RelErr(du, grads[1]):E2}");
    }

    [Theory]
    [InlineData(64, 257)]
    [InlineData(7, 33)]                                 // 231 elements: libtorch's scalar loop takes a tail
    [InlineData(513, 1031)]
    public void HandDerivedBackwardEqualsAutogradInBf16BitForBit(int rows, int cols)
    {
        // The formula rounds s = silu(g), ds = dh·u and both results to bf16 — exactly where libtorch's silu, mul and
        // silu_backward kernels store bf16 tensors — and computes everything else in fp32 in libtorch's order
        // (x / (1 + exp(-x)), then 1 / (1 + exp(-x)), dy · sig · (1 + x · (1 − sig))). On CPU libtorch's bf16 kernels widen
        // to fp32 and use the same fp32 exp and arithmetic as the reference's fp32 tensor ops, so the two agree bit for bit
        // (measured: 0 differing elements of 528,903 here). One misplaced or missing rounding would show as differences of
        // one or more bf16 ulps in a few percent of the elements.
        using var scope = NewDisposeScope();
        var gen = new Generator(51);
        var g = (3 * randn(rows, cols, generator: gen)).to_type(ScalarType.BFloat16).requires_grad_(true);
        var u = randn(rows, cols, generator: gen).to_type(ScalarType.BFloat16).requires_grad_(true);
        var dh = randn(rows, cols, generator: gen).to_type(ScalarType.BFloat16);

        var h = nn.functional.silu(g) * u;
        var grads = autograd.grad([h], [g, u], [dh]);
        var (dg, du) = SwiGLUKernel.ReferenceBackward(g.detach(), u.detach(), dh);

        Assert.Equal(ScalarType.BFloat16, dg.dtype);
        Assert.Equal(ScalarType.BFloat16, du.dtype);
        Assert.Equal(Bits(grads[0]), Bits(dg));
        Assert.Equal(Bits(grads[1]), Bits(du));
    }

    [Fact]
    public void WithoutTheIntermediateRoundingsTheBf16BackwardWouldDiffer()
    {
        // the check above can fail: the same formula without rounding s and ds to bf16 disagrees with autograd
        using var scope = NewDisposeScope();
        var gen = new Generator(52);
        var g = (3 * randn(64, 257, generator: gen)).to_type(ScalarType.BFloat16);
        var u = randn(64, 257, generator: gen).to_type(ScalarType.BFloat16);
        var dh = randn(64, 257, generator: gen).to_type(ScalarType.BFloat16);
        var (dg, du) = SwiGLUKernel.ReferenceBackward(g, u, dh);
        var (x, d) = (g.to_type(ScalarType.Float32), dh.to_type(ScalarType.Float32));
        var sig = sigmoid(x);
        var unroundedDu = (d * x * sig).to_type(ScalarType.BFloat16);
        var unroundedDg = (d * u.to_type(ScalarType.Float32) * sig * (1 + x * (1 - sig))).to_type(ScalarType.BFloat16);
        Assert.NotEqual(Bits(du), Bits(unroundedDu));
        Assert.NotEqual(Bits(dg), Bits(unroundedDg));
    }

    [Fact]
    public void TheSourceIsEmbeddedWithEveryEntryPointTheKernelLaunches()
    {
        Assert.Contains(SwiGLUKernel.SourceFile, KernelModules.SourceNames);
        var source = KernelModules.Source(SwiGLUKernel.SourceFile);
        var names = SwiGLUKernel.EntryPoints.ToList();
        Assert.Equal(6, names.Count);
        foreach (var t in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
        {
            Assert.Contains($"swiglu_fwd_{KernelSelfCheck.TypeSuffix(t)}", names);
            Assert.Contains($"swiglu_bwd_{KernelSelfCheck.TypeSuffix(t)}", names);
        }
        foreach (var name in names) Assert.Contains($"extern \"C\" __global__ void {name}(", source);
        Assert.DoesNotContain("#include", source);                                     // NVRTC gets no include paths
        Assert.Contains("expf(-g)", source);                                           // PyTorch's silu: x / (1 + exp(-x)) in fp32
    }
}
