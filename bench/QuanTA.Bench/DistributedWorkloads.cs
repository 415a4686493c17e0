using QuanTA.Core.Adapters;
using QuanTA.Core.Distributed;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Bench;

/// <summary>
/// What one rank trains in <c>quanta-bench ddp</c>: the trainable parameters, the loss of step s on this rank's shard,
/// and the hooks around it. Every rank builds identical frozen weights and the same global batch per step from the seed;
/// rank r keeps rows r, r+W, … (<see cref="ShardedBatches"/>).
/// </summary>
interface IDistributedWorkload : IDisposable
{
    /// <summary>What the optimizer trains (the gradient sync averages exactly these).</summary>
    Parameter[] Trainable { get; }
    /// <summary>Tokens per global batch row.</summary>
    long TokensPerRow { get; }
    /// <summary>This rank's mean loss of step <paramref name="step"/> (with graph), in the caller's dispose scope.</summary>
    Tensor Loss(int step);
    /// <summary>After the optimizer step (e.g. forget the fused ΔW).</summary>
    void AfterStep();
}

static class DistributedWorkloads
{
    public static IDistributedWorkload Create(DistributedBench.Options o, int globalBatch, int rank, int world, Device device) => o.Model switch
    {
        "llama" => new LlamaWorkload(o, globalBatch, rank, world, device),
        _ => new StandInWorkload(o, globalBatch, rank, world, device),
    };

    /// <summary>A CPU generator: a CUDA generator made through TorchSharp 0.107 aborts in normal_ (seen on H100).</summary>
    internal static Generator NewGenerator(ulong seed) => new(seed);

    /// <summary>Seeded normal samples drawn on the CPU and moved (identical on every rank: same seed, same software).</summary>
    internal static Tensor Randn(long[] shape, Generator g, Device device) => randn(shape, generator: g).to(device);

    /// <summary>
    /// The real backbone: <see cref="LlamaForCausalLM"/> with a LLaMA shape (random bf16 weights from the seed), QuanTA on
    /// q_proj and v_proj trained through the fused bank (all layers' ΔW per step, one GEMM per layer), causal-LM loss on
    /// random token ids — the single-GPU benchmark's <c>quanta</c> method, data-parallel.
    /// </summary>
    sealed class LlamaWorkload : IDistributedWorkload
    {
        readonly LlamaForCausalLM _model;
        readonly QuanTABank? _bank;
        readonly ScalarType _dtype;
        readonly List<Tensor> _ids = [];

        public LlamaWorkload(DistributedBench.Options o, int globalBatch, int rank, int world, Device device)
        {
            var (config, layout, _) = LlamaShapes.Get(o.Shape);
            bool cuda = device.type == DeviceType.CUDA;
            _dtype = cuda ? ScalarType.BFloat16 : ScalarType.Float32;
            _model = new LlamaForCausalLM(config, _dtype, device);
            // On CUDA (one process per rank) the seeded default generator draws on the device; on CPU (ranks may be threads
            // of one process) a private generator per model.
            if (cuda) { manual_seed(o.Seed); TrainBench.RandomInit(_model); }
            else TrainBench.RandomInit(_model, NewGenerator((ulong)o.Seed));
            AdapterInjector.Inject(_model, new QuanTAConfig { Layout = layout, Seed = o.Seed }, TargetModules.Names("q_proj", "v_proj"));
            _model.train();
            _bank = QuanTABank.Create(_model);
            Trainable = _bank.OptimizerParameters(_model).Select(p => p.Parameter).ToArray();
            TokensPerRow = o.Seq;
            var shard = tensor(new ShardedBatches(globalBatch, rank, world).Rows.Select(i => (long)i).ToArray());
            for (int s = 0; s < o.Steps; s++)                                 // data made before timing
            {
                var g = NewGenerator((ulong)(o.Seed * 100_003L + s));
                using var all = randint(0, config.VocabSize, [globalBatch, o.Seq], generator: g, dtype: ScalarType.Int64);
                _ids.Add(all.index_select(0, shard).to(device).DetachFromDisposeScope());
            }
        }

        public Parameter[] Trainable { get; }
        public long TokensPerRow { get; }

        public Tensor Loss(int step)
        {
            _bank?.Materialize(_dtype);
            using var logits = _model.forward(_ids[step], null);              // (B/W, T, V), freed once the loss is built
            return Losses.CausalLMUnchecked(logits, _ids[step]);             // mean over this rank's tokens (all rows full)
        }

        public void AfterStep() => _bank?.Clear();

        public void Dispose() { foreach (var t in _ids) t.Dispose(); _bank?.Dispose(); _model.Dispose(); }
    }

    /// <summary>
    /// A stand-in with TinyLlama's linear layers (q, k, v, o, gate, up, down; GQA k/v width) but no attention scores and
    /// rank-r fp32 adapters on q and v: per layer
    /// h ← h + o(q(n) + repeat(k(n) + v(n))), n = rmsnorm(h);  h ← h + down(silu(gate(m)) · up(m)), m = rmsnorm(h);
    /// loss = mse(h, y) against random targets. Isolates the communication pattern from the attention kernels.
    /// </summary>
    sealed class StandInWorkload : IDistributedWorkload
    {
        readonly StandInStack _model;
        readonly List<Tensor> _xs = [], _ys = [];

        public StandInWorkload(DistributedBench.Options o, int globalBatch, int rank, int world, Device device)
        {
            var dtype = device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32;
            _model = new StandInStack(o, dtype, device);
            Trainable = _model.parameters().Where(p => p.requires_grad).ToArray();
            TokensPerRow = o.Seq;
            var shard = new ShardedBatches(globalBatch, rank, world).Rows.Select(i => (long)i).ToArray();
            for (int s = 0; s < o.Steps; s++)
            {
                using var scope = NewDisposeScope();
                var g = NewGenerator((ulong)(o.Seed * 100_003L + s));
                var x = Randn([globalBatch, o.Seq, o.Hidden], g, device);                 // (G, T, H): same on every rank
                var y = Randn([globalBatch, o.Seq, o.Hidden], g, device);
                var idx = tensor(shard, device: device);
                _xs.Add(x.index_select(0, idx).to(dtype).DetachFromDisposeScope());       // (G/W, T, H)
                _ys.Add(y.index_select(0, idx).to(dtype).DetachFromDisposeScope());
            }
        }

        public Parameter[] Trainable { get; }
        public long TokensPerRow { get; }

        public Tensor Loss(int step)
            => nn.functional.mse_loss(_model.forward(_xs[step]).to_type(ScalarType.Float32), _ys[step].to_type(ScalarType.Float32));

        public void AfterStep() { }

        public void Dispose() { foreach (var t in _xs.Concat(_ys)) t.Dispose(); _model.Dispose(); }
    }

    static Tensor RmsNorm(Tensor h)   // no weight: x / sqrt(mean(x²) + eps), statistics in fp32
        => h * rsqrt(h.to_type(ScalarType.Float32).pow(2).mean([-1], keepdim: true).add(1e-6)).to_type(h.dtype);

    sealed class StandInStack : nn.Module<Tensor, Tensor>
    {
        readonly ModuleList<AdaptableLinear> q = new(), k = new(), v = new(), o = new(), gate = new(), up = new(), down = new();
        readonly int _repeat;

        public StandInStack(DistributedBench.Options opt, ScalarType dtype, Device device) : base(nameof(StandInStack))
        {
            var g = NewGenerator((ulong)opt.Seed);
            var ga = new Generator((ulong)opt.Seed + 1);                                        // adapters: CPU generator, fp32
            _repeat = opt.Hidden / opt.KvDim;
            AdaptableLinear Lin(int inF, int outF, bool adapt)
            {
                var lin = new AdaptableLinear(inF, outF, hasBias: false, dtype: dtype, device: device);
                using (no_grad()) using (var w0 = Randn([outF, inF], g, device).div_(Math.Sqrt(inF) * 2)) lin.weight.copy_(w0);
                if (adapt) lin.Attach(new LowRankStandIn(inF, outF, opt.AdapterRank, ga, device));
                return lin;
            }
            for (int l = 0; l < opt.Layers; l++)
            {
                q.Add(Lin(opt.Hidden, opt.Hidden, true)); k.Add(Lin(opt.Hidden, opt.KvDim, false)); v.Add(Lin(opt.Hidden, opt.KvDim, true));
                o.Add(Lin(opt.Hidden, opt.Hidden, false));
                gate.Add(Lin(opt.Hidden, opt.Intermediate, false)); up.Add(Lin(opt.Hidden, opt.Intermediate, false)); down.Add(Lin(opt.Intermediate, opt.Hidden, false));
            }
            RegisterComponents();
        }

        public override Tensor forward(Tensor h)                                                 // (B, T, H)
        {
            for (int l = 0; l < q.Count; l++)
            {
                var n = RmsNorm(h);
                var kv = (k[l].forward(n) + v[l].forward(n)).repeat(1, 1, _repeat);                // (B, T, kv) → (B, T, H)
                h = h + o[l].forward(q[l].forward(n) + kv);
                var m = RmsNorm(h);
                h = h + down[l].forward(nn.functional.silu(gate[l].forward(m)) * up[l].forward(m)); // (B, T, I) → (B, T, H)
            }
            return h;
        }
    }

    /// <summary>A LoRA-shaped fp32 adapter (ΔW = B·A) standing in for QuanTA: the communication pattern is identical.</summary>
    sealed class LowRankStandIn : Adapter
    {
#pragma warning disable IDE1006
        public Parameter A, B;
#pragma warning restore IDE1006
        readonly int _in, _out;
        public LowRankStandIn(int inF, int outF, int r, Generator g, Device device) : base(nameof(LowRankStandIn))
        {
            _in = inF; _out = outF;
            A = new Parameter(randn([r, inF], generator: g).div_(Math.Sqrt(inF)).to(device));
            B = new Parameter(randn([outF, r], generator: g).mul_(0.01).to(device));
            RegisterComponents();
        }
        public override int InFeatures => _in;
        public override int OutFeatures => _out;
        public override string Method => "standin";
        public override Tensor Delta(Tensor x) => x.to_type(ScalarType.Float32).matmul(A.t()).matmul(B.t()).to_type(x.dtype);   // (…, in) → (…, r) → (…, out)
        public override Tensor DeltaWeight() => B.matmul(A);
        public override IReadOnlyDictionary<string, object> Describe() => new Dictionary<string, object> { ["r"] = A.shape[0] };
    }
}
