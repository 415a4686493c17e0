using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Core.Adapters;

/// <summary>
/// This step's forward of one adapted layer on a fused training path, set by <see cref="QuanTABank.Materialize"/> on the
/// adapter (<see cref="Adapter.StepLinear"/>) and used by <see cref="AdaptableLinear"/> instead of <c>x W0ᵀ + b + Δ(x)</c>.
/// Stacked: <see cref="QuanTAStackedStep"/>; StackedRecompute: <see cref="QuanTARecomputeStep"/>; Layerwise:
/// <see cref="QuanTALayerwiseStep"/>.
/// </summary>
internal interface IStepLinear
{
    /// <summary>False once the step's tensors were disposed (the layer then takes its own path again).</summary>
    bool IsLive { get; }

    /// <summary>y = x (W0 + ΔW)ᵀ + b for this step. With <paramref name="quantized"/>, W0 is that weight dequantized (and
    /// <paramref name="weight"/> is the layer's empty placeholder).</summary>
    Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Quantization.QuantizedWeight? quantized);

    /// <summary>The tensors this step reads that carry gradients back to the bank (its ΔW slice, or its block operators).</summary>
    IReadOnlyList<Tensor> Inputs { get; }

    /// <summary>The same step reading <paramref name="inputs"/> (same shapes as <see cref="Inputs"/>) instead: activation
    /// checkpointing runs a layer again in the backward on fresh leaves (<see cref="Models.DecoderLayerCheckpoint"/>).</summary>
    IStepLinear Rebind(IReadOnlyList<Tensor> inputs);
}

/// <summary>
/// The stacked path's step (<see cref="QuanTATrainingPath.Stacked"/>): the layer's slice ΔW [out, in] of the bank's batched
/// chain, in the compute dtype and differentiable w.r.t. the stacked T, and one GEMM <c>y = x (W0 + ΔW)ᵀ + b</c>.
/// A forward that records a graph uses the slice once and lets it go, so the group's ΔW stack is freed once every layer ran
/// (autograd keeps W0 + ΔW, not ΔW); the bank materializes again for each micro-batch. A forward without a graph (a logged
/// evaluation) uses it and leaves it.
/// </summary>
/// <param name="delta">The layer's ΔW slice [out, in].</param>
/// <param name="usedOnce">False for a step rebound for a checkpointed recompute: its ΔW is a leaf owned by the caller.</param>
internal sealed class QuanTAStackedStep(Tensor delta, bool usedOnce = true) : IStepLinear
{
    Tensor? _delta = delta;
    bool _spent;

    public IReadOnlyList<Tensor> Inputs => _delta is null ? [] : [_delta];

    public IStepLinear Rebind(IReadOnlyList<Tensor> inputs) => new QuanTAStackedStep(inputs[0], usedOnce: false);

    /// <summary>This step's ΔW [out, in] until a backpropagated forward used it (tests and the bench compare it with the
    /// adapter's own ΔW).</summary>
    internal Tensor? Delta => _delta;

    /// <summary>Live while the slice is, and — once a backpropagated forward spent it — for any further forward that records a
    /// graph, so that <see cref="Forward"/> refuses it (its gradient would reach the adapter's own tensors, which the bank's
    /// optimizer never sees). A forward without a graph after that takes the layer's own path, which gives the same values.</summary>
    public bool IsLive => _spent ? is_grad_enabled() : _delta is { IsInvalid: false };

    public Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Quantization.QuantizedWeight? quantized)
    {
        if (_spent || _delta is null)
            throw new InvalidOperationException("This layer already used its stacked ΔW for this micro-batch: call QuanTABank.Materialize " +
                "before every forward pass that is backpropagated (each micro-batch), and Clear() when the step ends.");
        Tensor y;
        if (quantized is null) y = nn.functional.linear(x, weight + _delta, bias);                   // (…, out) = x (W0 + ΔW)ᵀ + b
        else using (var w0 = quantized.Dequantize()) y = nn.functional.linear(x, w0 + _delta, bias);   // W0 dequantized, transient
        if (usedOnce && is_grad_enabled())
        {
            _delta.Dispose();                  // used once: autograd holds W0 + ΔW, and the stack's storage goes with the last slice
            _delta = null;
            _spent = true;
        }
        return y;
    }
}
