using QuanTA.Core.Quantization;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// A frozen linear layer (state-dict keys <c>weight</c>, <c>bias</c> exactly as Hugging Face names them) with one optional
/// <see cref="Adapter"/> slot. Backbones build every projection from this class, so injecting an adapter never has to
/// replace modules: <see cref="Attach"/> fills the slot, <see cref="Merge"/> folds ΔW into the weight for zero-overhead
/// inference, <see cref="Unmerge"/> restores W0 exactly from a kept master copy (no drift, unlike an in-place bf16 subtract).
/// <para>
/// Built with a <see cref="BaseQuantization"/> other than None, the layer keeps W0 quantized (<see cref="QuantizedWeight"/>,
/// filled by <see cref="LoadWeight(Tensor)"/> at checkpoint load) and <see cref="weight"/> is an empty placeholder in the compute
/// dtype. Every forward dequantizes W0 into a transient tensor; a backward that needs ∂L/∂x dequantizes it again instead of
/// keeping it (<see cref="QuantizedLinearFunction"/>), so between forward and backward only the quantized form stays alive.
/// Merging into a quantized W0 is refused; <see cref="DequantizedWeight"/> gives W0 in fp32 for export (W0 + ΔW).
/// </para>
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
    QuantizedWeight? _quantized;

    /// <summary>Creates a frozen layer with zero weights (loaded later from a checkpoint). With a <paramref name="quantization"/>
    /// other than None no dense weight is allocated: <see cref="LoadWeight(Tensor)"/> stores it quantized.</summary>
    public AdaptableLinear(int inFeatures, int outFeatures, bool hasBias, ScalarType dtype = ScalarType.Float32, Device? device = null,
        BaseQuantization quantization = BaseQuantization.None)
        : base(nameof(AdaptableLinear))
    {
        InFeatures = inFeatures; OutFeatures = outFeatures; Quantization = quantization;
        weight = new Parameter(quantization == BaseQuantization.None
            ? zeros(outFeatures, inFeatures, dtype: dtype, device: device)
            : empty(0, dtype: dtype, device: device), requires_grad: false);
        if (hasBias) bias = new Parameter(zeros(outFeatures, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>How W0 is stored (None: dense <see cref="weight"/>).</summary>
    public BaseQuantization Quantization { get; }
    /// <summary>The quantized W0 (null for a dense layer, or before loading).</summary>
    public QuantizedWeight? QuantizedWeight => _quantized;

    /// <summary>Where gradients returned by the quantized backward wait to be freed; a model shares one holder among its layers
    /// and empties it at each forward.</summary>
    internal ReturnedGradients Returned { get; set; } = new();

    /// <summary>Sets W0 from a dense (out, in) tensor of any floating dtype and device: copied into <see cref="weight"/>, or
    /// quantized on this layer's device when the layer is quantized (one layer at a time, so the dense form of the whole model
    /// never exists).</summary>
    public void LoadWeight(Tensor dense)
    {
        if (dense.dim() != 2 || dense.shape[0] != OutFeatures || dense.shape[1] != InFeatures)
            throw new ArgumentException($"Expected a [{OutFeatures}, {InFeatures}] weight; got [{string.Join(", ", dense.shape)}].", nameof(dense));
        using var _ = no_grad();
        if (Quantization == BaseQuantization.None) { weight.copy_(dense); return; }
        using var scope = NewDisposeScope();
        var onDevice = dense.to(weight.device);
        SetQuantized(QuantizedWeight.Quantize(onDevice, Quantization, weight.dtype));
    }

    /// <summary>Sets W0 from an already quantized weight (e.g. a bitsandbytes NF4 checkpoint), taking ownership of it: kept as
    /// is when the layer uses the same format, else dequantized and stored the layer's way.</summary>
    public void LoadWeight(QuantizedWeight quantized)
    {
        if (quantized.OutFeatures != OutFeatures || quantized.InFeatures != InFeatures)
            throw new ArgumentException($"Expected a [{OutFeatures}, {InFeatures}] weight; got [{quantized.OutFeatures}, {quantized.InFeatures}].", nameof(quantized));
        if (quantized.Kind == Quantization)
        {
            quantized.MoveTo(weight.device);
            quantized.ComputeDType = weight.dtype;
            SetQuantized(quantized);
            return;
        }
        using (quantized)
        using (var dense = quantized.DequantizeFloat32()) LoadWeight(dense);
    }

    void SetQuantized(QuantizedWeight q) { _quantized?.Dispose(); _quantized = q; }

    /// <summary>W0 as a fresh fp32 (out, in) tensor on the layer's device: dequantized when quantized, the kept master copy while
    /// merged, else the weight itself. Export writes W0 + ΔW from this.</summary>
    public Tensor DequantizedWeight()
    {
        using var _ = no_grad();
        if (_quantized is not null) return _quantized.DequantizeFloat32();
        if (Quantization != BaseQuantization.None) throw NotLoaded();
        return (_master ?? weight).detach().to_type(ScalarType.Float32, copy: true);
    }

    InvalidOperationException NotLoaded() => new($"This {Quantization}-quantized layer has no weight yet: load it from a checkpoint first (LoadWeight).");


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
        if (!IsMerged && _adapter?.StepLinear is { IsLive: true } step)   // a fused training path's step (QuanTABank): x (W0 + ΔW)ᵀ + b
            return step.Forward(x, weight, bias, Quantization == BaseQuantization.None ? null : _quantized ?? throw NotLoaded());
        var y = Quantization == BaseQuantization.None
            ? nn.functional.linear(x, weight, bias)        // (…, out) = x W0ᵀ + b
            : QuantizedForward(x);
        if (_adapter is null || IsMerged) return y;
        var sum = _adapter.AddDelta(y, x);                  // + Δ(x)
        if (!ReferenceEquals(sum, y)) y.Dispose();          // a fused addition made a new tensor: free the base output now
        return sum;
    }

    /// <summary>x W0ᵀ + b with W0 dequantized: through <see cref="QuantizedLinearFunction"/> when ∂L/∂x is needed (nothing
    /// weight-sized kept for the backward), else a plain GEMM on a transient W0.</summary>
    Tensor QuantizedForward(Tensor x)
    {
        var q = _quantized ?? throw NotLoaded();
        if (is_grad_enabled() && x.requires_grad) return QuantizedLinearFunction.Apply(x, bias, q, Returned);
        using var w0 = q.Dequantize();                                                  // (out, in) transient
        return nn.functional.linear(x, w0, bias);
    }

    /// <summary>W ← round(W0 + ΔW): W0 widened to fp32, ΔW computed in fp32, one rounding to the weight's dtype (bf16 included).
    /// Checks for NaN first. W0 is kept as it was (a copy in the weight's dtype) until <see cref="Unmerge"/>, so that unmerging
    /// is exact: subtracting ΔW from a bf16 sum would not give W0 back. Memory cost: one extra copy of each merged layer's weight
    /// (out·in elements in its dtype) while merged; nothing once unmerged.</summary>
    /// <exception cref="InvalidOperationException">the layer is quantized: merging into a quantized base is refused (rounding
    /// W0 + ΔW to 4 or 8 bits would lose most of ΔW); run the adapter unmerged, or export W0 + ΔW from
    /// <see cref="DequantizedWeight"/> and <c>Adapter.DeltaWeight()</c>.</exception>
    public void Merge()
    {
        if (_adapter is null || IsMerged) return;
        if (Quantization != BaseQuantization.None)
            throw new InvalidOperationException($"Refusing to merge the adapter into a {Quantization}-quantized base weight: W0 + ΔW rounded back to " +
                $"{(Quantization == BaseQuantization.NF4 ? 4 : 8)} bits would lose most of ΔW. Run the adapter unmerged (it is, on a quantized base), " +
                "or export a merged model from the dequantized weight (AdaptableLinear.DequantizedWeight() + Adapter.DeltaWeight()).");
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
    /// (merged or not); a quantized W0 is dequantized first (<see cref="DequantizedWeight"/>). <see cref="Merge"/> and model export both use it, so a merged layer and an exported weight in the same
    /// dtype are equal bit for bit. Without an adapter it is W0 cast to <paramref name="dtype"/>. Throws when ΔW holds NaN or infinity.
    /// </summary>
    public Tensor MergedWeight(ScalarType dtype)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var w0 = _quantized is not null ? DequantizedWeight() : BaseWeight.detach().to_type(ScalarType.Float32);   // (out, in) fp32
        if (_adapter is null) return w0.to_type(dtype).MoveToOuterDisposeScope();
        var delta = _adapter.DeltaWeight().to(w0.device).to_type(ScalarType.Float32);   // (out, in) fp32
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
        if (disposing) { _master?.Dispose(); _master = null; _quantized?.Dispose(); _quantized = null; }
        base.Dispose(disposing);
    }

    // The quantized tensors are not registered buffers (a module-wide .to(dtype) must not cast the codes): they follow moves here.
    /// <inheritdoc/>
    protected override nn.Module _to(Device device, ScalarType dtype, bool non_blocking) { base._to(device, dtype, non_blocking); return Follow(); }
    /// <inheritdoc/>
    protected override nn.Module _to(DeviceType deviceType, int deviceIndex, bool non_blocking) { base._to(deviceType, deviceIndex, non_blocking); return Follow(); }
    /// <inheritdoc/>
    protected override nn.Module _to(ScalarType dtype, bool non_blocking) { base._to(dtype, non_blocking); return Follow(); }

    AdaptableLinear Follow()
    {
        if (_quantized is not null) { _quantized.MoveTo(weight.device); _quantized.ComputeDType = weight.dtype; }
        return this;
    }
}
