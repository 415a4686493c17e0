using System.Runtime.InteropServices;
using QuanTA.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Kernels;

/// <summary>
/// What every kernel shares around its launch: the type suffix of its entry points, and the once-per-module self-check
/// that guards a GPU the kernel was never checked on. The check itself (small inputs through the kernel and through the
/// libtorch expression on that device) belongs to each kernel; this class runs it once per loaded module, remembers the
/// answer, and reports a disagreement once. A kernel or driver error counts as a disagreement; running out of device
/// memory does not (the answer is not remembered, and the next use checks again).
/// </summary>
internal static class KernelSelfCheck
{
    static readonly Dictionary<LoadedModule, bool> Results = [];

    /// <summary>The suffix of a kernel's entry point for a tensor type (<c>f32</c>, <c>bf16</c>, <c>f16</c>), or null for a type
    /// the kernels do not cover.</summary>
    public static string? TypeSuffix(ScalarType t) => t switch
    {
        ScalarType.Float32 => "f32", ScalarType.BFloat16 => "bf16", ScalarType.Float16 => "f16", _ => null,
    };

    /// <summary>
    /// True when <paramref name="module"/>'s kernels agree with libtorch on its device: <paramref name="check"/> runs the first
    /// time (inside a dispose scope, without gradients) and returns null when they agree, else why not; the answer is kept
    /// for the module. A disagreement is written once to <paramref name="log"/> (standard error when null).
    /// </summary>
    public static bool Passed(LoadedModule module, Func<string?> check, Action<string>? log = null)
    {
        lock (Results)
        {
            if (Results.TryGetValue(module, out var known)) return known;
            string? failure;
            try
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                failure = check();
            }
            catch (Exception e) when (OutOfMemoryOnDeviceException.IsDeviceOutOfMemory(e))
            {
                return false;                                                        // this use falls back; the next one checks again
            }
            catch (Exception e) when (e is InvalidOperationException or ExternalException)
            {
                failure = e.Message;
            }
            if (failure != null)
                (log ?? Console.Error.WriteLine)($"quanta: CUDA kernel {module.File} disagrees with libtorch on cuda:{module.Device} ({failure}); using libtorch's path there.");
            return Results[module] = failure == null;
        }
    }

    /// <summary>‖a − b‖ / ‖b‖ in fp64 (‖a − b‖ when b is zero; infinity when not finite).</summary>
    public static double RelErr(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var d = (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).norm().item<double>();
        var n = b.to_type(ScalarType.Float64).norm().item<double>();
        return double.IsFinite(d) ? (n == 0 ? d : d / n) : double.PositiveInfinity;
    }
}
