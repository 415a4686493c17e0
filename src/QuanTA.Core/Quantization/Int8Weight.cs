using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Quantization;

/// <summary>
/// A weight in 8-bit weight-only form with one absmax scale per output row (as bitsandbytes' LLM.int8 row statistics,
/// without its outlier decomposition):
/// <code>
///   absmax[r] = max_c |W[r, c]|            fp32 (out)
///   q[r, c]   = round(W[r, c] · 127 / absmax[r])      int8 in [−127, 127]
///   W ≈ q · absmax[r] / 127                 error at most half a step, absmax[r] / 254, per value
/// </code>
/// </summary>
public sealed class Int8Weight : QuantizedWeight
{
    Tensor _codes, _rowAbsmax;

    Int8Weight(long outFeatures, long inFeatures, ScalarType computeDType, Tensor codes, Tensor rowAbsmax)
        : base(outFeatures, inFeatures, computeDType) { _codes = codes; _rowAbsmax = rowAbsmax; }

    /// <inheritdoc/>
    public override BaseQuantization Kind => BaseQuantization.Int8;
    /// <inheritdoc/>
    public override Device Device => _codes.device;
    /// <inheritdoc/>
    public override long StorageBytes => _codes.numel() + _rowAbsmax.numel() * 4;
    /// <summary>The int8 codes (out, in).</summary>
    public Tensor Codes => _codes;
    /// <summary>The fp32 absmax of every row (out).</summary>
    public Tensor RowAbsmax => _rowAbsmax;

    /// <summary>Quantizes a dense (out, in) weight (any floating dtype) on its own device.</summary>
    public static Int8Weight Quantize(Tensor weight, ScalarType computeDType)
    {
        if (weight.dim() != 2) throw new ArgumentException($"Expected an (out, in) weight; got [{string.Join(", ", weight.shape)}].", nameof(weight));
        using var scope = NewDisposeScope();
        var w = weight.to_type(ScalarType.Float32);
        var absmax = w.abs().amax([1]);                                                       // (out)
        var inv = (absmax.clamp_min(1e-38).reciprocal() * 127).unsqueeze(1);                 // (out, 1)
        var q = (w * inv).round_().clamp_(-127, 127).to_type(ScalarType.Int8);               // (out, in)
        return new Int8Weight(weight.shape[0], weight.shape[1], computeDType, q.DetachFromDisposeScope(), absmax.DetachFromDisposeScope());
    }

    /// <inheritdoc/>
    public override Tensor DequantizeFloat32()
    {
        using var scope = NewDisposeScope();
        var w = _codes.to_type(ScalarType.Float32) * (_rowAbsmax / 127).unsqueeze(1);        // (out, in)
        return w.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override void MoveTo(Device device) { Move(ref _codes, device); Move(ref _rowAbsmax, device); }

    /// <inheritdoc/>
    protected override void DisposeTensors() { _codes.Dispose(); _rowAbsmax.Dispose(); }
}
