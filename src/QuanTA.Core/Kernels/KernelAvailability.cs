using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Kernels;

/// <summary>
/// The one place that decides whether QuanTA's own CUDA kernels run or the libtorch expressions do. A kernel is used when the
/// tensor is on a CUDA device, <see cref="EnvironmentVariable"/> is not <c>off</c>, the CUDA driver and NVRTC bind, the
/// kernel's source compiles for that GPU and its self-check there agrees with libtorch; otherwise the caller runs its libtorch
/// path. On by default since the kernels passed <c>quanta-bench kernel-check</c> on an H200 (docs/kernels.md). The process-wide decision and its
/// reason are written once to standard error; a kernel that fails to compile on a device is reported once too. CPU
/// tensors never trigger a bind (or a log line).
/// </summary>
public static class KernelAvailability
{
    /// <summary>Environment variable: <c>off</c> (or <c>0</c>, <c>false</c>) keeps the libtorch path everywhere, e.g. to measure
    /// the kernels' effect; unset, <c>auto</c> or <c>on</c> (<c>1</c>, <c>true</c>) lets the kernels run where they bind.</summary>
    public const string EnvironmentVariable = "QUANTA_KERNELS";

    internal static KernelGate Gate { get; } = new(Environment.GetEnvironmentVariable, BindNative, m => Console.Error.WriteLine(m));

    /// <summary>True when kernels may run on devices of type <paramref name="type"/> (decides and logs on the first CUDA query).</summary>
    public static bool EnabledFor(DeviceType type) => Gate.EnabledFor(type);

    /// <summary>Why kernels are on or off, once decided (null before the first CUDA query).</summary>
    public static string? Reason => Gate.Reason;

    /// <summary>The loaded module of kernel source <paramref name="file"/> for <paramref name="t"/>'s device, or null when the
    /// libtorch path must run (CPU, switched off, no NVRTC or driver, or the source did not compile for this GPU).</summary>
    internal static LoadedModule? ModuleFor(Tensor t, string file) => ModuleFor(t.device, file);

    /// <summary>The same for a device (e.g. a quantized weight's, which is not one tensor).</summary>
    internal static LoadedModule? ModuleFor(Device device, string file)
    {
        if (!Gate.EnabledFor(device.type)) return null;
        return Gate.Module(file, device.index < 0 ? 0 : device.index, KernelModules.Load);
    }

    static string? BindNative()
    {
        var driver = CudaDriver.TryBind();
        if (driver != null) return driver;
        var nvrtc = Nvrtc.TryBind();
        if (nvrtc != null) return nvrtc;
        return null;
    }

    internal static string DescribeBound() =>
        $"NVRTC {Nvrtc.Version.Major}.{Nvrtc.Version.Minor} from {Nvrtc.LoadedFrom}, driver CUDA {CudaDriver.DriverVersion / 1000}.{CudaDriver.DriverVersion % 1000 / 10}";
}

/// <summary>
/// The decision behind <see cref="KernelAvailability"/>, with its inputs injectable (environment, native binding, log) so the
/// decide-once and never-on-CPU rules can be tested without a GPU.
/// </summary>
internal sealed class KernelGate(Func<string, string?> getEnv, Func<string?> bind, Action<string> log)
{
    readonly object _gate = new();
    readonly Dictionary<(string File, int Device), LoadedModule?> _modules = [];
    volatile int _state;                                          // 0 undecided, 1 on, 2 off

    /// <summary>Why kernels are on or off (null until decided).</summary>
    public string? Reason { get; private set; }

    /// <summary>True when kernels may run for this device type; the first CUDA query decides, once per process.</summary>
    public bool EnabledFor(DeviceType type)
    {
        if (type != DeviceType.CUDA) return false;
        if (_state != 0) return _state == 1;
        lock (_gate)
        {
            if (_state != 0) return _state == 1;
            var env = getEnv(KernelAvailability.EnvironmentVariable)?.Trim().ToLowerInvariant();
            string? failure;
            if (env is "off" or "0" or "false") failure = $"{KernelAvailability.EnvironmentVariable}={env}";
            else if (env is not (null or "" or "auto" or "on" or "1" or "true"))
                failure = $"{KernelAvailability.EnvironmentVariable}={env} is not one of on, off, auto";
            else
            {
                try { failure = bind(); }
                catch (Exception e) { failure = e.Message; }
            }
            Reason = failure == null ? SafeDescribe() : failure;
            log(failure == null
                ? $"quanta: CUDA kernels on ({Reason}); set {KernelAvailability.EnvironmentVariable}=off for the libtorch path."
                : $"quanta: CUDA kernels off, using libtorch's path: {Reason}.");
            _state = failure == null ? 1 : 2;
            return failure == null;
        }
    }

    static string SafeDescribe()
    {
        try { return KernelAvailability.DescribeBound(); }
        catch (Exception e) { return $"bound ({e.Message})"; }
    }

    /// <summary>The module of <paramref name="file"/> on device <paramref name="device"/> (loaded by <paramref name="load"/>
    /// once), or null when it failed to compile or load there, which is logged once.</summary>
    public LoadedModule? Module(string file, int device, Func<string, int, LoadedModule> load)
    {
        lock (_gate)
        {
            if (_modules.TryGetValue((file, device), out var known)) return known;
            LoadedModule? m = null;
            try { m = load(file, device); }
            catch (Exception e) when (e is InvalidOperationException or NotSupportedException or FileNotFoundException or EntryPointNotFoundException)
            {
                log($"quanta: CUDA kernel {file} is not available on cuda:{device}, using libtorch's path there: {e.Message}");
            }
            return _modules[(file, device)] = m;
        }
    }
}
