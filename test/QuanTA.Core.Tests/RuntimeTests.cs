using QuanTA.Core.Runtime;
using TorchSharp;

namespace QuanTA.Core.Tests;

public class RuntimeTests
{
    [Fact]
    public void TorchSharpLoadsAndComputesWithoutSystemChanges()
    {
        TorchRuntime.Initialize();
        using var a = torch.arange(6, dtype: torch.float32).reshape(2, 3);
        using var b = a.matmul(a.t());
        Assert.Equal(new[] { 5f, 14f, 14f, 50f }, b.data<float>().ToArray());
    }

    [Fact]
    public void AskingForCudaWithoutItIsAClearErrorOrFallsBack()
    {
        if (TorchRuntime.CudaAvailable) return; // this check is about CPU-only libtorch
        var e = Assert.Throws<InvalidOperationException>(() => TorchRuntime.ResolveDevice(0, fallbackToCpu: false));
        Assert.Contains(TorchRuntime.LibTorchDirEnv, e.Message);
        Assert.Equal(DeviceType.CPU, TorchRuntime.ResolveDevice(0, fallbackToCpu: true).type);
    }

    [Fact]
    public void UnknownDeviceStringIsRejected()
        => Assert.Throws<ArgumentException>(() => TorchRuntime.ParseDevice("tpu"));
}
