using System.Diagnostics;
using QuanTA.Core.Distributed;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Distributed;

/// <summary>
/// Checks the NCCL binding's marshalling on CPU against a stand-in library with NCCL's C signatures
/// (fixtures/fake-nccl/fake_nccl.c, compiled here with the system C compiler). The GPU run checks real NCCL.
/// </summary>
public class NcclBindingTests
{
    static string BuildFake()
    {
        var src = Path.Combine(AppContext.BaseDirectory, "fixtures", "fake-nccl", "fake_nccl.c");
        var dir = Directory.CreateTempSubdirectory("quanta-fake-nccl-").FullName;
        var lib = Path.Combine(dir, "libnccl.so.2");
        try
        {
            using var p = Process.Start(new ProcessStartInfo("cc", $"-shared -fPIC -o \"{lib}\" \"{src}\"") { UseShellExecute = false, RedirectStandardError = true })!;
            var err = p.StandardError.ReadToEnd(); p.WaitForExit();
            Assert.True(p.ExitCode == 0, err);
            return lib;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("This test compiles fixtures/fake-nccl/fake_nccl.c and needs a C compiler 'cc' on PATH " +
                                                "(Debian: apt-get install gcc).", e);
        }
    }

    [Fact]
    public unsafe void CallsReachNcclWithTheRightArguments()
    {
        TorchRuntime.Initialize();
        var path = BuildFake();
        var lib = NcclLibrary.LoadFirst(new[] { path });
        Assert.Equal(22703, lib.Version);

        NcclUniqueId id;
        lib.Check(lib.GetUniqueId(&id), "ncclGetUniqueId");
        var viaStore = NcclUniqueId.FromArray(id.ToArray());            // as rank 1 would rebuild it from the store
        IntPtr c0;
        lib.Check(lib.CommInitRank(&c0, 3, viaStore, 1), "ncclCommInitRank"); // fails (4) if the id arrived corrupted
        var comm = c0;
        Assert.Equal((IntPtr)0x1234, comm);

        using var t = arange(10, dtype: ScalarType.Float32).narrow(0, 2, 5).contiguous();
        var ptr = NcclCommunicator.DataPointer(t);
        lib.Check(lib.AllReduce(ptr, ptr, 5, 7, 0, comm, IntPtr.Zero), "ncclAllReduce sum");
        Assert.Equal(new[] { 6f, 9f, 12f, 15f, 18f }, t.data<float>().ToArray());   // 3 ranks × x
        lib.Check(lib.AllReduce(ptr, ptr, 5, 7, 4, comm, IntPtr.Zero), "ncclAllReduce avg");
        Assert.Equal(new[] { 4006f, 4009f, 4012f, 4015f, 4018f }, t.data<float>().ToArray());

        var e = Assert.Throws<NcclException>(() => lib.Check(lib.AllReduce(ptr, ptr, 5, 9, 0, comm, IntPtr.Zero), "ncclAllReduce bf16"));
        Assert.Equal(5, e.Result);
        Assert.Contains("invalid usage", e.Message);
        int asyncErr;
        lib.Check(lib.CommGetAsyncError(comm, &asyncErr), "ncclCommGetAsyncError");
        Assert.Equal(0, asyncErr);
        Assert.Equal(6, lib.Broadcast(ptr, ptr, 5, 7, 0, comm, IntPtr.Zero));          // root 0 ≠ rank 1 in the stand-in
    }

    [Fact]
    public void NvlsSwitchReachesTheNativeEnvironment()
    {
        NcclCommunicator.SetNativeEnvironment("QUANTA_TEST_NATIVE_ENV", "0");
        Assert.Equal("0", System.Runtime.InteropServices.Marshal.PtrToStringAnsi(getenv("QUANTA_TEST_NATIVE_ENV")));
    }

    [System.Runtime.InteropServices.DllImport("libc")]
    static extern IntPtr getenv([System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string name);
}
