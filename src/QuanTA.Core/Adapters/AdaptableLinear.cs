using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// A frozen linear layer (state-dict keys <c>weight</c>, <c>bias</c> exactly as Hugging Face names them) with one optional
/// <see cref="Adapter"/> slot. Backbones build every projection from this class, so injecting an adapter never has to
/// replace modules: <see cref="Attach"/> fills the slot, <see cref="Merge"/> folds ΔW into the weight for zero-overhead
/// inference, <see cref="Unmerge"/> restores W0 exactly from a kept master copy (no drift, unlike an in-place bf16 subtract).
/// </summary>
public sealed class AdaptableLinear : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // names match Hugging Face state-dict keys
    /// <summary>The frozen base weight W0, [out, in].</summary>
    public Parameter weight;
    /// <summary>The frozen bias, or null.</summary>
    public Parameter? bias;
#pragma warning restore IDE1006
    Adapter? _adapter;
    Tensor? _master; // W0 while merged

    /// <summary>Creates a frozen layer with zero weights (loaded later from a checkpoint).</summary>
    public AdaptableLinear(int inFeatures, int outFeatures, bool hasBias, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base(nameof(AdaptableLinear))
    {
        InFeatures = inFeatures; OutFeatures = outFeatures;
        weight = new Parameter(zeros(outFeatures, inFeatures, dtype: dtype, device: device), requires_grad: false);
        if (hasBias) bias = new Parameter(zeros(outFeatures, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>Input features.</summary>
    public int InFeatures { get; }
    /// <summary>Output features.</summary>
    public int OutFeatures { get; }
    /// <summary>The attached adapter, if any.</summary>
    public Adapter? Adapter => _adapter;
    /// <summary>True while ΔW is folded into <see cref="weight"/>.</summary>
    public bool IsMerged => _master is not null;

    /// <summary>Attaches (or replaces) the adapter; it is registered as a child named after its method ("quanta", "lora").</summary>
    public void Attach(Adapter adapter)
    {
        if (IsMerged) throw new InvalidOperationException("Unmerge before attaching a new adapter.");
        if (adapter.InFeatures != InFeatures || adapter.OutFeatures != OutFeatures)
            throw new ArgumentException($"Adapter is {adapter.InFeatures}→{adapter.OutFeatures} but the layer is {InFeatures}→{OutFeatures}.");
        if (_adapter is not null) Detach()?.Dispose();
        _adapter = adapter;
        register_module(adapter.Method, adapter);
    }

    /// <summary>Removes the adapter (unmerging first) and returns it.</summary>
    public Adapter? Detach()
    {
        if (_adapter is null) return null;
        if (IsMerged) Unmerge();
        var a = _adapter; _adapter = null;
        register_module(a.Method, null!); // a null module unregisters the child
        return a;
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        if (_adapter?.StepLinear is { IsLive: true } step && !IsMerged)           // layerwise fused path: W0 + ΔW built inside
            return step.Forward(x, weight, bias);
        if (_adapter?.StepDeltaWeight is { IsInvalid: false } dw && !IsMerged)   // (a ΔW left from a finished step's scope is ignored)
        {
            var y0 = nn.functional.linear(x, weight + dw, bias);   // (…, out) = x (W0 + ΔW)ᵀ + b: one GEMM (fused path)
            if (_adapter.StepDeltaSingleUse && is_grad_enabled())   // (a forward without a graph, e.g. a logged evaluation, leaves it)
            {
                _adapter.StepDeltaWeight = null;                   // used once: the slice is let go so that the bank's ΔW
                _adapter.StepDeltaSpent = true;                    // stack is freed once every layer ran (autograd keeps
                dw.Dispose();                                      // W0 + ΔW, not ΔW)
            }
            return y0;
        }
        if (_adapter is { StepDeltaSpent: true } && !IsMerged && is_grad_enabled())
            throw new InvalidOperationException("This layer already used its fused ΔW for this micro-batch: call QuanTABank.Materialize " +
                "before every forward pass that is backpropagated (each micro-batch), and Clear() when the step ends.");
        var y = nn.functional.linear(x, weight, bias);     // (…, out) = x W0ᵀ + b
        if (_adapter is null || IsMerged) return y;
        return y.add_(_adapter.Delta(x));                   // + Δ(x)
    }

    /// <summary>W ← round(W0 + ΔW): W0 widened to fp32, ΔW computed in fp32, one rounding to the weight's dtype (bf16 included).
    /// Checks for NaN first. W0 is kept as it was (a copy in the weight's dtype) until <see cref="Unmerge"/>, so that unmerging
    /// is exact: subtracting ΔW from a bf16 sum would not give W0 back. Memory cost: one extra copy of each merged layer's weight
    /// (out·in elements in its dtype) while merged; nothing once unmerged.</summary>
    public void Merge()
    {
        if (_adapter is null || IsMerged) return;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var master = weight.detach().clone().DetachFromDisposeScope();
        try { weight.copy_(MergedWeight(weight.dtype)); }
        catch { master.Dispose(); throw; }
        _master = master;
    }

    /// <summary>The frozen base weight W0 [out, in] as loaded (also while merged: then the kept master copy), not a copy.</summary>
    public Tensor BaseWeight => _master ?? weight;

    /// <summary>
    /// The merged weight round(fp32(W0) + fp32(ΔW)) as a new tensor [out, in] in <paramref name="dtype"/>, on the weight's device:
    /// W0 widened to fp32, ΔW from <see cref="Adapter.DeltaWeight"/> in fp32, summed, and rounded once. The layer is left as it was
    /// (merged or not). <see cref="Merge"/> and model export both use it, so a merged layer and an exported weight in the same
    /// dtype are equal bit for bit. Without an adapter it is W0 cast to <paramref name="dtype"/>. Throws when ΔW holds NaN or infinity.
    /// </summary>
    public Tensor MergedWeight(ScalarType dtype)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w0 = BaseWeight.detach().to_type(ScalarType.Float32);                  // (out, in) fp32
        if (_adapter is null) return w0.to_type(dtype).MoveToOuterDisposeScope();
        var delta = _adapter.DeltaWeight().to(weight.device).to_type(ScalarType.Float32);   // (out, in) fp32
        if (!delta.isfinite().all().item<bool>())
            throw new InvalidOperationException("Refusing to merge: the adapter's ΔW contains NaN or infinity.");
        return (w0 + delta).to_type(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>Restores W0 exactly (bit for bit) from the master copy kept by <see cref="Merge"/>.</summary>
    public void Unmerge()
    {
        if (_master is null) return;
        using var _ = no_grad();
        weight.copy_(_master);
        _master.Dispose(); _master = null;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) { _master?.Dispose(); _master = null; }
        base.Dispose(disposing);
    }
}
