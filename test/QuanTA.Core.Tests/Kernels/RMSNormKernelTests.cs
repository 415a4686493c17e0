using QuanTA.Core.Kernels;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Kernels;

/// <summary>
/// The RMSNorm kernel's CPU-side guarantees: the libtorch path is chosen on CPU and is exactly the transformers expression,
/// and the hand-derived backward the kernel implements (<see cref="RMSNormKernel.ReferenceBackward"/>) equals autograd of
/// that expression. The kernel itself is checked on the GPU by <c>quanta-bench kernel-check</c>.
/// </summary>
public class RMSNormKernelTests
{
    public RMSNormKernelTests() => TorchRuntime.Initialize();

    static LlamaRMSNorm Norm(int hidden, ScalarType dtype, double eps, long seed, bool trainWeight)
    {
        var norm = new LlamaRMSNorm(hidden, eps, dtype, CPU);
        using (no_grad()) norm.weight.copy_(1 + 0.5 * randn(hidden, dtype: ScalarType.Float64, generator: new Generator((ulong)seed)).to_type(dtype));
        norm.weight.requires_grad_(trainWeight);
        return norm;
    }

    // transformers' LlamaRMSNorm.forward, written out here independently of the module
    static Tensor HuggingFaceExpression(Tensor x, Tensor weight, double eps)
    {
        var h = x.to_type(ScalarType.Float32);
        h = h * rsqrt(h.pow(2).mean([-1], keepdim: true) + eps);
        return weight * h.to_type(x.dtype);
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    public void OnCpuTheLibTorchPathRunsAndEqualsTheExpressionBitForBit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var norm = Norm(33, dtype, 1e-5, 3, trainWeight: true);
        var x = randn(3, 7, 33, generator: new Generator(4)).to_type(dtype).requires_grad_(true);
        var dy = randn(3, 7, 33, generator: new Generator(5)).to_type(dtype);

        Assert.False(KernelAvailability.EnabledFor(DeviceType.CPU));
        Assert.Null(RMSNormKernel.TryForward(x, norm.weight, 1e-5));                 // CPU: never the kernel

        var y = norm.forward(x);
        var (gx, gw) = (autograd.grad([(y * dy).sum()], [x, norm.weight]) is var g ? (g[0], g[1]) : default);
        var yr = HuggingFaceExpression(x, norm.weight, 1e-5);
        var gr = autograd.grad([(yr * dy).sum()], [x, norm.weight]);

        Assert.Equal(dtype, y.dtype);
        Assert.Equal(Bits(yr), Bits(y));                                            // bit for bit
        Assert.Equal(Bits(yr), Bits(RMSNormKernel.ReferenceForward(x, norm.weight, 1e-5)));   // the GPU self-check's reference
        Assert.Equal(Bits(gr[0]), Bits(gx));
        Assert.Equal(Bits(gr[1]), Bits(gw));
    }

    static byte[] Bits(Tensor t) => t.contiguous().bytes.ToArray();

    static double RelErr(Tensor a, Tensor b)
    {
        using var _ = NewDisposeScope();
        var d = (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).norm().item<double>();
        return d / b.to_type(ScalarType.Float64).norm().item<double>();
    }

    [Theory]
    [InlineData(new long[] { 7, 33 }, false)]
    [InlineData(new long[] { 2, 3, 64 }, false)]
    [InlineData(new long[] { 1, 4095 }, false)]
    [InlineData(new long[] { 5, 40 }, true)]            // a strided (transposed) input
    public void HandDerivedBackwardEqualsAutogradInFp64(long[] shape, bool strided)
    {
        using var scope = NewDisposeScope();
        const double eps = 1e-6;
        using var norm = Norm((int)shape[^1], ScalarType.Float64, eps, 11, trainWeight: true);
        var gen = new Generator(12);
        var x = strided
            ? randn(shape[^1], shape[0], dtype: ScalarType.Float64, generator: gen).t().requires_grad_(true)
            : randn(shape, dtype: ScalarType.Float64, generator: gen).requires_grad_(true);
        Assert.Equal(!strided, x.is_contiguous());
        var dy = randn(x.shape, dtype: ScalarType.Float64, generator: new Generator(13));

        // the module's expression with fp64 in place of its fp32 (the module itself computes in fp32 even for fp64 input)
        var h = x * rsqrt(x.pow(2).mean([-1], keepdim: true) + eps);
        var y = norm.weight * h;
        var g = autograd.grad([(y * dy).sum()], [x, norm.weight]);
        var (dx, dw) = RMSNormKernel.ReferenceBackward(x.detach(), norm.weight.detach(), dy, eps);

        Assert.True(RelErr(dx, g[0]) < 1e-12, $"∂L/∂x rel err {RelErr(dx, g[0]):E2}");
        Assert.True(RelErr(dw, g[1]) < 1e-12, $"∂L/∂weight rel err {RelErr(dw, g[1]):E2}");
    }

    [Fact]
    public void HandDerivedBackwardPlacesBf16RoundingsWhereAutogradDoes()
    {
        // In bf16 the formula rounds g = dy·w to bf16 (the cast's backward) and dx at the end; autograd does the same,
        // with sums in another order: the two agree to a few bf16 ulps, far closer than a formula without the roundings.
        using var scope = NewDisposeScope();
        const double eps = 1e-5;
        using var norm = Norm(256, ScalarType.BFloat16, eps, 21, trainWeight: true);
        var x = randn(16, 256, generator: new Generator(22)).to_type(ScalarType.BFloat16).requires_grad_(true);
        var dy = randn(16, 256, generator: new Generator(23)).to_type(ScalarType.BFloat16);
        var y = norm.forward(x);
        var g = autograd.grad([(y * dy).sum()], [x, norm.weight]);
        var (dx, dw) = RMSNormKernel.ReferenceBackward(x.detach(), norm.weight.detach(), dy, eps);
        Assert.Equal(ScalarType.BFloat16, dx.dtype);
        Assert.Equal(ScalarType.BFloat16, dw.dtype);
        Assert.True(RelErr(dx, g[0]) < 1e-2, $"∂L/∂x rel err {RelErr(dx, g[0]):E2}");
        Assert.True(RelErr(dw, g[1]) < 1e-2, $"∂L/∂weight rel err {RelErr(dw, g[1]):E2}");
    }

    [Fact]
    public void OutputTypeIsLibTorchsPromotion()
    {
        foreach (var (x, w) in new[] { (ScalarType.BFloat16, ScalarType.BFloat16), (ScalarType.BFloat16, ScalarType.Float32),
                                       (ScalarType.Float32, ScalarType.BFloat16), (ScalarType.Float16, ScalarType.BFloat16), (ScalarType.Float16, ScalarType.Float16) })
        {
            using var scope = NewDisposeScope();
            var promoted = (ones(2, dtype: w) * ones(2, dtype: x)).dtype;
            Assert.Equal(promoted, RMSNormKernel.OutputType(x, w));
        }
    }
}
