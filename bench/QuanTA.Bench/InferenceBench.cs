using System.Diagnostics;
using QuanTA.Core.Adapters;
using QuanTA.Core.Generation;
using QuanTA.Core.Models.Llama;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>Merged-adapter inference vs the plain base, KV-cache decoding speed, and GPU correctness checks of the fast path.</summary>
static class InferenceBench
{
    static Device Dev => TrainBench.Dev;
    static void Sync() => TrainBench.Sync();

    /// <summary>Forward time (no grad) of the plain base and of the same model with QuanTA q,v merged: the seed's
    /// "no inference overhead" claim, measured.</summary>
    public static Dictionary<string, object> MergedForward(string shape, int seq, int reps = 10)
    {
        var (config, layout, batch) = LlamaShapes.Get(shape);
        using var model = new LlamaForCausalLM(config, ScalarType.BFloat16, Dev);
        TrainBench.RandomInit(model);
        model.eval();
        using var ids = randint(0, config.VocabSize, [batch, seq], dtype: ScalarType.Int64, device: Dev);
        double Time()
        {
            using var _ = no_grad();
            for (int i = 0; i < 3; i++) using (var s = NewDisposeScope()) model.forward(ids, null);
            Sync();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) using (var s = NewDisposeScope()) model.forward(ids, null);
            Sync();
            return sw.Elapsed.TotalMilliseconds / reps;
        }
        double baseMs = Time();
        AdapterInjector.Inject(model, new QuanTAConfig { Layout = layout, Seed = 0 }, TargetModules.Names("q_proj", "v_proj"));
        AdapterInjector.MergeAll(model);
        double mergedMs = Time();
        double baseMs2 = Time(); // interleave against drift: base again after unmerge
        AdapterInjector.UnmergeAll(model);
        double unmergedMs = Time();
        return new()
        {
            ["shape"] = shape, ["batch"] = batch, ["seq"] = seq,
            ["base_forward_ms"] = Math.Round(baseMs, 2), ["merged_forward_ms"] = Math.Round(mergedMs, 2),
            ["merged_forward_ms_repeat"] = Math.Round(baseMs2, 2), ["unmerged_adapter_forward_ms"] = Math.Round(unmergedMs, 2),
            ["merged_over_base"] = Math.Round(Math.Min(mergedMs, baseMs2) / baseMs, 4),
        };
    }

    /// <summary>Greedy decoding with the KV cache: batch 1, a 128-token prompt, 128 new tokens (no early stop).</summary>
    public static Dictionary<string, object> Decode(string shape, int promptLen = 128, int newTokens = 128)
    {
        var (config, _, _) = LlamaShapes.Get(shape);
        using var model = new LlamaForCausalLM(config, ScalarType.BFloat16, Dev);
        TrainBench.RandomInit(model);
        model.eval();
        var gen = new TextGenerator(model);
        var rnd = new Random(0);
        var prompt = Enumerable.Range(0, promptLen).Select(_ => (long)rnd.Next(3, config.VocabSize)).ToArray();
        var opts = new GenerationOptions { MaxNewTokens = newTokens, Greedy = true, EosTokenIds = [] };
        gen.GenerateIds([prompt], opts with { MaxNewTokens = 8 });
        Sync();
        var sw = Stopwatch.StartNew();
        var outIds = gen.GenerateIds([prompt], opts);
        Sync();
        var s = sw.Elapsed.TotalSeconds;
        return new() { ["shape"] = shape, ["prompt_tokens"] = promptLen, ["new_tokens"] = outIds[0].Length, ["decode_tokens_per_s"] = Math.Round(outIds[0].Length / s, 1) };
    }

    /// <summary>On the GPU: the fused bank's ΔW equals each adapter's own ΔW (fp32), and the bf16 chain's error vs fp32.</summary>
    public static Dictionary<string, object> Check(string shape)
    {
        var (config, layout, _) = LlamaShapes.Get(shape);
        using var model = new LlamaForCausalLM(config with { NumHiddenLayers = 2 }, ScalarType.BFloat16, Dev);
        TrainBench.RandomInit(model);
        AdapterInjector.Inject(model, new QuanTAConfig { Layout = layout, Seed = 0 }, TargetModules.Names("q_proj", "v_proj"));
        using (no_grad()) foreach (var p in model.parameters().Where(p => p.requires_grad)) p.add_(randn_like(p).mul_(0.05));
        var bank = QuanTABank.Create(model);
        double maxRel32 = 0, maxRel16 = 0;
        using (var scope = NewDisposeScope())
        {
            var adapters = AdapterInjector.LinearLayers(model).Select(l => l.Layer.Adapter).OfType<QuanTAAdapter>().ToArray();
            var reference = adapters.Select(a => a.DeltaWeight()).ToArray();
            bank.Materialize(ScalarType.Float32);
            for (int i = 0; i < adapters.Length; i++) maxRel32 = Math.Max(maxRel32, Rel(adapters[i].StepDelta!, reference[i]));
            bank.Materialize(ScalarType.BFloat16);
            for (int i = 0; i < adapters.Length; i++) maxRel16 = Math.Max(maxRel16, Rel(adapters[i].StepDelta!, reference[i]));
            bank.Clear();
        }
        return new() { ["shape"] = shape, ["fused_vs_reference_rel_err_fp32"] = maxRel32, ["fused_bf16_vs_fp32_rel_err"] = maxRel16 };
    }

    static double Rel(Tensor a, Tensor b)
    {
        using var s = NewDisposeScope();
        var x = a.to_type(ScalarType.Float64); var y = b.to_type(ScalarType.Float64);
        return (x - y).norm().item<double>() / y.norm().item<double>();
    }
}
