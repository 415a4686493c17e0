using System.Runtime.InteropServices;
using TorchSharp;

namespace QuanTA.Core.Runtime;

/// <summary>
/// One place that starts libtorch: optionally preloads a user-supplied libtorch directory (for CUDA without a
/// CUDA NuGet package, e.g. a PyTorch install's <c>torch/lib</c>), and resolves devices.
/// Call <see cref="Initialize"/> before the first use of <c>TorchSharp.torch</c>; every entry point of the library does.
/// </summary>
public static class TorchRuntime
{
    /// <summary>Environment variable naming a libtorch directory to preload (e.g. <c>$(python -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib</c>).</summary>
    public const string LibTorchDirEnv = "QUANTA_LIBTORCH_DIR";

    static readonly object Gate = new();
    static bool _initialized;
    static string? _loadedFrom;

    /// <summary>The libtorch directory that was preloaded, or null when the packaged libtorch is used.</summary>
    public static string? LibTorchDirectory => _loadedFrom;

    /// <summary>
    /// Loads libtorch. With <paramref name="libTorchDirectory"/> (or <see cref="LibTorchDirEnv"/>) set, the libraries in that
    /// directory are loaded by full path first, then TorchSharp's <c>libLibTorchSharp.so</c> from the application folder,
    /// so TorchSharp binds to them. Idempotent; thread-safe.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">the named directory does not exist or holds no libtorch.</exception>
    /// <exception cref="InvalidOperationException">TorchSharp's native part cannot be loaded (with what was found and what to do).</exception>
    public static void Initialize(string? libTorchDirectory = null)
    {
        lock (Gate)
        {
            if (_initialized) return;
            var dir = libTorchDirectory ?? Environment.GetEnvironmentVariable(LibTorchDirEnv);
            if (!string.IsNullOrWhiteSpace(dir)) PreloadFrom(dir);
            try
            {
                // Touch the native side once, so any failure surfaces here with a useful message.
                using var probe = torch.zeros(1);
            }
            catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or NotSupportedException)
            {
                throw new InvalidOperationException(
                    "TorchSharp's native library (libLibTorchSharp) could not be loaded. " +
                    "On Debian 12 / Ubuntu 22.04 the build output must contain the patched copy (QuanTA.Core's build targets do this; " +
                    "make sure your project references QuanTA.Core as a package or project and was rebuilt). " +
                    $"For CUDA, set {LibTorchDirEnv} to a libtorch directory such as a PyTorch install's torch/lib. " +
                    $"Inner error: {Flatten(e)}", e);
            }
            _initialized = true;
        }
    }

    static void PreloadFrom(string dir)
    {
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException($"{LibTorchDirEnv} / LibTorchDirectory names '{dir}', which does not exist. Expected a libtorch 'lib' folder holding libtorch.so.");
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("Preloading a libtorch directory is implemented for Linux only.");
        if (!File.Exists(Path.Combine(dir, "libtorch.so")))
            throw new DirectoryNotFoundException($"'{dir}' holds no libtorch.so. Expected a libtorch 'lib' folder (e.g. a PyTorch install's torch/lib).");
        foreach (var name in new[] { "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so" })
        {
            var path = Path.Combine(dir, name);
            if (File.Exists(path)) NativeLibrary.Load(path);
        }
        var tsNative = FindLibTorchSharp();
        if (tsNative != null) NativeLibrary.Load(tsNative);
        _loadedFrom = dir;
    }

    static string? FindLibTorchSharp()
    {
        var baseDir = AppContext.BaseDirectory;
        foreach (var candidate in new[]
                 {
                     Path.Combine(baseDir, "libLibTorchSharp.so"),
                     Path.Combine(baseDir, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
                 })
            if (File.Exists(candidate)) return candidate;
        return null;
    }

    static string Flatten(Exception e)
    {
        var parts = new List<string>();
        for (var x = e; x != null; x = x.InnerException) parts.Add(x.Message);
        return string.Join(" -> ", parts);
    }

    /// <summary>True when libtorch was built with CUDA and a GPU is visible.</summary>
    public static bool CudaAvailable { get { Initialize(); return torch.cuda.is_available(); } }

    /// <summary>
    /// Resolves the device to run on. <paramref name="gpuDeviceId"/> null → CPU. A GPU id asks for CUDA; when CUDA is not
    /// available, <paramref name="fallbackToCpu"/> decides between CPU and a clear error.
    /// </summary>
    public static torch.Device ResolveDevice(int? gpuDeviceId, bool fallbackToCpu)
    {
        Initialize();
        if (gpuDeviceId is null) return torch.CPU;
        if (torch.cuda.is_available())
        {
            var n = torch.cuda.device_count();
            if (gpuDeviceId.Value < 0 || gpuDeviceId.Value >= n)
                throw new ArgumentOutOfRangeException(nameof(gpuDeviceId), $"GPU {gpuDeviceId} was asked for but {n} CUDA device(s) are visible (ids 0..{n - 1}).");
            return torch.device(DeviceType.CUDA, gpuDeviceId.Value);
        }
        if (fallbackToCpu) return torch.CPU;
        throw new InvalidOperationException(
            $"CUDA device {gpuDeviceId} was asked for, but this libtorch has no usable CUDA (packaged: TorchSharp-cpu). " +
            $"Set {LibTorchDirEnv} to a CUDA libtorch directory (e.g. a PyTorch install's torch/lib), build with -p:TorchBackend=cuda " +
            "where TorchSharp-cuda-linux is served, or allow CPU fallback.");
    }

    /// <summary>Parses "cpu", "cuda", "cuda:1" into a device (with the same checks as <see cref="ResolveDevice"/>).</summary>
    public static torch.Device ParseDevice(string spec, bool fallbackToCpu = false)
    {
        spec = spec.Trim().ToLowerInvariant();
        if (spec == "cpu") return ResolveDevice(null, false);
        if (spec == "cuda") return ResolveDevice(0, fallbackToCpu);
        if (spec.StartsWith("cuda:") && int.TryParse(spec[5..], out var id)) return ResolveDevice(id, fallbackToCpu);
        throw new ArgumentException($"Unknown device '{spec}'. Expected 'cpu', 'cuda' or 'cuda:N'.", nameof(spec));
    }

    /// <summary>Parses a weight precision: null, "" or "auto" (the device default: fp32 on CPU, bf16 on CUDA), "fp32",
    /// "fp16", "bf16" (or float32 / float16 / bfloat16). <paramref name="setting"/> names the option in the error.</summary>
    public static torch.ScalarType? ParseDType(string? spec, string setting = "dtype") => spec?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => null,
        "fp32" or "float32" => torch.ScalarType.Float32,
        "fp16" or "float16" => torch.ScalarType.Float16,
        "bf16" or "bfloat16" => torch.ScalarType.BFloat16,
        _ => throw new ArgumentException($"{setting} '{spec}' is not one of fp32, fp16, bf16."),
    };
}
