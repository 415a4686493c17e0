using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// A trainable update ΔW of one frozen linear layer (QuanTA or LoRA), as in PEFT's tuner layers:
/// the adapted layer computes <c>y = x W0ᵀ + b + Δ(x)</c>, and <see cref="DeltaWeight"/> is the one source of ΔW
/// that merge, unmerge and export all use.
/// </summary>
public abstract class Adapter : nn.Module
{
    /// <summary>Creates the module under a TorchSharp name (used for state-dict keys).</summary>
    protected Adapter(string name) : base(name) { }

    /// <summary>Input features of the adapted layer.</summary>
    public abstract int InFeatures { get; }

    /// <summary>Output features of the adapted layer.</summary>
    public abstract int OutFeatures { get; }

    /// <summary>Short method name ("quanta", "lora"), also the adapter's state-dict prefix under the layer.</summary>
    public abstract string Method { get; }

    /// <summary>The update's contribution to the output for input <paramref name="x"/> (…, in) → (…, out), in x's dtype.</summary>
    public abstract Tensor Delta(Tensor x);

    /// <summary>ΔW as a dense fp32 matrix [out, in] (on the adapter's device); y = x (W0 + ΔW)ᵀ.</summary>
    public abstract Tensor DeltaWeight();

    /// <summary>Number of trainable parameters (the frozen copies are not counted).</summary>
    public long TrainableParameterCount => parameters().Where(p => p.requires_grad).Sum(p => p.numel());

    /// <summary>
    /// A ΔW [out, in] already computed for the current training step by a fused materializer (<see cref="QuanTABank"/>),
    /// in the layer's compute dtype and differentiable with respect to the adapter's parameters. While set, the layer
    /// computes one GEMM with the effective weight, <c>y = x (W0 + ΔW)ᵀ + b</c>, instead of calling <see cref="Delta"/>. In
    /// the bank's default mode the layer consumes it: its next forward uses it once and clears it (the bank sets it again
    /// for each micro-batch), so the step's ΔW is freed before the backward pass.
    /// </summary>
    public Tensor? StepDeltaWeight { get; internal set; }

    /// <summary>Set by the bank: the layer's next forward consumes <see cref="StepDeltaWeight"/> (default mode; in recompute
    /// mode the step's ΔW is a leaf shared by its micro-batches and stays set).</summary>
    internal bool StepDeltaSingleUse { get; set; }

    /// <summary>True once a forward consumed this micro-batch's ΔW; until the bank materializes again, a forward that records
    /// a graph is refused (its gradient would reach this adapter's own tensors, which the bank's optimizer never sees).</summary>
    internal bool StepDeltaSpent { get; set; }

    /// <summary>This step's replacement of the layer's forward by the memory-lean fused path (<see cref="QuanTABank.Layerwise"/>).</summary>
    internal IStepLinear? StepLinear { get; set; }

    /// <summary>A JSON-serializable description of the adapter's shape options (stored next to exported weights).</summary>
    public abstract IReadOnlyDictionary<string, object> Describe();
}
