using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>The SwiGLU feed-forward block: down_proj(silu(gate_proj(x)) · up_proj(x)).</summary>
public sealed class LlamaMLP : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // HF state-dict names
    /// <summary>gate_proj: hidden → intermediate.</summary>
    public AdaptableLinear gate_proj;
    /// <summary>up_proj: hidden → intermediate.</summary>
    public AdaptableLinear up_proj;
    /// <summary>down_proj: intermediate → hidden.</summary>
    public AdaptableLinear down_proj;
#pragma warning restore IDE1006

    /// <summary>Creates the block (weights zero until loaded).</summary>
    public LlamaMLP(HfModelConfig c, ScalarType dtype, Device? device) : base(nameof(LlamaMLP))
    {
        gate_proj = new AdaptableLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device, c.Quantization);
        up_proj = new AdaptableLinear(c.HiddenSize, c.IntermediateSize, c.MlpBias, dtype, device, c.Quantization);
        down_proj = new AdaptableLinear(c.IntermediateSize, c.HiddenSize, c.MlpBias, dtype, device, c.Quantization);
        RegisterComponents();
    }

    /// <inheritdoc/>
    /// <remarks>On a CUDA device the fused SwiGLU kernel runs when available (<see cref="Kernels.KernelAvailability"/>: the
    /// same roundings, one autograd node keeping only the two projections); otherwise libtorch's <c>silu(g) · u</c>.</remarks>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var g = gate_proj.forward(x);                                               // (B, T, I)
        var u = up_proj.forward(x);                                                 // (B, T, I)
        var h = (g.device_type == DeviceType.CUDA ? Kernels.SwiGLUKernel.TryForward(g, u) : null)
            ?? nn.functional.silu(g) * u;                                           // (B, T, I)
        return down_proj.forward(h).MoveToOuterDisposeScope();                      // (B, T, C)
    }
}
