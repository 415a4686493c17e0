using QuanTA.Core.Runtime;
using System.Diagnostics;
using QuanTA.Core.Adapters;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Training;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// Memory safety over a long run: hundreds of fused-QuanTA training steps on a LLaMA shape, sampling device memory in use
/// (CUDA driver) and the process's resident set every <c>every</c> steps. Flat columns after the first steps = no leak.
/// </summary>
static class MemoryLoopBench
{
    public static Dictionary<string, object> Run(string shape, int steps, int every, int seq, string pathName = "auto")
    {
        var (config, layout, batch) = LlamaShapes.Get(shape);
        var dev = TrainBench.Dev;
        using var model = new LlamaForCausalLM(config, ScalarType.BFloat16, dev);
        TrainBench.RandomInit(model);
        AdapterInjector.Inject(model, new QuanTAConfig { Layout = layout, Seed = 0 }, TargetModules.Names("q_proj", "v_proj"));
        var path = TrainBench.ResolvePath(pathName, model, ScalarType.BFloat16);
        if (!path.UsesBank) throw new ArgumentException($"memloop measures a fused path; {pathName} resolved to {QuanTATrainingPaths.Name(path.Path)} here.");
        using var bank = QuanTABank.Create(model, path.Path);
        var trainable = bank.OptimizerParameters(model).Select(p => p.Parameter).ToArray();
        using var opt = new MultiTensorAdamW(trainable, lr: 1e-4);                 // the library's optimizer (Trainer)
        using var ids = randint(0, config.VocabSize, [batch, seq], dtype: ScalarType.Int64, device: dev);
        model.train();
        var samples = new List<object>();
        var proc = Process.GetCurrentProcess();
        for (int s = 1; s <= steps; s++)
        {
            using (var scope = NewDisposeScope())
            {
                bank.Materialize(ScalarType.BFloat16);
                Tensor loss;
                using (var logits = model.forward(ids, null)) loss = Losses.CausalLMUnchecked(logits, ids);   // logits freed before backward
                loss.backward();
                opt.step();
                opt.zero_grad();
                bank.Clear();
            }
            if (s % every == 0 || s == 1)
            {
                TrainBench.Sync();
                proc.Refresh();
                long rss = proc.WorkingSet64;
                long managed = GC.GetTotalMemory(forceFullCollection: true);   // live managed bytes (runs finalizers' GC too)
                GC.WaitForPendingFinalizers();
                proc.Refresh();
                samples.Add(new { step = s, device_used_gib = Math.Round((DeviceMemory.UsedBytes() ?? 0) / Math.Pow(2, 30), 3),
                                  host_rss_gib = Math.Round(rss / Math.Pow(2, 30), 3),
                                  host_rss_after_gc_gib = Math.Round(proc.WorkingSet64 / Math.Pow(2, 30), 3),
                                  managed_mib = Math.Round(managed / Math.Pow(2, 20), 2),
                                  live_tensors = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount });
                Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(samples[^1]));
            }
        }
        return new() { ["shape"] = shape, ["steps"] = steps, ["training_path"] = QuanTATrainingPaths.Name(path.Path), ["training_path_reason"] = path.Reason, ["samples"] = samples };
    }
}
