namespace QuanTA.Bench;

/// <summary>Device memory in use (<see cref="QuanTA.Core.Runtime.DeviceMemory"/>): compared against PyTorch's
/// <c>max_memory_reserved</c> and against the same quantity measured in the peer's process (bench/peer/run_peer.py).</summary>
static class GpuMemory
{
    /// <summary>Bytes in use on the current device, or null when the driver API is not reachable.</summary>
    public static long? UsedBytes() => QuanTA.Core.Runtime.DeviceMemory.UsedBytes();
}
