using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>The error measure and bounds the GPU checks (engine-check, kernel-check) report against.</summary>
static class CheckErrors
{
    /// <summary>Norm-wise relative error ‖a − b‖ / ‖b‖ in fp64 (‖a − b‖ when b is zero).</summary>
    public static double RelErr(Tensor a, Tensor b)
    {
        using var _ = NewDisposeScope();
        var d = (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).norm().item<double>();
        var n = b.to_type(ScalarType.Float64).norm().item<double>();
        return n == 0 ? d : d / n;
    }

    /// <summary>A kernel's bound against libtorch: fp32 1e-5; fp16 1e-3 and bf16 8e-3, one 16-bit ulp (2⁻¹⁰ resp. 2⁻⁷
    /// relative) per element (justified in KernelCheckBench).</summary>
    public static double KernelBound(ScalarType t) => t switch { ScalarType.Float32 => 1e-5, ScalarType.Float16 => 1e-3, _ => 8e-3 };
}
