using System.Diagnostics;
using System.Text.Json;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

// quanta-bench: GPU benchmark program. Verbs: probe (libtorch/CUDA check + bf16 GEMM TFLOP/s).
var verb = args.Length > 0 ? args[0] : "probe";
TorchRuntime.Initialize();
var device = TorchRuntime.CudaAvailable ? torch.CUDA : torch.CPU;
Console.WriteLine($"libtorch: {TorchRuntime.LibTorchDirectory ?? "packaged"}; cuda: {TorchRuntime.CudaAvailable}; devices: {(TorchRuntime.CudaAvailable ? torch.cuda.device_count() : 0)}");
switch (verb)
{
    case "probe":
    {
        int n = device.type == DeviceType.CUDA ? 8192 : 512;
        var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
        using var a = randn(n, n, dtype: dtype, device: device);
        using var b = randn(n, n, dtype: dtype, device: device);
        for (int i = 0; i < 3; i++) using (var c = a.matmul(b)) { }
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        var sw = Stopwatch.StartNew(); int reps = 10;
        for (int i = 0; i < reps; i++) using (var c = a.matmul(b)) { }
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        var tflops = 2.0 * n * n * n * reps / sw.Elapsed.TotalSeconds / 1e12;
        Console.WriteLine(JsonSerializer.Serialize(new { verb, n, dtype = dtype.ToString(), tflops = Math.Round(tflops, 1) }));
        break;
    }
    default:
        Console.Error.WriteLine($"unknown verb '{verb}'"); return 2;
}
return 0;
