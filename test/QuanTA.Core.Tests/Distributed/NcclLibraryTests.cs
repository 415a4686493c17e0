using QuanTA.Core.Distributed;

namespace QuanTA.Core.Tests.Distributed;

public class NcclLibraryTests
{
    [Fact]
    public void SearchOrderIsOptionThenEnvThenLibTorchThenPyTorchWheelThenSystem()
    {
        var env = new Dictionary<string, string> { ["QUANTA_NCCL_PATH"] = "/opt/nccl/lib/libnccl.so.2", ["QUANTA_LIBTORCH_DIR"] = "/py/site-packages/torch/lib" };
        var c = NcclLibrary.Candidates("/explicit/libnccl.so.2", k => env.GetValueOrDefault(k));
        if (QuanTA.Core.Runtime.TorchRuntime.LibTorchDirectory is not null) return; // a real libtorch dir overrides the env in this process
        Assert.Equal(new[]
        {
            "/explicit/libnccl.so.2",
            "/opt/nccl/lib/libnccl.so.2",
            "/py/site-packages/torch/lib/libnccl.so.2",
            "/py/site-packages/nvidia/nccl/lib/libnccl.so.2",
            "/py/site-packages/nvidia/cu13/lib/libnccl.so.2",
            "/py/site-packages/nvidia/cu12/lib/libnccl.so.2",
            "libnccl.so.2",
        }, c);
    }

    [Fact]
    public void AbsentNcclIsAClearErrorListingThePlacesTried()
    {
        if (NcclIsInstalled()) return; // this check is about machines without NCCL (CI)
        var e = Assert.Throws<DllNotFoundException>(() => NcclLibrary.Load("/nonexistent/nccl/"));
        Assert.Contains("/nonexistent/nccl/libnccl.so.2 (no such file)", e.Message);
        Assert.Contains("libnccl.so.2 (system loader search", e.Message);
        Assert.Contains("QUANTA_NCCL_PATH", e.Message);
    }

    [Fact]
    public void UniqueIdRoundTripsThrough128Bytes()
    {
        var bytes = Enumerable.Range(0, 128).Select(i => (byte)(255 - i)).ToArray();
        Assert.Equal(bytes, NcclUniqueId.FromArray(bytes).ToArray());
        Assert.Throws<ArgumentException>(() => NcclUniqueId.FromArray(new byte[127]));
    }

    static bool NcclIsInstalled()
    {
        if (System.Runtime.InteropServices.NativeLibrary.TryLoad("libnccl.so.2", out var h)) { System.Runtime.InteropServices.NativeLibrary.Free(h); return true; }
        return false;
    }
}
