using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Adapters;

/// <summary>The LoRA layer's fused forward (<see cref="LoRAAdapter.AddDelta"/>: the scaled update added inside one addmm) gives
/// PEFT's <c>y + lora_B(lora_A(x)) * alpha / r</c> and its gradients.</summary>
public class LoRAAdapterTests
{
    static LoRAAdapterTests() => TestUtil.Init();

    [Theory]
    [InlineData(2)]   // (M, in)
    [InlineData(3)]   // (B, T, in)
    public void TheFusedAdditionEqualsPeftsFormulaWithGradients(int rank)
    {
        using var g = new Generator(12);
        using var a = new LoRAAdapter(24, 10, rank: 4, alpha: 12, generator: g);               // scale 3
        using (no_grad()) a.LoraB.copy_(randn(10, 4, generator: g));                            // B starts at zero: make it not
        long[] shape = rank == 2 ? [6, 24] : [2, 3, 24];
        var x = randn(shape, generator: g);
        var w0 = randn(10, 24, generator: g);
        (Tensor Y, Tensor GX, Tensor GA, Tensor GB) Run(bool fused)
        {
            a.zero_grad();
            var xi = x.clone().requires_grad_(true);
            var y = nn.functional.linear(xi, w0);
            y = fused ? a.AddDelta(y, xi) : y + xi.matmul(a.LoraA.t()).matmul(a.LoraB.t()) * (12.0 / 4);   // PEFT's formula
            y.pow(2).sum().backward();
            return (y.detach().clone(), xi.grad!.clone(), a.LoraA.grad!.clone(), a.LoraB.grad!.clone());
        }
        var peft = Run(fused: false);
        var ours = Run(fused: true);
        Assert.Equal(peft.Y.shape, ours.Y.shape);
        Assert.True(TestUtil.RelErr(ours.Y, peft.Y) < 1e-6, $"y: {TestUtil.RelErr(ours.Y, peft.Y)}");
        Assert.True(TestUtil.RelErr(ours.GX, peft.GX) < 1e-6, $"dx: {TestUtil.RelErr(ours.GX, peft.GX)}");
        Assert.True(TestUtil.RelErr(ours.GA, peft.GA) < 1e-6, $"dA: {TestUtil.RelErr(ours.GA, peft.GA)}");
        Assert.True(TestUtil.RelErr(ours.GB, peft.GB) < 1e-6, $"dB: {TestUtil.RelErr(ours.GB, peft.GB)}");
    }
}
