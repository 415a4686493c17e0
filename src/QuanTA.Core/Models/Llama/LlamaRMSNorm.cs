using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>RMSNorm as transformers computes it: normalize in fp32, cast back, then scale by <c>weight</c>.</summary>
public sealed class LlamaRMSNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // HF state-dict name
    /// <summary>The scale γ, [hidden].</summary>
    public Parameter weight;
#pragma warning restore IDE1006
    readonly double _eps;
    // ε as one native Scalar held by the module: an implicit double → Scalar temporary can be finalized by the GC while the
    // native add still reads it (TorchSharp keeps no reference across the call), which failed a CI run ("toFloat: Expected
    // false to be true" in variance + eps).
    readonly Scalar _epsScalar;

    /// <summary>Creates a norm with unit scale.</summary>
    public LlamaRMSNorm(int hiddenSize, double eps, ScalarType dtype, Device? device) : base(nameof(LlamaRMSNorm))
    {
        _eps = eps;
        _epsScalar = eps.ToScalar();
        weight = new Parameter(ones(hiddenSize, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <inheritdoc/>
    /// <remarks>On a CUDA device the fused kernel runs when available (<see cref="Kernels.KernelAvailability"/>: same
    /// semantics, one autograd node keeping only x and the per-row rstd); otherwise <see cref="LibTorchForward"/>.</remarks>
    public override Tensor forward(Tensor x)
        => x.device_type == DeviceType.CUDA && Kernels.RMSNormKernel.TryForward(x, weight, _eps) is { } y ? y : LibTorchForward(x);

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) _epsScalar.Dispose();
        base.Dispose(disposing);
    }

    /// <summary>The libtorch expression (the path on CPU, and on GPUs without the kernel).</summary>
    internal Tensor LibTorchForward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to_type(ScalarType.Float32);                     // (…, C) in fp32
        var variance = h.square().mean([-1], keepdim: true);        // (…, 1)
        h = h * rsqrt(variance.add(_epsScalar));
        return (weight * h.to_type(x.dtype)).MoveToOuterDisposeScope();
    }
}
