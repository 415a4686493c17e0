using System.Runtime.InteropServices;

namespace QuanTA.Core.Kernels;

/// <summary>
/// The CUDA driver API calls the kernel layer needs (<c>libcuda.so.1</c>, present wherever an NVIDIA GPU is): the device's
/// compute capability, its primary context (the one libtorch's runtime API uses), loading compiled modules and launching.
/// Bound once per process with function pointers, as <c>Distributed/CudaRuntime.cs</c> binds libcudart.
/// </summary>
internal static unsafe class CudaDriver
{
    /// <summary>The driver library's file name.</summary>
    public const string FileName = "libcuda.so.1";

    static readonly object Gate = new();
    static bool _tried;
    static string? _failure;
    static delegate* unmanaged<uint, int> _init;
    static delegate* unmanaged<int*, int, int> _deviceGet;
    static delegate* unmanaged<int*, int, int, int> _deviceGetAttribute;
    static delegate* unmanaged<IntPtr*, int, int> _primaryCtxRetain;
    static delegate* unmanaged<IntPtr*, int> _ctxGetCurrent;
    static delegate* unmanaged<IntPtr, int> _ctxPushCurrent;
    static delegate* unmanaged<IntPtr*, int> _ctxPopCurrent;
    static delegate* unmanaged<IntPtr*, void*, int> _moduleLoadData;
    static delegate* unmanaged<IntPtr*, IntPtr, byte*, int> _moduleGetFunction;
    static delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int> _launchKernel;
    static delegate* unmanaged<int, byte**, int> _getErrorString;
    static delegate* unmanaged<int*, int> _driverGetVersion;
    static readonly Dictionary<int, IntPtr> PrimaryContexts = [];

    /// <summary>Binds the driver and runs <c>cuInit</c>; null on success, else why not (for the one-time log line).</summary>
    public static string? TryBind()
    {
        lock (Gate)
        {
            if (_tried) return _failure;
            _tried = true;
            try
            {
                if (!NativeLibrary.TryLoad(FileName, out var h))
                    return _failure = $"the CUDA driver ({FileName}) could not be loaded";
                IntPtr F(string name) => NativeLibrary.TryGetExport(h, name, out var p) ? p
                    : throw new EntryPointNotFoundException($"{FileName} has no export '{name}' (driver too old?)");
                _init = (delegate* unmanaged<uint, int>)F("cuInit");
                _deviceGet = (delegate* unmanaged<int*, int, int>)F("cuDeviceGet");
                _deviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)F("cuDeviceGetAttribute");
                _primaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)F("cuDevicePrimaryCtxRetain");
                _ctxGetCurrent = (delegate* unmanaged<IntPtr*, int>)F("cuCtxGetCurrent");
                _ctxPushCurrent = (delegate* unmanaged<IntPtr, int>)F("cuCtxPushCurrent_v2");
                _ctxPopCurrent = (delegate* unmanaged<IntPtr*, int>)F("cuCtxPopCurrent_v2");
                _moduleLoadData = (delegate* unmanaged<IntPtr*, void*, int>)F("cuModuleLoadData");
                _moduleGetFunction = (delegate* unmanaged<IntPtr*, IntPtr, byte*, int>)F("cuModuleGetFunction");
                _launchKernel = (delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int>)F("cuLaunchKernel");
                _getErrorString = (delegate* unmanaged<int, byte**, int>)F("cuGetErrorString");
                _driverGetVersion = (delegate* unmanaged<int*, int>)F("cuDriverGetVersion");
                Check(_init(0), "cuInit");
                return null;
            }
            catch (Exception e) when (e is EntryPointNotFoundException or InvalidOperationException)
            {
                return _failure = e.Message;
            }
        }
    }

    /// <summary>The driver's CUDA version as an integer (13000 for 13.0).</summary>
    public static int DriverVersion { get { int v = 0; if (_driverGetVersion != null) _driverGetVersion(&v); return v; } }

    /// <summary>Throws with the driver's own description of a non-zero <c>CUresult</c>.</summary>
    public static void Check(int result, string call)
    {
        if (result == 0) return;
        byte* text = null;
        if (_getErrorString != null) _getErrorString(result, &text);
        var message = text != null ? Marshal.PtrToStringAnsi((IntPtr)text) : null;
        throw new InvalidOperationException($"{call} failed: {message ?? "CUDA driver error"} (CUresult {result}).");
    }

    /// <summary>Compute capability (major, minor) of CUDA device <paramref name="ordinal"/>, e.g. (9, 0) for an H100/H200.</summary>
    public static (int Major, int Minor) ComputeCapability(int ordinal)
    {
        int dev, major, minor;
        Check(_deviceGet(&dev, ordinal), $"cuDeviceGet({ordinal})");
        Check(_deviceGetAttribute(&major, 75, dev), "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)");
        Check(_deviceGetAttribute(&minor, 76, dev), "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)");
        return (major, minor);
    }

    /// <summary>
    /// Makes device <paramref name="ordinal"/>'s primary context current until the scope is disposed: the context libtorch's
    /// runtime API created for that device, so modules, pointers and the legacy default stream are libtorch's. The calling
    /// thread's context is pushed and popped only when it differs (libtorch's threads usually have it current already).
    /// </summary>
    public static ContextScope Enter(int ordinal)
    {
        IntPtr ctx;
        lock (Gate)
        {
            if (!PrimaryContexts.TryGetValue(ordinal, out ctx))
            {
                int dev; Check(_deviceGet(&dev, ordinal), $"cuDeviceGet({ordinal})");
                IntPtr c; Check(_primaryCtxRetain(&c, dev), $"cuDevicePrimaryCtxRetain({ordinal})");
                PrimaryContexts[ordinal] = ctx = c;
            }
        }
        IntPtr current; Check(_ctxGetCurrent(&current), "cuCtxGetCurrent");
        if (current == ctx) return new ContextScope(false);
        Check(_ctxPushCurrent(ctx), "cuCtxPushCurrent");
        return new ContextScope(true);
    }

    /// <summary>Restores the thread's previous context when <see cref="Enter"/> had to push one.</summary>
    public readonly struct ContextScope(bool pushed) : IDisposable
    {
        /// <inheritdoc/>
        public void Dispose() { if (pushed) { IntPtr popped; _ctxPopCurrent(&popped); } }
    }

    /// <summary>Loads a CUBIN or PTX image into the current context.</summary>
    public static IntPtr LoadModule(byte[] image)
    {
        IntPtr module;
        fixed (byte* p = image) Check(_moduleLoadData(&module, p), "cuModuleLoadData");
        return module;
    }

    /// <summary>A kernel of a loaded module by its (extern "C") name.</summary>
    public static IntPtr GetFunction(IntPtr module, string name)
    {
        var bytes = System.Text.Encoding.ASCII.GetBytes(name + "\0");
        IntPtr f;
        fixed (byte* p = bytes) Check(_moduleGetFunction(&f, module, p), $"cuModuleGetFunction({name})");
        return f;
    }

    /// <summary>Launches <paramref name="function"/> on <paramref name="stream"/> (0: the legacy default stream) with a 1-D
    /// grid and block; <paramref name="args"/> holds one pointer to each kernel argument, in order.</summary>
    public static void Launch(IntPtr function, uint grid, uint block, IntPtr stream, void** args, string name)
        => Check(_launchKernel(function, grid, 1, 1, block, 1, 1, 0, stream, args, null), $"cuLaunchKernel({name}, grid {grid}, block {block})");
}
