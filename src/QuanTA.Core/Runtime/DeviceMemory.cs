using System.Runtime.InteropServices;

namespace QuanTA.Core.Runtime;

/// <summary>
/// Memory of a CUDA device from the driver (<c>cuMemGetInfo_v2</c>), what nvidia-smi shows: the CUDA context plus
/// everything libtorch's caching allocator holds. TorchSharp exposes no allocator statistics.
/// </summary>
public static partial class DeviceMemory
{
    [LibraryImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")]
    private static partial int CuMemGetInfo(out nuint free, out nuint total);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuDeviceGet")]
    private static partial int CuDeviceGet(out int device, int ordinal);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuDevicePrimaryCtxRetain")]
    private static partial int CuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
    private static partial int CuDevicePrimaryCtxRelease(int device);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuCtxPushCurrent_v2")]
    private static partial int CuCtxPushCurrent(IntPtr context);
    [LibraryImport("libcuda.so.1", EntryPoint = "cuCtxPopCurrent_v2")]
    private static partial int CuCtxPopCurrent(out IntPtr context);

    /// <summary>(free, total) bytes of the device current on this thread (the one libtorch last used here), or null without
    /// a CUDA driver or current context.</summary>
    public static (long Free, long Total)? Query()
    {
        try { return CuMemGetInfo(out var free, out var total) == 0 ? ((long)free, (long)total) : null; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }

    /// <summary>(free, total) bytes of CUDA device <paramref name="ordinal"/>, read in its primary context (the one libtorch
    /// uses) pushed for the call only, so this thread's current device is left as it was; null without a CUDA driver.</summary>
    public static (long Free, long Total)? Query(int ordinal)
    {
        try
        {
            if (CuDeviceGet(out var dev, ordinal) != 0 || CuDevicePrimaryCtxRetain(out var ctx, dev) != 0) return null;
            try
            {
                if (CuCtxPushCurrent(ctx) != 0) return null;
                try { return CuMemGetInfo(out var free, out var total) == 0 ? ((long)free, (long)total) : null; }
                finally { CuCtxPopCurrent(out _); }
            }
            finally { CuDevicePrimaryCtxRelease(dev); }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }

    /// <summary>Bytes in use on the current device (total − free), or null.</summary>
    public static long? UsedBytes() => Query() is { } q ? q.Total - q.Free : null;
}
