using System.Runtime.InteropServices;

namespace QuanTA.Bench;

/// <summary>
/// Device memory in use, from the CUDA driver (<c>cuMemGetInfo_v2</c>: total − free), i.e. what nvidia-smi shows for the
/// device: the CUDA context plus everything libtorch's caching allocator has reserved. TorchSharp exposes no allocator
/// statistics, so the benchmark compares this against PyTorch's <c>max_memory_reserved</c> (+ the same context baseline).
/// </summary>
static partial class GpuMemory
{
    [LibraryImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")]
    private static partial int CuMemGetInfo(out nuint free, out nuint total);

    /// <summary>Bytes in use on the current device, or null when the driver API is not reachable.</summary>
    public static long? UsedBytes()
    {
        try { return CuMemGetInfo(out var free, out var total) == 0 ? (long)(total - free) : null; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }
}
