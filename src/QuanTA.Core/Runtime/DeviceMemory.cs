using System.Runtime.InteropServices;

namespace QuanTA.Core.Runtime;

/// <summary>
/// Memory of the current CUDA device from the driver (<c>cuMemGetInfo_v2</c>), what nvidia-smi shows: the CUDA context plus
/// everything libtorch's caching allocator holds. TorchSharp exposes no allocator statistics. Call it from a thread that
/// has already used the device (libtorch made its context current there).
/// </summary>
public static partial class DeviceMemory
{
    [LibraryImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")]
    private static partial int CuMemGetInfo(out nuint free, out nuint total);

    /// <summary>(free, total) bytes of the current device, or null without a CUDA driver or current context.</summary>
    public static (long Free, long Total)? Query()
    {
        try { return CuMemGetInfo(out var free, out var total) == 0 ? ((long)free, (long)total) : null; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }

    /// <summary>Bytes in use on the current device (total − free), or null.</summary>
    public static long? UsedBytes() => Query() is { } q ? q.Total - q.Free : null;
}
