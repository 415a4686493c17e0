using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using QuanTA.Bench;
using QuanTA.Core.Distributed;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

/// <summary>
/// <c>quanta-bench ddp</c>: data-parallel check over NCCL. The parent starts ranks as child processes (torchrun
/// environment, <see cref="LocalLauncher"/>): first one rank (1 GPU: the doubled-batch reference run, then a per-GPU-batch
/// throughput run), then N ranks (all-reduce correctness + bandwidth, then the data-parallel run). It prints one JSON
/// object: world_size, tokens_per_s, tokens_per_s_single, speedup, and the losses of both runs.
/// Backends: nccl (GPUs), inproc (CPU threads in one process, no children: exercises the training path on CPU),
/// store (children rendezvous over TCP and exchange a 128-byte id only: exercises the launch path on CPU).
/// </summary>
public static class DistributedBench
{
    const string ResultPrefix = "QUANTA_RESULT ";
    static readonly JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };
    static readonly JsonSerializerOptions JsonIndented = new(Json) { WriteIndented = true };

    /// <summary>Options of the ddp verb (all have defaults; <c>--key value</c> on the command line).</summary>
    public sealed record Options
    {
        public int NprocPerNode { get; init; } = 2;
        public int Steps { get; init; } = 50;
        public int Warmup { get; init; } = 5;
        public int Batch { get; init; } = 8;          // per GPU
        public int Seq { get; init; } = 512;
        public int Hidden { get; init; } = 2048;
        public int Layers { get; init; } = 22;
        public int Intermediate { get; init; } = 5632;
        public int KvDim { get; init; } = 256;
        public int AdapterRank { get; init; } = 8;
        public double Lr { get; init; } = 1e-3;
        public int Seed { get; init; } = 1234;
        public string Backend { get; init; } = "nccl";
        public string? Out { get; init; }
        public double TimeoutS { get; init; } = 300;
        public long BucketElements { get; init; } = DistributedGradientSync.DefaultBucketElements;
        public long AllReduceElements { get; init; } = 64L << 20;   // 256 MB of fp32
        public string? Role { get; init; }                          // set by the parent for its children
        public string Model { get; init; } = "standin";             // standin | llama (the real backbone, fused QuanTA q,v)
        public string Shape { get; init; } = "tinyllama";           // LLaMA shape for --model llama (LlamaShapes)
        public bool BlockingWait { get; init; }                    // NcclOptions.BlockingWait (1: each collective waits; default 0: queued)
        public int Repeats { get; init; } = 1;                      // alternating 1-GPU / N-GPU throughput runs

        public static Options Parse(IReadOnlyList<string> args)
        {
            var o = new Options();
            for (int i = 0; i < args.Count; i++)
            {
                var key = args[i];
                if (!key.StartsWith("--")) throw new ArgumentException($"Unexpected argument '{key}': options are --name value.");
                if (i + 1 >= args.Count) throw new ArgumentException($"Option {key} needs a value.");
                var v = args[++i];
                int I() => int.TryParse(v, out var x) && x >= 0 ? x : throw new ArgumentException($"{key} expects a non-negative integer (got '{v}').");
                o = key switch
                {
                    "--nproc-per-node" => o with { NprocPerNode = I() },
                    "--steps" => o with { Steps = I() },
                    "--warmup" => o with { Warmup = I() },
                    "--batch" => o with { Batch = I() },
                    "--seq" => o with { Seq = I() },
                    "--hidden" => o with { Hidden = I() },
                    "--layers" => o with { Layers = I() },
                    "--intermediate" => o with { Intermediate = I() },
                    "--kv-dim" => o with { KvDim = I() },
                    "--adapter-rank" => o with { AdapterRank = I() },
                    "--lr" => o with { Lr = double.Parse(v, CultureInfo.InvariantCulture) },
                    "--seed" => o with { Seed = I() },
                    "--backend" => o with { Backend = v is "nccl" or "inproc" or "store" ? v : throw new ArgumentException($"--backend is nccl, inproc or store (got '{v}').") },
                    "--out" => o with { Out = v },
                    "--timeout-s" => o with { TimeoutS = double.Parse(v, CultureInfo.InvariantCulture) },
                    "--bucket-elements" => o with { BucketElements = long.Parse(v, CultureInfo.InvariantCulture) },
                    "--allreduce-elements" => o with { AllReduceElements = long.Parse(v, CultureInfo.InvariantCulture) },
                    "--role" => o with { Role = v },
                    "--model" => o with { Model = v is "standin" or "llama" ? v : throw new ArgumentException($"--model is standin or llama (got '{v}').") },
                    "--shape" => o with { Shape = v },
                    "--blocking-wait" => o with { BlockingWait = I() != 0 },
                    "--repeats" => o with { Repeats = Math.Max(1, I()) },
                    _ => throw new ArgumentException($"Unknown option {key}. Known: --nproc-per-node --steps --warmup --batch --seq --hidden --layers --intermediate --kv-dim --adapter-rank --lr --seed --backend --out --timeout-s --bucket-elements --allreduce-elements --model --shape --blocking-wait --repeats."),
                };
            }
            if (o.NprocPerNode < 1 || o.Batch < 1 || o.Seq < 1 || o.Hidden < 1 || o.Layers < 1 || o.AdapterRank < 1 || o.Steps < 1 || o.Intermediate < 1 || o.KvDim < 1)
                throw new ArgumentException("--nproc-per-node, --batch, --seq, --hidden, --layers, --intermediate, --kv-dim, --adapter-rank and --steps must be ≥ 1.");
            if (o.Hidden % o.KvDim != 0) throw new ArgumentException($"--hidden ({o.Hidden}) must be a multiple of --kv-dim ({o.KvDim}).");
            if (o.Warmup >= o.Steps) throw new ArgumentException($"--warmup ({o.Warmup}) must be smaller than --steps ({o.Steps}).");
            return o;
        }

        public IEnumerable<string> ToArgs()
        {
            var inv = CultureInfo.InvariantCulture;
            yield return "--steps"; yield return Steps.ToString(inv); yield return "--warmup"; yield return Warmup.ToString(inv);
            yield return "--batch"; yield return Batch.ToString(inv); yield return "--seq"; yield return Seq.ToString(inv);
            yield return "--hidden"; yield return Hidden.ToString(inv); yield return "--layers"; yield return Layers.ToString(inv);
            yield return "--intermediate"; yield return Intermediate.ToString(inv); yield return "--kv-dim"; yield return KvDim.ToString(inv);
            yield return "--adapter-rank"; yield return AdapterRank.ToString(inv); yield return "--lr"; yield return Lr.ToString("R", inv);
            yield return "--seed"; yield return Seed.ToString(inv); yield return "--backend"; yield return Backend;
            yield return "--timeout-s"; yield return TimeoutS.ToString("R", inv);
            yield return "--bucket-elements"; yield return BucketElements.ToString(inv);
            yield return "--allreduce-elements"; yield return AllReduceElements.ToString(inv);
            yield return "--model"; yield return Model; yield return "--shape"; yield return Shape;
            yield return "--blocking-wait"; yield return BlockingWait ? "1" : "0";
            yield return "--repeats"; yield return Repeats.ToString(inv);
        }
    }

    /// <summary>Entry point of the verb; <paramref name="args"/> are the arguments after "ddp". Returns the exit code.</summary>
    public static int Run(string[] args)
    {
        Options o;
        try { o = Options.Parse(args); }
        catch (Exception e) when (e is ArgumentException or FormatException) { Console.Error.WriteLine($"ddp: {e.Message}"); return 2; }
        // Started by torchrun / srun (the variables are already set): be one rank of the data-parallel run.
        if (o.Role is null && o.Backend != "inproc" && Environment.GetEnvironmentVariable(ProcessGroupOptions.WorldSizeEnv) is not null) o = o with { Role = o.Backend == "store" ? "store" : "ddp" };
        if (o.Role is not null) return RunChild(o);
        return o.Backend == "inproc" ? RunInProcess(o) : RunParent(o);
    }

    // ---------------------------------------------------------------- parent: launch, collect, report

    static int RunParent(Options o)
    {
        var (exe, prefix) = LocalLauncher.SelfCommand();
        Dictionary<string, JsonElement>? Launch(int n, string role)
        {
            var args = prefix.Concat(new[] { "ddp" }).Concat(o.ToArgs()).Concat(new[] { "--role", role }).ToArray();
            var res = LocalLauncher.Run(exe, args, new LaunchOptions { NprocPerNode = n, RankTimeout = TimeSpan.FromSeconds(o.TimeoutS) });
            if (!res.Succeeded) { Console.Error.WriteLine($"ddp: {role} run with {n} rank(s) failed: exit codes [{string.Join(", ", res.ExitCodes)}], rank {res.FirstFailedRank} first."); return null; }
            var line = res.StandardOutput[0].LastOrDefault(l => l.StartsWith(ResultPrefix));
            return line is null ? null : JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(line[ResultPrefix.Length..], Json);
        }

        if (o.Backend == "store")
        {
            var r = Launch(o.NprocPerNode, "store");
            if (r is null) return 1;
            Console.WriteLine(JsonSerializer.Serialize(r, Json));
            return 0;
        }
        var single = Launch(1, "single");
        if (single is null) return 1;
        var ddp = Launch(o.NprocPerNode, "ddp");
        if (ddp is null) return 1;
        // Throughput varies between processes (~10 % for one GPU on H100 hosts), so the 1-GPU and N-GPU runs alternate:
        // single, ddp, [single, ddp] × (repeats − 1), single; the speedup is the ratio of the means, every run reported.
        var singles = new List<double> { single["tokens_per_s_batch"].GetDouble() };
        var ddps = new List<double> { ddp["tokens_per_s"].GetDouble() };
        for (int r = 0; r < o.Repeats; r++)
        {
            if (r > 0)
            {
                var d = Launch(o.NprocPerNode, "ddp-throughput");
                if (d is null) return 1;
                ddps.Add(d["tokens_per_s"].GetDouble());
            }
            var again = Launch(1, "single-throughput");
            if (again is null) return 1;
            singles.Add(again["tokens_per_s_batch"].GetDouble());
        }
        return Report(o, single, ddp, singles, ddps);
    }

    static int Report(Options o, Dictionary<string, JsonElement> single, Dictionary<string, JsonElement> ddp,
        IReadOnlyList<double>? singleRuns = null, IReadOnlyList<double>? ddpRuns = null)
    {
        double[] L(Dictionary<string, JsonElement> d, string k) => d[k].EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? double.Parse(x.GetString()!, CultureInfo.InvariantCulture) : x.GetDouble()).ToArray();
        var lossSingle = L(single, "losses_doubled_batch"); var lossDdp = L(ddp, "losses");
        var absDiff = lossSingle.Zip(lossDdp, (a, b) => Math.Abs(a - b)).ToArray();
        singleRuns ??= [single["tokens_per_s_batch"].GetDouble()];
        ddpRuns ??= [ddp["tokens_per_s"].GetDouble()];
        double tps = ddpRuns.Average(), tps1 = singleRuns.Average();
        var report = new Dictionary<string, object?>
        {
            ["bench"] = "ddp",
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
            ["gpus"] = GpuNames(),
            ["model"] = o.Model == "llama"
                ? $"LlamaForCausalLM, {o.Shape} shape (LlamaShapes), random bf16 weights; QuanTA q,v through the fused bank; causal-LM loss on random ids"
                : $"stand-in (TinyLlama linear shapes, no attention scores): {o.Layers} layers of q,k,v,o,gate,up,down AdaptableLinear (hidden {o.Hidden}, kv {o.KvDim}, intermediate {o.Intermediate}; frozen bf16 on GPU), rank-{o.AdapterRank} fp32 adapters on q,v",
            ["world_size"] = o.NprocPerNode, ["nccl_blocking_wait"] = o.BlockingWait,
            ["per_gpu_batch"] = o.Batch, ["seq"] = o.Seq, ["steps"] = o.Steps, ["timed_steps"] = o.Steps - o.Warmup,
            ["tokens_per_s"] = Math.Round(tps, 1),
            ["tokens_per_s_single"] = Math.Round(tps1, 1),
            ["tokens_per_s_runs"] = ddpRuns.Select(x => Math.Round(x, 1)).ToArray(),
            ["tokens_per_s_single_runs"] = singleRuns.Select(x => Math.Round(x, 1)).ToArray(),
            ["speedup_min_max"] = new[] { Math.Round(ddpRuns.Min() / singleRuns.Max(), 3), Math.Round(ddpRuns.Max() / singleRuns.Min(), 3) },   // envelope
            // each N-GPU run against the mean of the 1-GPU runs just before and after it (runs alternate)
            ["speedup_pairs"] = ddpRuns.Select((x, i) => i + 1 < singleRuns.Count ? Math.Round(2 * x / (singleRuns[i] + singleRuns[i + 1]), 3) : (double?)null).ToArray(),
            ["tokens_per_s_single_doubled_batch"] = Math.Round(single["tokens_per_s_doubled_batch"].GetDouble(), 1),
            ["speedup"] = Math.Round(tps / tps1, 3),
            ["phase_ms_ddp_rank0"] = ddp.TryGetValue("phase_ms", out var pd) ? pd : null,
            ["phase_ms_single"] = single.TryGetValue("phase_ms_batch", out var ps) ? ps : null,
            ["losses"] = lossDdp, ["losses_single_doubled_batch"] = lossSingle,
            ["final_loss"] = lossDdp[^1], ["final_loss_single_doubled_batch"] = lossSingle[^1],
            ["max_abs_loss_diff"] = absDiff.Max(),
            ["max_rel_loss_diff"] = lossSingle.Zip(absDiff, (a, d) => d / Math.Max(1e-12, Math.Abs(a))).Max(),
            ["ddp_rank0"] = ddp, ["single"] = single,
        };
        var json = JsonSerializer.Serialize(report, JsonIndented);
        Console.WriteLine(json);
        if (o.Out is { } path) { Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!); File.WriteAllText(path, json); }
        return 0;
    }

    static string[] GpuNames()
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("nvidia-smi", "--query-gpu=name --format=csv,noheader") { RedirectStandardOutput = true, UseShellExecute = false })!;
            var names = p.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            p.WaitForExit();
            return names;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException) { return Array.Empty<string>(); }
    }

    // ---------------------------------------------------------------- children

    static int RunChild(Options o)
    {
        var group = ProcessGroupOptions.FromEnvironment();
        using var store = TcpStore.Connect(group);
        Dictionary<string, object?> result;
        if (o.Role == "store")
        {
            var id = group.Rank == 0 ? Enumerable.Range(0, NcclUniqueId.Bytes).Select(i => (byte)i).ToArray() : null;
            if (id is not null) store.Set("id", id);
            var got = store.Get("id");
            store.Barrier("done");
            result = new() { ["role"] = "store", ["world_size"] = group.WorldSize, ["rank"] = group.Rank, ["id_ok"] = got.Length == 128 && got[127] == 127 };
        }
        else
        {
            using var comm = NcclCommunicator.Create(group, store, options: new NcclOptions { BlockingWait = o.BlockingWait });
            var device = comm.Device;
            result = new() { ["nccl_version"] = comm.Library.Version, ["nccl_path"] = comm.Library.Path, ["device"] = device.ToString() };
            if (o.Role == "ddp-throughput")
            {
                var (_, tps, _, _) = Train(o, comm, globalBatch: o.Batch * group.WorldSize);
                result["tokens_per_s"] = tps;
            }
            else if (o.Role == "single-throughput")
            {
                var (_, tpsB, _, _) = Train(o, comm, globalBatch: o.Batch);
                result["tokens_per_s_batch"] = tpsB;
            }
            else if (o.Role == "single")
            {
                var (lossesDoubled, tpsDoubled, _, _) = Train(o, comm, globalBatch: o.Batch * o.NprocPerNode);   // reference: 1 GPU, W·B rows
                var (_, tpsB, trainable, phases) = Train(o, comm, globalBatch: o.Batch);                           // throughput: 1 GPU, B rows
                result["losses_doubled_batch"] = lossesDoubled; result["tokens_per_s_doubled_batch"] = tpsDoubled;
                result["tokens_per_s_batch"] = tpsB; result["trainable_parameters"] = trainable; result["phase_ms_batch"] = phases;
            }
            else
            {
                foreach (var (k, v) in AllReduceCheck(o, comm)) result[k] = v;
                var (losses, tps, trainable, phases) = Train(o, comm, globalBatch: o.Batch * group.WorldSize);
                result["losses"] = losses; result["tokens_per_s"] = tps; result["trainable_parameters"] = trainable; result["phase_ms"] = phases;
            }
            comm.Barrier();
            store.Barrier("done");
        }
        if (group.Rank == 0) Console.WriteLine(ResultPrefix + JsonSerializer.Serialize(result, Json));
        return 0;
    }

    /// <summary>In one process on CPU: the 1-rank reference and W ranks as threads (InProcessCommunicator). No GPU, no NCCL.</summary>
    static int RunInProcess(Options o)
    {
        var single = new Dictionary<string, object?>();
        using (var c = new SingleProcessCommunicator())
        {
            var (l2, t2, _, _) = Train(o, c, o.Batch * o.NprocPerNode);
            var (_, t1, _, p1) = Train(o, c, o.Batch);
            single["losses_doubled_batch"] = l2; single["tokens_per_s_doubled_batch"] = t2; single["tokens_per_s_batch"] = t1; single["phase_ms_batch"] = p1;
        }
        var comms = InProcessCommunicator.CreateGroup(o.NprocPerNode, TimeSpan.FromSeconds(o.TimeoutS));
        var threads = Enumerable.Range(0, o.NprocPerNode).Select(r => Task.Factory.StartNew(() =>
        {
            using var c = comms[r];
            return Train(o, c, o.Batch * o.NprocPerNode);
        }, TaskCreationOptions.LongRunning)).ToArray();
        Task.WaitAll(threads);
        var ddp = new Dictionary<string, object?> { ["losses"] = threads[0].Result.Losses, ["tokens_per_s"] = threads[0].Result.TokensPerS, ["phase_ms"] = threads[0].Result.PhaseMs };   // already over all ranks
        JsonElement J(object? x) => JsonSerializer.SerializeToElement(x, Json);
        return Report(o, single.ToDictionary(kv => kv.Key, kv => J(kv.Value)), ddp.ToDictionary(kv => kv.Key, kv => J(kv.Value)));
    }

    /// <summary>All-reduce of a known tensor (sum and average must be exact for small integers) and the bus bandwidth of a large one.</summary>
    static Dictionary<string, object?> AllReduceCheck(Options o, ICommunicator comm)
    {
        using var scope = NewDisposeScope();
        int w = comm.WorldSize, r = comm.Rank;
        var n = 1 << 20;
        var x = arange(n, dtype: ScalarType.Float32, device: comm.Device).remainder(1000).mul_(r + 1);   // rank r: (r+1)·(i mod 1000)
        var expectSum = arange(n, dtype: ScalarType.Float32, device: comm.Device).remainder(1000).mul_(w * (w + 1) / 2);
        comm.AllReduceSum(x);
        var sumErr = (x - expectSum).abs().max().item<float>();
        var y = full(n, (float)r, device: comm.Device); comm.AllReduceAverage(y);
        var avgErr = (y - (w - 1) / 2f).abs().max().item<float>();
        var b = full(n, (float)r, device: comm.Device); comm.Broadcast(b, root: w - 1);
        var bcastErr = (b - (w - 1)).abs().max().item<float>();

        var big = ones(o.AllReduceElements, dtype: ScalarType.Float32, device: comm.Device);
        comm.AllReduceSum(big); comm.Barrier();
        const int reps = 10;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) comm.AllReduceSum(big);
        comm.Barrier();
        var sec = sw.Elapsed.TotalSeconds / reps;
        var bytes = o.AllReduceElements * 4.0;
        return new()
        {
            ["allreduce_ok"] = sumErr == 0 && avgErr < 1e-6 && bcastErr == 0,
            ["allreduce_sum_max_err"] = sumErr, ["allreduce_avg_max_err"] = avgErr, ["broadcast_max_err"] = bcastErr,
            ["allreduce_bytes"] = bytes, ["allreduce_ms"] = Math.Round(sec * 1e3, 3),
            ["allreduce_busbw_GBps"] = Math.Round(2.0 * (w - 1) / w * bytes / sec / 1e9, 1),
        };
    }

    // ---------------------------------------------------------------- the training loop

    /// <summary>
    /// Data-parallel training of the workload for <see cref="Options.Steps"/> steps with a global batch of
    /// <paramref name="globalBatch"/> rows (this rank's shard: rows r, r+W, …), written the way a PyTorch DDP loop runs:
    /// no host synchronization inside a step — losses stay on the device until the end, gradient clipping computes its
    /// coefficient on the device (as torch.nn.utils.clip_grad_norm_ does) — so the host queues work ahead of the GPU.
    /// With <see cref="Options.BlockingWait"/> each gradient all-reduce still waits (bounded) for the GPU.
    /// Returns the global mean loss per step, the tokens/s over all ranks, and per-phase milliseconds of a few extra steps
    /// timed with a device synchronization at each phase boundary (forward+backward, gradient all-reduce, clip+AdamW).
    /// </summary>
    static (double[] Losses, double TokensPerS, long Trainable, Dictionary<string, double> PhaseMs) Train(Options o, ICommunicator comm, int globalBatch)
    {
        int w = comm.WorldSize, rank = comm.Rank;
        if (globalBatch % w != 0) throw new ArgumentException($"global batch {globalBatch} is not divisible by {w} ranks.");
        var device = comm.Device;
        bool cuda = device.type == DeviceType.CUDA;
        void Sync() { if (cuda) torch.cuda.synchronize(device); }
        using var work = DistributedWorkloads.Create(o, globalBatch, rank, w, device);
        var trainable = work.Trainable;
        using var sync = new DistributedGradientSync(trainable, comm, o.BucketElements);
        sync.BroadcastParameters();
        using var opt = new QuanTA.Core.Training.MultiTensorAdamW(trainable, lr: o.Lr, weight_decay: 0.0);   // the library's optimizer (Trainer)

        // Test hook for the failure path on GPUs: QUANTA_TEST_DIE_AT_STEP=N makes rank QUANTA_TEST_DIE_RANK (default 1) exit at
        // step N, so the others must end with a clear error within the timeout instead of hanging.
        int dieAt = w > 1 && int.TryParse(Environment.GetEnvironmentVariable("QUANTA_TEST_DIE_AT_STEP"), out var d) ? d : -1;
        int dieRank = int.TryParse(Environment.GetEnvironmentVariable("QUANTA_TEST_DIE_RANK"), out var dr) ? dr : 1;
        var lossTensors = new Tensor[o.Steps];
        var phase = new double[3];
        int phaseSteps = Math.Min(5, o.Steps - o.Warmup);
        var sw = new Stopwatch();
        for (int s = 0; s < o.Steps + phaseSteps; s++)
        {
            bool timedPhases = s >= o.Steps;                                                     // extra steps, re-using the last batches
            if (s == o.Warmup) { comm.Barrier(); Sync(); sw.Start(); }
            if (s == o.Steps) { Sync(); comm.Barrier(); sw.Stop(); }
            if (s == dieAt && rank == dieRank) { Console.Error.WriteLine($"rank {rank}: test hook: exiting at step {s}"); Environment.Exit(9); }
            using var scope = NewDisposeScope();
            var t0 = Stopwatch.GetTimestamp();
            opt.zero_grad();
            var loss = work.Loss(timedPhases ? o.Steps - 1 - (s - o.Steps) : s);
            loss.backward();
            if (timedPhases) { Sync(); phase[0] += Stopwatch.GetElapsedTime(t0).TotalMilliseconds; t0 = Stopwatch.GetTimestamp(); }
            sync.Synchronize();                                                                  // average adapter grads over ranks
            if (timedPhases) { Sync(); phase[1] += Stopwatch.GetElapsedTime(t0).TotalMilliseconds; t0 = Stopwatch.GetTimestamp(); }
            ClipGradNorm(trainable, 1.0);
            opt.step();
            work.AfterStep();
            if (timedPhases) { Sync(); phase[2] += Stopwatch.GetElapsedTime(t0).TotalMilliseconds; continue; }
            lossTensors[s] = loss.detach().to_type(ScalarType.Float32).DetachFromDisposeScope();  // read after the loop
        }
        double tokens = (double)globalBatch * work.TokensPerRow * (o.Steps - o.Warmup);
        double[] losses;
        using (var all = stack(lossTensors))                                                     // (steps,): this rank's losses
        {
            comm.AllReduceAverage(all);                                                          // global mean (equal shard sizes)
            losses = all.cpu().data<float>().ToArray().Select(x => (double)x).ToArray();
        }
        foreach (var t in lossTensors) t.Dispose();
        var phases = new Dictionary<string, double>
        {
            ["forward_backward"] = Math.Round(phase[0] / phaseSteps, 2),
            ["gradient_allreduce"] = Math.Round(phase[1] / phaseSteps, 2),
            ["clip_adamw"] = Math.Round(phase[2] / phaseSteps, 2),
        };
        return (losses, tokens / sw.Elapsed.TotalSeconds, trainable.Sum(p => p.numel()), phases);
    }

    /// <summary>Clips the global gradient norm to <paramref name="maxNorm"/> without reading it on the host:
    /// g ← g · min(1, maxNorm / (‖g‖ + 1e-6)), the coefficient computed on the device.</summary>
    static void ClipGradNorm(Parameter[] parameters, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var grads = parameters.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToArray();
        if (grads.Length == 0) return;
        var total = stack(grads.Select(g => g.to_type(ScalarType.Float32).norm()).ToArray()).norm();   // ‖g‖ over all
        var coef = (maxNorm / (total + 1e-6)).clamp_max(1.0);
        foreach (var g in grads) g.mul_(coef.to_type(g.dtype));
    }
}
