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

    /// <summary>y + Δ(x) for the layer's output y (…, out) — what the adapted layer's forward calls. The default adds
    /// <see cref="Delta"/> in place; an adapter may instead fuse the addition into its last GEMM and return a new tensor.</summary>
    public virtual Tensor AddDelta(Tensor y, Tensor x) => y.add_(Delta(x));

    /// <summary>ΔW as a dense fp32 matrix [out, in] (on the adapter's device); y = x (W0 + ΔW)ᵀ.</summary>
    public abstract Tensor DeltaWeight();

    /// <summary>Number of trainable parameters (the frozen copies are not counted).</summary>
    public long TrainableParameterCount => parameters().Where(p => p.requires_grad).Sum(p => p.numel());

    /// <summary>This step's forward of the layer on a fused training path (<see cref="QuanTABank.Materialize"/> sets it, its
    /// <c>Clear</c> removes it): while set and live, the layer computes <c>y = x (W0 + ΔW)ᵀ + b</c> through it instead of
    /// calling <see cref="Delta"/>. The one per-step hook of an adapter.</summary>
    internal IStepLinear? StepLinear { get; set; }

    /// <summary>The stacked path's ΔW slice for this step while unused (tests and the bench compare it with <see cref="DeltaWeight"/>).</summary>
    internal Tensor? StepDelta => (StepLinear as QuanTAStackedStep)?.Delta;

    /// <summary>A JSON-serializable description of the adapter's shape options (stored next to exported weights).</summary>
    public abstract IReadOnlyDictionary<string, object> Describe();
}
