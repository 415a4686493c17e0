using QuanTA.Core.Runtime;
using System.Diagnostics;
using QuanTA.Core.Adapters;
using QuanTA.Core.Kernels;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Quantization;
using QuanTA.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// Training throughput on a LLaMA shape with random bf16 weights, AdamW, batch × 512 tokens, the same protocol as
/// <c>peer_bench.py</c> (3 warm-up + 10 timed steps, loss = causal LM on the input ids). Methods: quanta (QuanTA on the
/// training path the library would choose here: <see cref="QuanTATrainingPaths.Resolve"/> with Auto, logged in the JSON),
/// quanta-per-layer, quanta-stacked, quanta-layerwise, quanta-layerwise-uncached (that <see cref="QuanTATrainingPath"/>
/// forced), lora (r8, α16, q/v), frozen (nothing adapted; layer 0's q_proj weight
/// trains so backward runs through the whole model, as in the peer's floor; on a quantized base, layer 0's input norm).
/// With a <see cref="BaseQuantization"/> other than None (<c>--quantize int8|nf4</c>) the decoder projections are quantized
/// layer by layer as they are drawn (QLoRA-style base; the dense model never exists on the device).
/// </summary>
static class TrainBench
{
    internal static Device Dev => cuda.is_available() ? CUDA : CPU;
    internal static void Sync() { if (cuda.is_available()) cuda.synchronize(); }

    public static Dictionary<string, object> Run(string shape, string method, int? batchOverride, int seq, int steps, int warm,
        BaseQuantization quantization = BaseQuantization.None, bool gradientCheckpointing = false, bool chunkedLoss = true,
        int recomputeChunk = QuanTABank.DefaultRecomputeChunk)
    {
        var (config, layout, batch) = LlamaShapes.Get(shape);
        config = config with { Quantization = quantization };
        batch = batchOverride ?? batch;
        var dev = Dev;
        using (var ctx = ones(1, device: dev)) { Sync(); }
        long baseline = DeviceMemory.UsedBytes() ?? 0;
        manual_seed(0);
        using var model = new LlamaForCausalLM(config, ScalarType.BFloat16, dev);
        RandomInit(model);
        QuanTABank? bank = null;
        QuanTATrainingPathChoice? path = null;
        InjectionReport? report = null;
        switch (method)
        {
            case "quanta" or "quanta-per-layer" or "quanta-stacked" or "quanta-stacked-recompute" or "quanta-layerwise" or "quanta-layerwise-uncached":
                report = AdapterInjector.Inject(model, new QuanTAConfig { Layout = layout, Seed = 0 }, TargetModules.Names("q_proj", "v_proj"));
                path = ResolvePath(method == "quanta" ? "auto" : method["quanta-".Length..], model, ScalarType.BFloat16);
                if (path.UsesBank) bank = QuanTABank.Create(model, path.Path, recomputeChunk: recomputeChunk);
                break;
            case "lora":
                report = AdapterInjector.Inject(model, new LoRAConfig { Rank = 8, Alpha = 16, Seed = 0 }, TargetModules.Names("q_proj", "v_proj"));
                break;
            case "frozen":
                foreach (var p in model.parameters()) p.requires_grad = false;
                if (quantization == BaseQuantization.None) model.model.layers[0].self_attn.q_proj.weight.requires_grad = true;
                else model.model.layers[0].input_layernorm.weight.requires_grad = true;     // a quantized weight cannot train
                break;
            default: throw new ArgumentException($"Unknown method '{method}'.");
        }
        QuanTA.Core.Models.Llama.LlamaModel.SetGradientCheckpointing(model, gradientCheckpointing);
        model.train();
        // The fused path trains the bank's stacked tensors (the adapters' T_i alias their slices).
        var trainable = bank is not null
            ? bank.OptimizerParameters(model).Select(p => p.Parameter).ToArray()
            : model.parameters().Where(p => p.requires_grad).ToArray();
        using var opt = new MultiTensorAdamW(trainable, lr: 1e-4);                 // the library's optimizer (Trainer)
        var hostIds = randint(0, config.VocabSize, [batch, seq], dtype: ScalarType.Int64);
        long targets = Losses.CountTargets(hostIds.data<long>().ToArray(), seq, config.VocabSize);   // labels checked on the host, once
        using var ids = hostIds.to(dev);
        // One training step; mark(i) is called after phase i (materialize, forward, backward, optimizer). Reads the loss on
        // the host (a device sync) only when asked.
        double Step(Action<int> mark, bool readLoss = false)
        {
            using var scope = NewDisposeScope();
            bank?.Materialize(ScalarType.BFloat16); mark(0);
            Tensor loss;
            if (chunkedLoss) loss = ChunkedCausalLMLoss.ComputeUnchecked(model.model.Forward(ids), model.lm_head.weight, ids, targets);   // the library's loss
            else using (var logits = model.forward(ids, null)) loss = Losses.CausalLMUnchecked(logits, ids);   // logits (B, T, V) fp32,
            mark(1);                                                                                     // not kept for the backward
            loss.backward(); mark(2);
            opt.step(); opt.zero_grad(); bank?.Clear(); mark(3);
            return readLoss ? loss.item<float>() : double.NaN;
        }
        long peak = 0;
        var sw = new Stopwatch();
        double lastLoss = double.NaN;
        // Where the device memory comes from: in use (allocator cache included) after loading, and after each phase of the
        // first (warm-up) step; the allocator never gives memory back, so the first phase that raises it holds the peak.
        double Gib() { Sync(); return Math.Round(((DeviceMemory.UsedBytes() ?? 0) - baseline) / Math.Pow(2, 30), 2); }
        var trace = new Dictionary<string, double> { ["loaded"] = Gib() };
        string[] phaseNames = ["materialize", "forward", "backward", "optimizer"];
        for (int s = 0; s < warm + steps; s++)
        {
            if (s == warm) { Sync(); sw.Start(); }
            lastLoss = Step(s == 0 && warm > 0 ? i => trace[phaseNames[i]] = Gib() : _ => { }, readLoss: s == warm + steps - 1);   // not in a timed step
            if (s == 0 || s == warm + steps - 1) { Sync(); peak = Math.Max(peak, DeviceMemory.UsedBytes() ?? 0); }
        }
        Sync();
        sw.Stop();
        // Where the time goes: 3 more steps with a device sync at each phase boundary (not part of tokens/s).
        var phase = new double[4];
        const int phaseSteps = 3;
        for (int s = 0; s < phaseSteps; s++)
        {
            long t0 = Stopwatch.GetTimestamp();
            Step(i => { Sync(); phase[i] += Stopwatch.GetElapsedTime(t0).TotalMilliseconds; t0 = Stopwatch.GetTimestamp(); });
        }
        bank?.Dispose();
        double dt = sw.Elapsed.TotalSeconds;
        return new Dictionary<string, object>
        {
            ["shape"] = shape, ["method"] = method, ["training_path"] = path is null ? "" : QuanTATrainingPaths.Name(path.Path),
            ["training_path_reason"] = path?.Reason ?? "", ["recompute_chunk"] = path?.Path == QuanTATrainingPath.StackedRecompute ? recomputeChunk : 0, ["gradient_checkpointing"] = gradientCheckpointing, ["loss"] = chunkedLoss ? "chunked" : "full-logits", ["batch"] = batch, ["seq"] = seq, ["quantization"] = quantization.ToString(),
            ["quantized_base_gib"] = Math.Round(model.modules().OfType<AdaptableLinear>().Sum(l => l.QuantizedWeight?.StorageBytes ?? 0) / Math.Pow(2, 30), 3),
            ["gqa"] = config.NumKeyValueHeads == config.NumAttentionHeads ? "none" : LlamaAttention.CheckpointGroupedAttention ? "checkpoint" : "plain",
            ["tokens_per_s"] = Math.Round(batch * seq * steps / dt),
            ["step_ms"] = Math.Round(1000 * dt / steps, 1),
            ["peak_gib_device_used_minus_context"] = Math.Round((peak - baseline) / Math.Pow(2, 30), 2),
            ["trainable"] = trainable.Sum(p => p.numel()),
            ["final_loss"] = Math.Round(lastLoss, 4),
            ["adapted_layers"] = report?.Layers.Count ?? 0,
            ["memory_trace_gib"] = trace,
            ["kernels"] = KernelAvailability.Reason is null ? "not asked" : KernelAvailability.EnabledFor(DeviceType.CUDA) ? "on" : "off",
            ["phase_ms"] = new Dictionary<string, double>
            {
                ["materialize"] = Math.Round(phase[0] / phaseSteps, 2), ["forward"] = Math.Round(phase[1] / phaseSteps, 2),
                ["backward"] = Math.Round(phase[2] / phaseSteps, 2), ["optimizer"] = Math.Round(phase[3] / phaseSteps, 2),
            },
        };
    }

    /// <summary>The QuanTA training path named on the command line (auto or <see cref="QuanTATrainingPaths.Name"/>),
    /// resolved as the library resolves it (<see cref="QuanTATrainingPaths.Resolve"/>: free memory read after the model is loaded).</summary>
    internal static QuanTATrainingPathChoice ResolvePath(string name, nn.Module model, ScalarType computeDType)
    {
        var requested = Enum.GetValues<QuanTATrainingPath>().FirstOrDefault(p => p == QuanTATrainingPath.Auto ? name == "auto" : QuanTATrainingPaths.Name(p) == name,
            (QuanTATrainingPath)(-1));
        if (!Enum.IsDefined(requested))
            throw new ArgumentException($"Unknown training path '{name}': auto, " +
                string.Join(", ", Enum.GetValues<QuanTATrainingPath>().Where(p => p != QuanTATrainingPath.Auto).Select(QuanTATrainingPaths.Name)) + ".");
        Sync();
        return QuanTATrainingPaths.Resolve(requested, Dev.type == DeviceType.CUDA, () => QuanTABank.EstimatedStackedExtraBytes(model, computeDType),
            () => DeviceMemory.Query(0)?.Free, () => QuanTABank.EstimatedRecomputeExtraBytes(model, computeDType));
    }

    /// <summary>Random weights like transformers' init: N(0, 0.02) for matrices, ones for RMSNorm weights. Drawn in place by
    /// the global generator, or, with <paramref name="generator"/> (a CPU generator of its own, e.g. for ranks that are threads
    /// of one process), on the CPU and copied.</summary>
    public static void RandomInit(nn.Module model, Generator? generator = null)
    {
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (p.dim() == 1) p.fill_(1.0);
            else if (generator is null) p.normal_(0, 0.02);
            else using (var w = randn(p.shape, generator: generator)) p.copy_(w.mul_(0.02));
        }
        // Quantized layers: draw each dense weight on the layer's device in the compute dtype, quantize it, free it.
        foreach (var layer in model.modules().OfType<AdaptableLinear>().Where(l => l.Quantization != BaseQuantization.None))
        {
            using var scope = NewDisposeScope();
            var w = generator is null
                ? empty(layer.OutFeatures, layer.InFeatures, dtype: layer.weight.dtype, device: layer.weight.device).normal_(0, 0.02)
                : randn(layer.OutFeatures, layer.InFeatures, generator: generator).mul_(0.02).to(layer.weight.dtype).to(layer.weight.device);
            layer.LoadWeight(w);
        }
    }
}
