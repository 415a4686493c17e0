using System.Diagnostics;
using System.Text.Json;
using QuanTA.Bench;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

// quanta-bench: the GPU benchmark program. Prints one JSON line per measurement and, with --out DIR, writes them to
// DIR/quanta_dotnet_<shape>.json. Verbs:
//   probe                                     libtorch/CUDA check + bf16 GEMM TFLOP/s
//   (train and suite take --quantize none|int8|nf4: the decoder projections stored quantized, QLoRA-style)
//   train  --shape S --method M [--batch B] [--gqa plain] [--gradient-checkpointing 1] [--loss chunked|full]   training tokens/s, step ms, peak memory (M: quanta = the path the library picks | quanta-per-layer | quanta-stacked | quanta-stacked-recompute [--recompute-chunk N] | quanta-layerwise | quanta-layerwise-uncached | lora | frozen)
//   attn   --shape S [--batch B]              grouped-query attention, checkpointed node vs plain graph, forward + backward
//   layer  --shape S [--tokens N] [--reps R]  one adapted q/v projection, each fused-QuanTA mode: materialize/forward/backward ms
//   tokengrad --shape S [--tokens N] [--reps R]  ∂L/∂(block operators) of one q/v layer: token route vs ΔW route, and the choice
//   suite  --shape S [--out DIR]              check + train (all methods) + merged inference + decoding, one JSON file
//   memloop --shape S [--steps N] [--training-path P]  device/host memory every 50 steps of a long fused-QuanTA run (flat = no leak)
//   engine-check                              ΔW engine + bank paths vs the per-pair reference on this device (values, gradients)
//   ddp --nproc-per-node N ...               data-parallel over NCCL (DistributedBench.cs)
var verb = args.Length > 0 ? args[0] : "probe";
string Arg(string name, string def) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : def; }
TorchRuntime.Initialize();
var device = TorchRuntime.CudaAvailable ? torch.CUDA : torch.CPU;
Console.WriteLine($"libtorch: {TorchRuntime.LibTorchDirectory ?? "packaged"}; cuda: {TorchRuntime.CudaAvailable}; devices: {(TorchRuntime.CudaAvailable ? torch.cuda.device_count() : 0)}");
var opts = new JsonSerializerOptions { WriteIndented = true };
// --gqa plain: grouped-query attention keeps the repeated k/v for the backward (no checkpointed attention node)
QuanTA.Core.Models.Llama.LlamaAttention.CheckpointGroupedAttention = Arg("--gqa", "checkpoint") switch
{
    "checkpoint" => true, "plain" => false,
    var g => throw new ArgumentException($"--gqa '{g}' is not checkpoint or plain."),
};
int seq = int.Parse(Arg("--seq", "512"));
var quantization = Enum.TryParse<QuanTA.Core.Quantization.BaseQuantization>(Arg("--quantize", "none"), true, out var bq) && Enum.IsDefined(bq)
    ? bq : throw new ArgumentException($"--quantize '{Arg("--quantize", "none")}' is not none, int8 or nf4.");
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
    case "train":
    {
        var batch = Arg("--batch", "") is { Length: > 0 } bs ? int.Parse(bs) : (int?)null;
        var r = TrainBench.Run(Arg("--shape", "tinyllama"), Arg("--method", "quanta"), batch, seq, int.Parse(Arg("--steps", "10")), 3, quantization,
            gradientCheckpointing: Arg("--gradient-checkpointing", "0") == "1", chunkedLoss: Arg("--loss", "chunked") switch
            {
                "chunked" => true, "full" => false, var l => throw new ArgumentException($"--loss '{l}' is not chunked or full."),
            }, recomputeChunk: int.Parse(Arg("--recompute-chunk", QuanTA.Core.Adapters.QuanTABank.DefaultRecomputeChunk.ToString())));
        Console.WriteLine(JsonSerializer.Serialize(r));
        break;
    }
    case "suite":
    {
        if (device.type != DeviceType.CUDA) { Console.Error.WriteLine("suite needs a CUDA device (set QUANTA_LIBTORCH_DIR)."); return 2; }
        var shape = Arg("--shape", "tinyllama");
        var methods = Arg("--methods", "quanta,lora,frozen,quanta-per-layer").Split(',', StringSplitOptions.RemoveEmptyEntries);
        var result = new Dictionary<string, object> { ["gpu"] = Arg("--gpu-name", ""), ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd"), ["seq"] = seq };
        void Add(string key, Func<object> f)
        {
            try { var r = f(); result[key] = r; Console.WriteLine($"{key} {JsonSerializer.Serialize(r)}"); }
            catch (Exception e) { result[key] = new { error = e.Message }; Console.WriteLine($"{key} ERROR {e.Message}"); }
        }
        Add("check", () => InferenceBench.Check(shape));
        foreach (var m in methods) Add($"train_{m}", () => TrainBench.Run(shape, m, null, seq, 10, 3, quantization));
        if (Arg("--skip-infer", "0") != "1")
        {
            Add("merged_inference", () => InferenceBench.MergedForward(shape, seq));
            Add("decode", () => InferenceBench.Decode(shape));
        }
        var outDir = Arg("--out", "");
        if (outDir.Length > 0) { Directory.CreateDirectory(outDir); File.WriteAllText(Path.Combine(outDir, $"quanta_dotnet_{shape}{(quantization == QuanTA.Core.Quantization.BaseQuantization.None ? "" : "_" + quantization.ToString().ToLowerInvariant())}.json"), JsonSerializer.Serialize(result, opts)); }
        break;
    }
    case "memloop":   // memloop --shape S [--steps 300] [--every 50] [--training-path auto]: device/host memory over a long fused-QuanTA run
    {
        var pathName = Arg("--training-path", "auto");
        var r = MemoryLoopBench.Run(Arg("--shape", "tinyllama"), int.Parse(Arg("--steps", "300")), int.Parse(Arg("--every", "50")), seq, pathName);
        var outDir = Arg("--out", "");
        if (outDir.Length > 0) { Directory.CreateDirectory(outDir); File.WriteAllText(Path.Combine(outDir, $"memloop_{r["shape"]}_{r["training_path"]}.json"), JsonSerializer.Serialize(r, opts)); }
        break;
    }
    case "attn":   // attn --shape S [--batch B]: grouped-query attention, checkpointed node vs plain graph
    {
        var batch = Arg("--batch", "") is { Length: > 0 } bs ? int.Parse(bs) : (int?)null;
        var r = AttentionBench.Run(Arg("--shape", "tinyllama"), batch, seq);
        Console.WriteLine(JsonSerializer.Serialize(r));
        var outDir = Arg("--out", "");
        if (outDir.Length > 0) { Directory.CreateDirectory(outDir); File.WriteAllText(Path.Combine(outDir, $"attn_{r["shape"]}.json"), JsonSerializer.Serialize(r, opts)); }
        break;
    }
    case "layer":   // layer --shape S [--tokens N] [--reps R]: one adapted q/v projection per fused-QuanTA mode, phases timed
    {
        var rs = LayerBench.Run(Arg("--shape", "tinyllama"), int.Parse(Arg("--tokens", "2048")), int.Parse(Arg("--reps", "3")));
        foreach (var r in rs) Console.WriteLine(JsonSerializer.Serialize(r));
        var outDir = Arg("--out", "");
        if (outDir.Length > 0) { Directory.CreateDirectory(outDir); File.WriteAllText(Path.Combine(outDir, $"layer_{Arg("--shape", "tinyllama")}.json"), JsonSerializer.Serialize(rs, opts)); }
        break;
    }
    case "tokengrad":   // tokengrad --shape S [--tokens N] [--reps R]: ∂L/∂R_B of one layer, token route vs ΔW route
    {
        foreach (var r in TokenGradBench.Run(Arg("--shape", "tinyllama"), int.Parse(Arg("--tokens", "2048")), int.Parse(Arg("--reps", "3"))))
            Console.WriteLine(JsonSerializer.Serialize(r));
        break;
    }
    case "kernel-check": return KernelCheckBench.Run(device, args);   // CUDA kernels vs libtorch: values, gradients, timing (KernelCheckBench.cs)
    case "engine-check":   // engine-check: the ΔW engine and the bank's paths against the per-pair reference, on this device
    {
        int failed = 0;
        foreach (var r in EngineCheckBench.Run(device))
        {
            Console.WriteLine(JsonSerializer.Serialize(r));
            if (!(bool)r.GetType().GetProperty("ok")!.GetValue(r)!) failed++;
        }
        Console.WriteLine(JsonSerializer.Serialize(new { verb, failed }));
        return failed == 0 ? 0 : 1;
    }
    case "ddp":
        return DistributedBench.Run(args[1..]);
    default:
        Console.Error.WriteLine($"unknown verb '{verb}' (probe | train | suite | memloop | attn | layer | tokengrad | ddp)"); return 2;
}
return 0;
