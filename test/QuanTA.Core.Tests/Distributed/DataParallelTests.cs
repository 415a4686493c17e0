using QuanTA.Core.Adapters;
using QuanTA.Core.Distributed;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Distributed;

/// <summary>A tiny LoRA-like adapter (ΔW = B A) standing in for QuanTA: what matters here is trainable parameters behind an AdaptableLinear.</summary>
sealed class StandInAdapter : Adapter
{
#pragma warning disable IDE1006
    public Parameter lora_A, lora_B;
#pragma warning restore IDE1006
    public StandInAdapter(Tensor a, Tensor b) : base(nameof(StandInAdapter))
    {
        lora_A = new Parameter(a.clone()); lora_B = new Parameter(b.clone());
        RegisterComponents();
    }
    public override int InFeatures => (int)lora_A.shape[1];
    public override int OutFeatures => (int)lora_B.shape[0];
    public override string Method => "standin";
    public override Tensor Delta(Tensor x) => x.matmul(lora_A.t()).matmul(lora_B.t());   // (…, in) → (…, r) → (…, out)
    public override Tensor DeltaWeight() => lora_B.matmul(lora_A);
    public override IReadOnlyDictionary<string, object> Describe() => new Dictionary<string, object> { ["r"] = lora_A.shape[0] };
}

public class DataParallelTests
{
    const int In = 6, Out = 5, R = 2, B = 4, Steps = 3;
    readonly Tensor _w, _b, _a0, _b0, _x, _y;   // frozen base, adapter init, data [Steps·2B, …]

    public DataParallelTests()
    {
        TorchRuntime.Initialize();
        var g = new Generator(1234);
        _w = randn(Out, In, generator: g); _b = randn(Out, generator: g);
        _a0 = randn(R, In, generator: g) * 0.3; _b0 = randn(Out, R, generator: g) * 0.3;
        _x = randn(Steps * 2 * B, In, generator: g); _y = randn(Steps * 2 * B, Out, generator: g);
    }

    AdaptableLinear Model()
    {
        var m = new AdaptableLinear(In, Out, hasBias: true);
        using (no_grad()) { m.weight.copy_(_w); m.bias!.copy_(_b); }
        m.Attach(new StandInAdapter(_a0, _b0));
        return m;
    }

    /// <summary>One training run: per step, rows from <paramref name="rowsOfStep"/>, mean MSE, backward, sync, clip, AdamW.</summary>
    (float[] Params, double[] Losses) Train(IList<int[]> rowsOfStep, ICommunicator comm, bool sync = true, long bucket = DistributedGradientSync.DefaultBucketElements)
    {
        using var model = Model();
        var trainable = model.parameters().Where(p => p.requires_grad).ToArray();
        using var gradSync = new DistributedGradientSync(trainable, comm, bucket);
        var opt = optim.AdamW(trainable, lr: 0.05, weight_decay: 0.01);
        var losses = new List<double>();
        foreach (var rows in rowsOfStep)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var idx = tensor(rows.Select(i => (long)i).ToArray());
            var loss = nn.functional.mse_loss(model.forward(_x.index_select(0, idx)), _y.index_select(0, idx));   // mean over this rank's rows
            loss.backward();
            if (sync) gradSync.Synchronize();                                   // after backward, before clipping / step
            nn.utils.clip_grad_norm_(trainable, 0.5);
            opt.step();
            losses.Add(comm.AverageScalar(loss.item<float>()));
        }
        using (no_grad())
            return (trainable.SelectMany(p => p.data<float>().ToArray()).ToArray(), losses.ToArray());
    }

    List<int[]> ShardBatches(int rank, int world) => new ShardedBatches(Steps * 2 * B, rank, world).Batches(2 * B / world).ToList();

    [Fact]
    public void TwoRanksWithBatchBMatchOneRankWithBatch2B()
    {
        var single = Train(ShardBatches(0, 1), new SingleProcessCommunicator());
        var comms = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(30));
        var ranks = Ranks.RunOk(2, r => { using var c = comms[r]; return Train(ShardBatches(r, 2), c); });

        foreach (var (p, losses) in ranks)
        {
            Assert.Equal(single.Params.Length, p.Length);
            for (int i = 0; i < p.Length; i++) Assert.True(Math.Abs(p[i] - single.Params[i]) < 2e-6, $"param {i}: {p[i]} vs {single.Params[i]}");
            for (int s = 0; s < Steps; s++) Assert.True(Math.Abs(losses[s] - single.Losses[s]) < 1e-5, $"loss {s}: {losses[s]} vs {single.Losses[s]}");
        }
        Assert.Equal(ranks[0].Params, ranks[1].Params);                          // bit-identical replicas
        Assert.NotEqual(single.Params, _a0.data<float>().ToArray().Concat(_b0.data<float>().ToArray()).ToArray()); // it trained
    }

    [Fact]
    public void WithoutGradientSyncTheRanksWouldDiverge()   // proves the test above can fail
    {
        var single = Train(ShardBatches(0, 1), new SingleProcessCommunicator());
        var comms = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(30));
        var ranks = Ranks.RunOk(2, r => { using var c = comms[r]; return Train(ShardBatches(r, 2), c, sync: false); });
        Assert.True(ranks[0].Params.Zip(single.Params).Max(t => Math.Abs(t.First - t.Second)) > 1e-3);
    }

    [Fact]
    public void SmallBucketsGiveTheSameResultAsOneBuffer()
    {
        var comms1 = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(30));
        var one = Ranks.RunOk(2, r => { using var c = comms1[r]; return Train(ShardBatches(r, 2), c); });
        var comms2 = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(30));
        var many = Ranks.RunOk(2, r => { using var c = comms2[r]; return Train(ShardBatches(r, 2), c, bucket: 7); });
        Assert.Equal(one[0].Params, many[0].Params);

        using var model = Model();
        using var s = new DistributedGradientSync(model.parameters(), new SingleProcessCommunicator(), 7);
        Assert.Equal(2, s.BucketCount);                      // A (12 elements) and B (10) each exceed 7: one bucket each
        Assert.Equal(R * In + Out * R, s.TotalElements);     // frozen weight/bias are not synchronized
    }

    [Fact]
    public void MismatchedModelsAcrossRanksAreAClearError()
    {
        var comms = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(10));
        var results = Ranks.Run(2, r =>
        {
            using var c = comms[r];
            using var p = new Parameter(zeros(10 + r));
            using var s = new DistributedGradientSync(new[] { p }, c);
            return 0;
        });
        foreach (var (_, e) in results) Assert.Contains("differs between ranks", Assert.IsType<InvalidOperationException>(e).Message);
    }

    [Fact]
    public void BroadcastParametersMakesReplicasEqual()
    {
        var comms = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(10));
        var values = Ranks.RunOk(2, r =>
        {
            using var c = comms[r];
            using var p = new Parameter(full(5, (float)r + 1));
            using var s = new DistributedGradientSync(new[] { p }, c);
            s.BroadcastParameters();
            return p.data<float>().ToArray();
        });
        Assert.All(values, v => Assert.Equal(Enumerable.Repeat(1f, 5), v));
    }

    [Fact]
    public void RankThatDiesMidTrainingEndsTheOthersWithAClearError()
    {
        var comms = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(60));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var results = Ranks.Run(2, r =>
        {
            using var c = comms[r];
            var rows = ShardBatches(r, 2);
            if (r == 1) { Train(rows.Take(1).ToList(), c); throw new InvalidOperationException("rank 1 died"); }
            return Train(rows, c);                                               // needs rank 1 for step 2
        });
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20));
        Assert.Contains("rank 1 left the group", Assert.IsType<InvalidOperationException>(results[0].Error).Message);
    }
}
