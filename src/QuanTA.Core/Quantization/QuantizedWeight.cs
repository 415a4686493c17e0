using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Quantization;

/// <summary>
/// A frozen (out, in) weight matrix kept in a quantized form (<see cref="NF4Weight"/>, <see cref="Int8Weight"/>). The dense
/// matrix is rebuilt on demand (<see cref="Dequantize()"/>) on the weight's device; nothing dense is cached.
/// The tensors are owned by this object (not registered as module buffers, so a module's <c>.to(dtype)</c> never casts the
/// codes): <see cref="MoveTo"/> moves them and <see cref="Dispose"/> frees them.
/// </summary>
public abstract class QuantizedWeight : IDisposable
{
    /// <summary>Creates the weight's description.</summary>
    protected QuantizedWeight(long outFeatures, long inFeatures, ScalarType computeDType)
    {
        OutFeatures = outFeatures; InFeatures = inFeatures; ComputeDType = computeDType;
    }

    /// <summary>Rows of the weight (output features).</summary>
    public long OutFeatures { get; }
    /// <summary>Columns of the weight (input features).</summary>
    public long InFeatures { get; }
    /// <summary>Number of weight elements (out · in).</summary>
    public long ElementCount => OutFeatures * InFeatures;
    /// <summary>The dtype <see cref="Dequantize()"/> returns (the layer's compute dtype: fp32 on CPU, bf16 on CUDA).</summary>
    public ScalarType ComputeDType { get; set; }
    /// <summary>The storage format.</summary>
    public abstract BaseQuantization Kind { get; }
    /// <summary>The device the quantized tensors live on.</summary>
    public abstract Device Device { get; }
    /// <summary>Bytes held by the quantized tensors (codes, scales, code books).</summary>
    public abstract long StorageBytes { get; }

    /// <summary>The dense weight (out, in) in fp32, a fresh tensor on <see cref="Device"/>.</summary>
    public abstract Tensor DequantizeFloat32();

    /// <summary>The dense weight (out, in) in <see cref="ComputeDType"/>, a fresh tensor on <see cref="Device"/>: on a GPU with
    /// QuanTA's kernels in one pass (<see cref="Kernels.DequantizeKernel"/>, bit-identical), else <see cref="DequantizeFloat32"/> and a cast.</summary>
    public Tensor Dequantize()
    {
        if (Kernels.DequantizeKernel.TryDequantize(this) is { } dense) return dense;
        using var scope = NewDisposeScope();
        var w = DequantizeFloat32();
        return (w.dtype == ComputeDType ? w : w.to_type(ComputeDType)).MoveToOuterDisposeScope();
    }

    /// <summary>Moves the quantized tensors to <paramref name="device"/> (no-op when already there).</summary>
    public abstract void MoveTo(Device device);

    /// <summary>Quantizes a dense (out, in) weight of any floating dtype; the result lives on the weight's device.</summary>
    /// <param name="weight">The dense weight.</param>
    /// <param name="kind"><see cref="BaseQuantization.Int8"/> or <see cref="BaseQuantization.NF4"/>.</param>
    /// <param name="computeDType">The dtype <see cref="Dequantize()"/> will return.</param>
    /// <param name="doubleQuant">NF4 only: quantize the absmax constants too (on by default, as in QLoRA).</param>
    public static QuantizedWeight Quantize(Tensor weight, BaseQuantization kind, ScalarType computeDType, bool doubleQuant = true) => kind switch
    {
        BaseQuantization.NF4 => NF4Weight.Quantize(weight, computeDType, doubleQuant),
        BaseQuantization.Int8 => Int8Weight.Quantize(weight, computeDType),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Only Int8 and NF4 produce a quantized weight."),
    };

    /// <summary>Moves <paramref name="t"/> to <paramref name="device"/>, always returning a wrapper the caller owns
    /// (the original wrapper may be disposed afterwards).</summary>
    internal static Tensor Own(Tensor t, Device device)
    {
        var moved = t.to(device);
        return ReferenceEquals(moved, t) ? t.detach() : moved;
    }

    /// <summary>Replaces <paramref name="t"/> by its copy on <paramref name="device"/>, freeing the old one.</summary>
    internal static void Move(ref Tensor t, Device device)
    {
        if (SameDevice(t.device, device)) return;
        var moved = t.to(device);
        t.Dispose();
        t = moved;
    }

    internal static bool SameDevice(Device a, Device b) => a.type == b.type && (a.type == DeviceType.CPU || Math.Max(a.index, 0) == Math.Max(b.index, 0));

    /// <summary>Frees the quantized tensors.</summary>
    protected abstract void DisposeTensors();

    bool _disposed;
    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        DisposeTensors();
        GC.SuppressFinalize(this);
    }
}
