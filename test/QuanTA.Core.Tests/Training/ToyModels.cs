using QuanTA.Core.Adapters;
using QuanTA.Core.Runtime;
using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Training;

/// <summary>
/// Training tests touch libtorch's global generator, so they run alone (not beside other test classes), on one intra-op
/// thread: on a loaded 2-core machine libtorch's 2-thread pool was measured ~20× slower (1.5 s vs 62 ms per tiny-Llama step).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TrainingCollection : ICollectionFixture<SingleThreadTorch>
{
    public const string Name = "Training (global RNG)";
}

/// <summary>Sets libtorch to one thread while the training collection runs (nothing else runs then), restores it after.</summary>
public sealed class SingleThreadTorch : IDisposable
{
    readonly int _before;

    public SingleThreadTorch()
    {
        TorchRuntime.Initialize();
        _before = torch.get_num_threads();
        torch.set_num_threads(1);
    }

    public void Dispose() => torch.set_num_threads(_before);
}

/// <summary>A small low-rank adapter with input dropout (exercises the RNG), only for these tests.</summary>
sealed class ToyLowRankAdapter : Adapter
{
#pragma warning disable IDE1006
    public Parameter lora_A, lora_B;
#pragma warning restore IDE1006
    readonly Dropout _dropout;
    readonly int _in, _out;

    public ToyLowRankAdapter(int inFeatures, int outFeatures, int rank, double dropout) : base("toy")
    {
        _in = inFeatures; _out = outFeatures;
        lora_A = new Parameter(randn(rank, inFeatures) * 0.3);
        lora_B = new Parameter(randn(outFeatures, rank) * 0.1);
        _dropout = nn.Dropout(dropout);
        RegisterComponents();
    }

    public override int InFeatures => _in;
    public override int OutFeatures => _out;
    public override string Method => "toy";
    public override Tensor Delta(Tensor x) => _dropout.forward(x).matmul(lora_A.t()).matmul(lora_B.t());
    public override Tensor DeltaWeight() => lora_B.matmul(lora_A);
    public override IReadOnlyDictionary<string, object> Describe() => new Dictionary<string, object>();
}

/// <summary>x → AdaptableLinear(8→16, frozen, + adapter) → tanh → Linear(16→4) (trainable) → y.</summary>
sealed class ToyNet : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public AdaptableLinear fc1;
    public Linear head;
#pragma warning restore IDE1006

    /// <param name="seed">Seeds the frozen base weights (and the trainable ones unless <paramref name="trainableSeed"/> is given).</param>
    public ToyNet(long seed, double dropout = 0.0, long? trainableSeed = null) : base(nameof(ToyNet))
    {
        TorchRuntime.Initialize();
        torch.random.manual_seed(seed).Dispose();
        fc1 = new AdaptableLinear(8, 16, hasBias: true);
        using (no_grad())
        {
            fc1.weight.copy_(randn(16, 8) * 0.4);
            fc1.bias!.copy_(randn(16) * 0.1);
        }
        if (trainableSeed is long ts) torch.random.manual_seed(ts).Dispose();
        fc1.Attach(new ToyLowRankAdapter(8, 16, rank: 2, dropout));
        head = nn.Linear(16, 4);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => head.forward(fc1.forward(x).tanh());

    public List<(string name, Parameter parameter)> Trainable() => named_parameters().Where(p => p.parameter.requires_grad).ToList();

    /// <summary>All trainable tensors' bytes, for bitwise comparison.</summary>
    public byte[][] TrainableBytes() => Trainable().Select(p => p.parameter.detach().cpu().bytes.ToArray()).ToArray();
}

sealed record ToyBatch(Tensor X, Tensor Y);

static class ToyData
{
    /// <summary>n examples of y = tanh(x A) B + noise-free teacher, in batches of batchSize; tensors live outside any scope.</summary>
    public static List<ToyBatch> Batches(int n, int batchSize, long seed = 7)
    {
        TorchRuntime.Initialize();
        using var gen = new Generator((ulong)seed);
        using var a = randn(8, 6, generator: gen);
        using var b = randn(6, 4, generator: gen);
        using var x = randn(n, 8, generator: gen);
        using var y = x.matmul(a).tanh().matmul(b);
        var list = new List<ToyBatch>();
        for (var i = 0; i < n; i += batchSize)
        {
            var len = Math.Min(batchSize, n - i);
            list.Add(new ToyBatch(x.narrow(0, i, len).clone().DetachFromDisposeScope(), y.narrow(0, i, len).clone().DetachFromDisposeScope()));
        }
        return list;
    }

    public static Func<ToyBatch, TrainStepResult> MseLoss(ToyNet net)
        => b => new TrainStepResult(nn.functional.mse_loss(net.forward(b.X), b.Y), b.X.shape[0]);

    public static double MeanLoss(ToyNet net, IEnumerable<ToyBatch> batches)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return batches.Select(b => nn.functional.mse_loss(net.forward(b.X), b.Y).item<float>()).Average();
    }
}

/// <summary>Synchronous IProgress (Progress&lt;T&gt; would post to the thread pool).</summary>
sealed class SyncProgress<T>(Action<T> onReport) : IProgress<T>
{
    public void Report(T value) => onReport(value);
}

sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "quanta-train-" + Guid.NewGuid().ToString("N")[..10]));
    public string Path { get; }
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
