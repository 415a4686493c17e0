using System.Runtime.InteropServices;
using QuanTA.Core.Runtime;

namespace QuanTA.Core.Distributed;

/// <summary>
/// The few CUDA calls the NCCL communicator needs: select the device, query/synchronize the legacy default stream.
/// Bound from the <c>libcudart</c> that libtorch already loaded; when that cannot be found, from the driver
/// (<c>libcuda.so.1</c>, present wherever a GPU is), where making the device's primary context current is what
/// <c>cudaSetDevice</c> does.
/// </summary>
internal static unsafe class CudaRuntime
{
    static readonly object Gate = new();
    static bool _tried, _driver;
    static delegate* unmanaged<int, int> _setDevice;                  // cudaSetDevice(int)
    static delegate* unmanaged<IntPtr, int> _streamQuery;             // cudaStreamQuery / cuStreamQuery
    static delegate* unmanaged<IntPtr, int> _streamSynchronize;       // cudaStreamSynchronize / cuStreamSynchronize
    static delegate* unmanaged<int, IntPtr> _getErrorString;          // cudaGetErrorString
    static delegate* unmanaged<IntPtr*, uint, int> _eventCreate;      // cudaEventCreateWithFlags / cuEventCreate
    static delegate* unmanaged<IntPtr, IntPtr, int> _eventRecord;     // cudaEventRecord / cuEventRecord
    static delegate* unmanaged<IntPtr, int> _eventQuery;              // cudaEventQuery / cuEventQuery
    static delegate* unmanaged<IntPtr, int> _eventDestroy;            // cudaEventDestroy / cuEventDestroy_v2
    // driver API
    static delegate* unmanaged<uint, int> _cuInit;
    static delegate* unmanaged<int*, int, int> _cuDeviceGet;
    static delegate* unmanaged<IntPtr*, int, int> _cuDevicePrimaryCtxRetain;
    static delegate* unmanaged<IntPtr, int> _cuCtxSetCurrent;
    static readonly Dictionary<int, IntPtr> PrimaryContexts = new();

    static void Bind()
    {
        lock (Gate)
        {
            if (_tried) return;
            _tried = true;
            var names = new List<string> { "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so" };
            var torchDir = TorchRuntime.LibTorchDirectory;
            if (torchDir != null)
                foreach (var sub in new[] { "cu13/lib", "cuda_runtime/lib" })
                    foreach (var n in new[] { "libcudart.so.13", "libcudart.so.12" })
                        names.Add(Path.GetFullPath(Path.Combine(torchDir, "..", "..", "nvidia", sub, n)));
            foreach (var n in names)
            {
                if (n.Contains('/') && !File.Exists(n)) continue;
                if (!NativeLibrary.TryLoad(n, out var h)) continue;
                if (!NativeLibrary.TryGetExport(h, "cudaSetDevice", out var sd)) continue;
                _setDevice = (delegate* unmanaged<int, int>)sd;
                _streamQuery = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(h, "cudaStreamQuery");
                _streamSynchronize = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(h, "cudaStreamSynchronize");
                _getErrorString = (delegate* unmanaged<int, IntPtr>)NativeLibrary.GetExport(h, "cudaGetErrorString");
                _eventCreate = (delegate* unmanaged<IntPtr*, uint, int>)NativeLibrary.GetExport(h, "cudaEventCreateWithFlags");
                _eventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)NativeLibrary.GetExport(h, "cudaEventRecord");
                _eventQuery = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(h, "cudaEventQuery");
                _eventDestroy = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(h, "cudaEventDestroy");
                return;
            }
            if (NativeLibrary.TryLoad("libcuda.so.1", out var d))
            {
                _driver = true;
                _cuInit = (delegate* unmanaged<uint, int>)NativeLibrary.GetExport(d, "cuInit");
                _cuDeviceGet = (delegate* unmanaged<int*, int, int>)NativeLibrary.GetExport(d, "cuDeviceGet");
                _cuDevicePrimaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)NativeLibrary.GetExport(d, "cuDevicePrimaryCtxRetain");
                _cuCtxSetCurrent = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(d, "cuCtxSetCurrent");
                _streamQuery = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(d, "cuStreamQuery");
                _streamSynchronize = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(d, "cuStreamSynchronize");
                _eventCreate = (delegate* unmanaged<IntPtr*, uint, int>)NativeLibrary.GetExport(d, "cuEventCreate");
                _eventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)NativeLibrary.GetExport(d, "cuEventRecord");
                _eventQuery = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(d, "cuEventQuery");
                _eventDestroy = (delegate* unmanaged<IntPtr, int>)NativeLibrary.GetExport(d, "cuEventDestroy_v2");
            }
        }
    }

    static void Check(int err, string call)
    {
        if (err == 0) return;
        var text = !_driver && _getErrorString != null ? Marshal.PtrToStringAnsi(_getErrorString(err)) : $"CUDA {(_driver ? "driver " : "")}error {err}";
        throw new InvalidOperationException($"{call} failed: {text} (code {err}).");
    }

    /// <summary>Makes <paramref name="device"/> the calling thread's current CUDA device (for NCCL and the stream calls).</summary>
    public static void SetDevice(int device)
    {
        Bind();
        if (_setDevice != null) { Check(_setDevice(device), $"cudaSetDevice({device})"); return; }
        if (!_driver)
            throw new DllNotFoundException($"Neither the CUDA runtime (libcudart) nor the driver (libcuda.so.1) could be loaded to select GPU {device}. Is this a GPU machine with a CUDA libtorch ({TorchRuntime.LibTorchDirEnv})?");
        lock (Gate)
        {
            if (!PrimaryContexts.TryGetValue(device, out var ctx))
            {
                Check(_cuInit(0), "cuInit");
                int dev; Check(_cuDeviceGet(&dev, device), $"cuDeviceGet({device})");
                IntPtr c; Check(_cuDevicePrimaryCtxRetain(&c, dev), $"cuDevicePrimaryCtxRetain({device})");
                PrimaryContexts[device] = ctx = c;
            }
            Check(_cuCtxSetCurrent(ctx), $"cuCtxSetCurrent(device {device})");
        }
    }

    /// <summary>True when all work queued on <paramref name="stream"/> is done; throws on a CUDA error.</summary>
    public static bool StreamDone(IntPtr stream)
    {
        Bind();
        if (_streamQuery == null) return true;
        var e = _streamQuery(stream);
        if (e == 600) return false; // cudaErrorNotReady / CUDA_ERROR_NOT_READY
        Check(e, "cudaStreamQuery");
        return true;
    }

    /// <summary>Waits for all work queued on <paramref name="stream"/>.</summary>
    public static void StreamSynchronize(IntPtr stream)
    {
        Bind();
        if (_streamSynchronize != null) Check(_streamSynchronize(stream), "cudaStreamSynchronize");
    }

    /// <summary>Records a timing-free event on <paramref name="stream"/> after the work queued so far.</summary>
    public static IntPtr RecordEvent(IntPtr stream)
    {
        Bind();
        if (_eventCreate == null) throw new DllNotFoundException("CUDA events are not available (no libcudart or libcuda.so.1).");
        IntPtr e;
        Check(_eventCreate(&e, 0x02 /* cudaEventDisableTiming = CU_EVENT_DISABLE_TIMING */), "cudaEventCreateWithFlags");
        var rc = _eventRecord(e, stream);
        if (rc != 0) { _eventDestroy(e); Check(rc, "cudaEventRecord"); }
        return e;
    }

    /// <summary>True when the work before the event has finished; throws on a CUDA error.</summary>
    public static bool EventDone(IntPtr e)
    {
        var rc = _eventQuery(e);
        if (rc == 600) return false; // cudaErrorNotReady / CUDA_ERROR_NOT_READY
        Check(rc, "cudaEventQuery");
        return true;
    }

    /// <summary>Frees an event made by <see cref="RecordEvent"/>.</summary>
    public static void DestroyEvent(IntPtr e) { if (_eventDestroy != null) _eventDestroy(e); }
}
