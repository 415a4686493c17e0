using System.Diagnostics;
using QuanTA.Core.Kernels;
using QuanTA.Core.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// The dequantization kernel (<see cref="DequantizeKernel"/>) against the libtorch path it replaces
/// (<see cref="QuantizedWeight.DequantizeFloat32"/> then a cast): NF4 with and without double quantization and Int8, at
/// LLaMA-7B's projection shapes and an odd size (the last byte half used), into fp32, bf16 and fp16. The kernel repeats the
/// libtorch path's arithmetic with the same roundings, so the bound is 0: every value must be bit-identical. Then the time
/// of both for one (11008, 4096) projection.
/// </summary>
public static class DequantizeKernelCheck
{
    static QuantizedWeight Make(string kind, Tensor dense, ScalarType dtype) => kind switch
    {
        "nf4" => NF4Weight.Quantize(dense, dtype, doubleQuant: true),
        "nf4-plain" => NF4Weight.Quantize(dense, dtype, doubleQuant: false),
        _ => Int8Weight.Quantize(dense, dtype),
    };

    /// <summary>One JSON-ready row per case; "ok" when the kernel's values equal the libtorch path's bit for bit.</summary>
    public static IEnumerable<object> Check(Device device)
    {
        ulong seed = 100;
        foreach (var (rows, cols) in new[] { (129L, 257L), (4096L, 4096L), (11008L, 4096L) })
            foreach (var kind in new[] { "nf4", "nf4-plain", "int8" })
                foreach (var dtype in new[] { ScalarType.BFloat16, ScalarType.Float32, ScalarType.Float16 })
                {
                    if (rows > 129 && dtype == ScalarType.Float16) continue;
                    using var scope = NewDisposeScope();
                    using var g = new Generator(seed++);
                    var dense = (randn([rows, cols], generator: g) * 0.02).to(device);
                    using var w = Make(kind, dense, dtype);
                    var kernel = DequantizeKernel.TryDequantize(w);
                    if (kernel is null)
                    {
                        yield return new { check = "dequantize", kind, error = $"kernel not used: {KernelAvailability.Reason}", ok = false };
                        continue;
                    }
                    var reference = w.DequantizeFloat32().to_type(dtype);
                    long differing = kernel.to_type(ScalarType.Float32).ne(reference.to_type(ScalarType.Float32)).sum().item<long>();
                    double maxAbs = (kernel.to_type(ScalarType.Float64) - reference.to_type(ScalarType.Float64)).abs().max().item<double>();
                    yield return new
                    {
                        check = "dequantize", kind, rows, cols, dtype = dtype.ToString(), bound = 0.0, differing_values = differing,
                        max_abs_diff = maxAbs, same_dtype = kernel.dtype == reference.dtype, ok = differing == 0 && kernel.dtype == reference.dtype,
                    };
                }
    }

    /// <summary>ms per dequantization of one (11008, 4096) projection into bf16, kernel and libtorch path.</summary>
    public static IEnumerable<object> Time(Device device, int reps = 50)
    {
        foreach (var kind in new[] { "nf4", "int8" })
        {
            using var scope = NewDisposeScope();
            using var g = new Generator(7);
            var dense = (randn([11008, 4096], generator: g) * 0.02).to(device);
            using var w = Make(kind, dense, ScalarType.BFloat16);
            var sw = new Stopwatch();
            double Ms(Func<Tensor> f)
            {
                for (int i = 0; i < reps + 5; i++)
                {
                    if (i == 5) { cuda.synchronize(); sw.Restart(); }
                    using var s = NewDisposeScope();
                    f();
                }
                cuda.synchronize();
                return sw.Elapsed.TotalMilliseconds / reps;
            }
            double k = Ms(() => DequantizeKernel.TryDequantize(w) ?? throw new InvalidOperationException("kernel not used"));
            double l = Ms(() => w.DequantizeFloat32().to_type(ScalarType.BFloat16));
            yield return new { timing = "dequantize", kind, rows = 11008, cols = 4096, dtype = "BFloat16", reps, kernel_ms = k, libtorch_ms = l, speedup = l / k };
        }
    }
}
