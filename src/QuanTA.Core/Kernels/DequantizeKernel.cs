using System.Runtime.InteropServices;
using QuanTA.Core.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Kernels;

/// <summary>
/// The frozen base's dequantization as one CUDA kernel (<c>Sources/dequantize.cu</c>): each quantized byte read once, each
/// dense value written once in the compute type, where the libtorch path (<see cref="QuantizedWeight.DequantizeFloat32"/>
/// then a cast) gathers, pads, scales and casts through fp32 copies of the whole matrix. Same arithmetic, same roundings:
/// <code>
///   NF4:   W[i] = round_O( quant_map[code_i] · a_{i/64} ),  a_b = absmax[b]  or  (nested_map[qabsmax[b]] · nested_absmax[b/256]) + offset
///   Int8:  W[r, c] = round_O( float(q[r, c]) · scale[r] ),   scale = absmax / 127 (libtorch, one value per row)
/// </code>
/// so the result is bit-identical to the libtorch path's (checked once per device before first use, see <see cref="SelfChecked"/>).
/// The weight has no gradient (the base is frozen), so there is no backward: the linear's backward calls this again.
/// </summary>
internal static unsafe class DequantizeKernel
{
    /// <summary>The embedded CUDA C source.</summary>
    public const string SourceFile = "dequantize.cu";

    const uint Block = 256;

    /// <summary>The dense (out, in) weight in its compute type through the kernel, or null when the caller must run the libtorch
    /// path (CPU, kernels off or unavailable, an unsupported type, or the self-check failed on this device).</summary>
    public static Tensor? TryDequantize(QuantizedWeight weight)
    {
        if (weight.Device.type != DeviceType.CUDA || KernelSelfCheck.TypeSuffix(weight.ComputeDType) == null || weight.ElementCount == 0) return null;
        var module = KernelAvailability.ModuleFor(weight.Device, SourceFile);
        if (module == null || !SelfChecked(module)) return null;
        return Run(module, weight);
    }

    static Tensor? Run(LoadedModule module, QuantizedWeight weight) => weight switch
    {
        NF4Weight nf4 => NF4(module, nf4),
        Int8Weight int8 => Int8(module, int8),
        _ => null,
    };

    static IntPtr Ptr(Tensor t) => TensorPointers.DataPointer(t);

    static uint GridFor(long items) => (uint)Math.Clamp((items + Block - 1) / Block, 1, 1 << 20);

    static Tensor NF4(LoadedModule module, NF4Weight w)
    {
        long n = w.ElementCount;
        var output = empty([w.OutFeatures, w.InFeatures], dtype: w.ComputeDType, device: w.Device);
        using var packed = w.Packed.contiguous();
        using var absmax = w.Absmax.contiguous();
        using var quantMap = w.QuantMap.contiguous();
        using var nestedAbsmax = w.NestedAbsmax?.contiguous();
        using var nestedMap = w.NestedQuantMap?.contiguous();
        IntPtr pPacked = Ptr(packed), pOut = Ptr(output), pMap = Ptr(quantMap);
        IntPtr pAbsmax = w.DoubleQuantized ? IntPtr.Zero : Ptr(absmax);
        IntPtr pQAbsmax = w.DoubleQuantized ? Ptr(absmax) : IntPtr.Zero;
        IntPtr pNested = nestedAbsmax is null ? IntPtr.Zero : Ptr(nestedAbsmax);
        IntPtr pNestedMap = nestedMap is null ? IntPtr.Zero : Ptr(nestedMap);
        float offset = w.NestedOffset;
        var name = $"nf4_dequantize_{KernelSelfCheck.TypeSuffix(w.ComputeDType)}";
        var f = module.Function(name);
        void** args = stackalloc void*[9];
        args[0] = &pPacked; args[1] = &pAbsmax; args[2] = &pQAbsmax; args[3] = &pNested; args[4] = &pNestedMap; args[5] = &pMap;
        args[6] = &offset; args[7] = &pOut; args[8] = &n;
        using (CudaDriver.Enter(module.Device))
            CudaDriver.Launch(f, GridFor((n + 1) / 2), Block, IntPtr.Zero, args, name);   // stream 0: see RMSNormKernel.Forward
        return output;
    }

    static Tensor Int8(LoadedModule module, Int8Weight w)
    {
        long rows = w.OutFeatures, cols = w.InFeatures;
        var output = empty([rows, cols], dtype: w.ComputeDType, device: w.Device);
        using var codes = w.Codes.contiguous();
        using var scale = w.RowAbsmax / 127;                                             // (out) fp32, as the libtorch path divides
        IntPtr pq = Ptr(codes), ps = Ptr(scale), pOut = Ptr(output);
        var name = $"int8_dequantize_{KernelSelfCheck.TypeSuffix(w.ComputeDType)}";
        var f = module.Function(name);
        void** args = stackalloc void*[5];
        args[0] = &pq; args[1] = &ps; args[2] = &pOut; args[3] = &rows; args[4] = &cols;
        using (CudaDriver.Enter(module.Device))
            CudaDriver.Launch(f, GridFor(rows * cols), Block, IntPtr.Zero, args, name);   // stream 0: see RMSNormKernel.Forward
        return output;
    }

    /// <summary>
    /// Once per loaded module: NF4 (with and without double quantization, an odd element count so the last byte is half
    /// used, more than 256 blocks so the nested constants change) and Int8 weights dequantized by the kernel and by the libtorch
    /// path, in fp32, bf16 and fp16 — they must be bit-identical. A kernel that differs is reported once and that device keeps
    /// libtorch's path.
    /// </summary>
    static bool SelfChecked(LoadedModule module) => KernelSelfCheck.Passed(module, () =>
    {
        string? failure = null;
        var dev = device(DeviceType.CUDA, module.Device);
        using var gen = new Generator(20261203);
        var dense = (randn(129, 257, generator: gen) * 0.05).to(dev);                // 33,153 values: odd, 519 blocks
        var weights = new QuantizedWeight[]
        {
            NF4Weight.Quantize(dense, ScalarType.Float32, doubleQuant: true),
            NF4Weight.Quantize(dense, ScalarType.Float32, doubleQuant: false),
            Int8Weight.Quantize(dense, ScalarType.Float32),
        };
        try
        {
            foreach (var w in weights)
                foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
                {
                    w.ComputeDType = dtype;
                    var expected = w.DequantizeFloat32().to_type(dtype);
                    var actual = Run(module, w)!;
                    if (actual.to_type(ScalarType.Float32).ne(expected.to_type(ScalarType.Float32)).any().item<bool>())   // exact in fp32
                    {
                        failure = $"{w.Kind} → {dtype} differs from libtorch's dequantization";
                        break;
                    }
                }
        }
        finally { foreach (var w in weights) w.Dispose(); }
        return failure;
    });
}
