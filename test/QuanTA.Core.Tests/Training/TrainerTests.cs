using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Training;

[Collection(TrainingCollection.Name)]
public class TrainerTests
{
    [Fact]
    public void LossFallsAndOnlyTrainableParametersMove()
    {
        using var net = new ToyNet(seed: 1);
        var data = ToyData.Batches(64, 8);
        var before = ToyData.MeanLoss(net, data);
        var frozen = net.fc1.weight.bytes.ToArray();
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 20, LearningRate = 1e-2, LogEveryNSteps = 1000 });
        Assert.Equal(new[] { "fc1.toy.lora_A", "fc1.toy.lora_B", "head.weight", "head.bias" }, trainer.Parameters.Select(p => p.name));

        var result = trainer.Train(BatchSource.FromList(data, shuffle: true), ToyData.MseLoss(net));

        var after = ToyData.MeanLoss(net, data);
        Assert.Equal(160, result.Steps);
        Assert.Equal(160, result.History.Steps.Count);
        Assert.True(after < 0.3 * before, $"loss {before:F4} → {after:F4}");
        Assert.True(result.History.Steps.TakeLast(8).Average(s => s.Loss) < result.History.Steps.Take(8).Average(s => s.Loss));
        Assert.Equal(frozen, net.fc1.weight.bytes.ToArray());   // the frozen base weight did not move
    }

    [Fact]
    public void LearningRateOfEveryStepFollowsTheScheduleWithWarmup()
    {
        using var net = new ToyNet(seed: 2);
        var data = ToyData.Batches(40, 4);                // 10 batches
        var options = new TrainerOptions { Epochs = 2, GradientAccumulationSteps = 3, LearningRate = 1e-3, Schedule = LearningRateSchedule.Cosine, WarmupRatio = 0.1 };
        using var trainer = Trainer<ToyBatch>.ForModule(net, options);
        var result = trainer.Train(BatchSource.FromList(data), ToyData.MseLoss(net));

        Assert.Equal(8, result.Steps);                    // ceil(10 / 3) = 4 steps per epoch (last one of 1 batch)
        Assert.Equal(0.0, result.History.Steps[0].LearningRate);          // warmup ceil(0.8) = 1 step, starts at 0 as in HF
        Assert.Equal(1e-3, result.History.Steps[1].LearningRate, 12);     // peak right after warmup
        // cosine: step s ≥ 1 → 0.5 (1 + cos(π (s-1)/7))
        for (var s = 1; s < 8; s++)
            Assert.Equal(1e-3 * 0.5 * (1 + Math.Cos(Math.PI * (s - 1) / 7.0)), result.History.Steps[s].LearningRate, 12);
        Assert.Equal(3, result.History.Steps[0].Tokens / 4);              // 3 micro-batches of 4 examples
        Assert.Equal(4, result.History.Steps[3].Tokens);                  // the epoch's last, partial group
    }

    [Fact]
    public void AccumulatingTwoHalfBatchesEqualsOneFullBatch()
    {
        var small = ToyData.Batches(48, 4);
        var large = ToyData.Batches(48, 8);
        var options = new TrainerOptions { Epochs = 2, LearningRate = 5e-3, MaxGradNorm = 0.5 };

        using var a = new ToyNet(seed: 3);
        using (var t = Trainer<ToyBatch>.ForModule(a, WithAccum(options, 2)))
            t.Train(BatchSource.FromList(small), ToyData.MseLoss(a));
        using var b = new ToyNet(seed: 3);
        using (var t = Trainer<ToyBatch>.ForModule(b, WithAccum(options, 1)))
            t.Train(BatchSource.FromList(large), ToyData.MseLoss(b));

        foreach (var ((name, pa), (_, pb)) in a.Trainable().Zip(b.Trainable()))
            Assert.True(pa.allclose(pb, rtol: 1e-4, atol: 1e-6), $"{name} differs: max |Δ| {(pa - pb).abs().max().item<float>()}");
    }

    static TrainerOptions WithAccum(TrainerOptions o, int accum) { var c = o.Clone(); c.GradientAccumulationSteps = accum; return c; }

    [Fact]
    public void GradientsAreClippedToMaxGradNormBeforeTheAdamWUpdate()
    {
        // loss = p · g with g = (3, 4, 0): ∇ = g, ‖g‖ = 5. Clipped to 1 → (0.6, 0.8, 0); Adam's first moment after one step = (1-β1)·grad.
        var p = new Parameter(zeros(3));
        var g = tensor(new[] { 3f, 4f, 0f });
        using var trainer = new Trainer<int>(new[] { ("p", p) }, new TrainerOptions { Epochs = 1, MaxGradNorm = 1.0 });
        var result = trainer.Train(BatchSource.FromList(new[] { 0 }), _ => new TrainStepResult(p.mul(g).sum(), 1));

        Assert.Equal(5.0, result.History.Steps[0].GradNorm, 5);
        var state = (AdamW.State)trainer.Optimizer.state_dict().State[0];
        Assert.Equal(new[] { 0.06f, 0.08f, 0f }, state.exp_avg.data<float>().ToArray().Select(v => MathF.Round(v, 6)));

        var q = new Parameter(zeros(3));
        using var unclipped = new Trainer<int>(new[] { ("q", q) }, new TrainerOptions { Epochs = 1, MaxGradNorm = 0 });
        unclipped.Train(BatchSource.FromList(new[] { 0 }), _ => new TrainStepResult(q.mul(g).sum(), 1));
        var s2 = (AdamW.State)unclipped.Optimizer.state_dict().State[0];
        Assert.Equal(new[] { 0.3f, 0.4f, 0f }, s2.exp_avg.data<float>().ToArray().Select(v => MathF.Round(v, 6)));
    }

    [Fact]
    public void NonFiniteLossStopsWithTheStepNamedAndTheLastGoodStateKept()
    {
        using var dir = new TempDir();
        using var net = new ToyNet(seed: 4);
        var data = ToyData.Batches(32, 4);
        byte[][]? atFailure = null;
        var calls = 0;
        var loss = ToyData.MseLoss(net);
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 1, GradientAccumulationSteps = 2, LearningRate = 1e-2, CheckpointDir = dir.Path });
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Train(BatchSource.FromList(data), b =>
        {
            if (++calls == 6) { atFailure = net.TrainableBytes(); var r = loss(b); return r with { Loss = r.Loss * double.NaN }; }
            return loss(b);
        }));

        Assert.Equal(3, e.Step);                                   // micro-batch 6 belongs to optimizer step 3
        Assert.Contains("step 3", e.Message);
        Assert.Contains("lower learning rate", e.Message);
        Assert.Equal(atFailure, net.TrainableBytes());             // the failing step was not applied
        Assert.Equal(2, trainer.History.Steps.Count);
        Assert.NotNull(e.LastGoodCheckpoint);
        Assert.Equal(2, Checkpoints.Verify(e.LastGoodCheckpoint!).Step);
    }

    [Fact]
    public void OutOfMemoryInAStepGivesAClearErrorAndKeepsTheLastCompletedStep()
    {
        using var dir = new TempDir();
        using var net = new ToyNet(seed: 6);
        var data = ToyData.Batches(32, 4);
        byte[][]? atFailure = null;
        var calls = 0;
        var loss = ToyData.MseLoss(net);
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 1, BatchSize = 4, GradientAccumulationSteps = 2, LearningRate = 1e-2, CheckpointDir = dir.Path,
            OutOfMemoryHint = "or try the lean path" });
        var e = Assert.Throws<OutOfMemoryOnDeviceException>(() => trainer.Train(BatchSource.FromList(data), b =>
        {
            // what libtorch's CUDA caching allocator throws, as TorchSharp surfaces it
            if (++calls == 5) { atFailure = net.TrainableBytes(); throw new System.Runtime.InteropServices.ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB"); }
            return loss(b);
        }));
        Assert.Equal(3, e.Step);
        Assert.Contains("batch size", e.Message);
        Assert.Contains("sequence length; or try the lean path.", e.Message);
        Assert.Equal(atFailure, net.TrainableBytes());             // nothing of the failing step was applied
        Assert.NotNull(e.LastCheckpoint);
        Assert.Equal(2, Checkpoints.Verify(e.LastCheckpoint!).Step);
        Assert.False(OutOfMemoryOnDeviceException.IsDeviceOutOfMemory(new InvalidOperationException("shape mismatch")));
    }

    [Fact]
    public void CancellationStopsWithinOneMicroBatchAndLeavesACheckpoint()
    {
        using var dir = new TempDir();
        using var net = new ToyNet(seed: 5);
        var data = ToyData.Batches(40, 4);
        using var cts = new CancellationTokenSource();
        var calls = 0;
        var loss = ToyData.MseLoss(net);
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 3, GradientAccumulationSteps = 2, CheckpointDir = dir.Path });
        var e = Assert.ThrowsAny<OperationCanceledException>(() => trainer.Train(BatchSource.FromList(data), b =>
        {
            if (++calls == 7) cts.Cancel();                        // during the first micro-batch of step 4
            return loss(b);
        }, cancellationToken: cts.Token));

        Assert.Equal(7, calls);                                    // not one more forward pass
        Assert.Equal(3, trainer.History.Steps.Count);
        var checkpoint = Assert.Single(Checkpoints.List(dir.Path));
        var state = Checkpoints.Verify(checkpoint);
        Assert.Equal(3, state.Step);
        Assert.Equal((0, 6L), (state.Epoch, state.BatchInEpoch));  // the partial step's batch will be redone
        Assert.Contains(checkpoint, e.Message);
    }

    [Fact]
    public void CancellationObservedInsideTheLossFunctionAlsoLeavesACheckpoint()
    {
        using var dir = new TempDir();
        using var net = new ToyNet(seed: 5);
        using var cts = new CancellationTokenSource();
        var calls = 0;
        var loss = ToyData.MseLoss(net);
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 1, CheckpointDir = dir.Path });
        Assert.ThrowsAny<OperationCanceledException>(() => trainer.Train(BatchSource.FromList(ToyData.Batches(40, 4)), b =>
        {
            if (++calls == 4) { cts.Cancel(); cts.Token.ThrowIfCancellationRequested(); }
            return loss(b);
        }, cancellationToken: cts.Token));
        Assert.Equal(3, Checkpoints.Verify(Assert.Single(Checkpoints.List(dir.Path))).Step);
    }

    [Fact]
    public void EarlyStoppingAfterPatienceAndBestParametersRestored()
    {
        using var net = new ToyNet(seed: 6);
        var data = ToyData.Batches(32, 4);
        var metrics = new Queue<double>(new[] { 1.0, 0.5, 0.6, 0.55, 0.7, 0.1 });
        byte[][]? atBest = null;
        var validations = 0;
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions
        {
            Epochs = 5, LearningRate = 1e-2, ValidateEverySteps = 2, EarlyStoppingPatience = 3, EarlyStoppingThreshold = 0.01,
            RestoreBestAtEnd = true,
        });
        var result = trainer.Train(BatchSource.FromList(data), ToyData.MseLoss(net), validate: () =>
        {
            Assert.False(net.training);                            // validation runs in eval mode
            if (++validations == 2) atBest = net.TrainableBytes();
            return metrics.Dequeue();
        });

        Assert.True(result.StoppedEarly);
        Assert.Equal(5, validations);                              // 0.6, 0.55 (< threshold), 0.7: three without improvement
        Assert.Equal(10, result.Steps);
        Assert.Equal(0.5, result.BestMetric);
        Assert.Equal(4, result.BestStep);
        Assert.Equal(atBest, net.TrainableBytes());
        Assert.True(net.training);
    }

    [Fact]
    public void MemoryStaysFlatOverTwoHundredSteps()
    {
        using var net = new ToyNet(seed: 8, dropout: 0.1);
        var data = ToyData.Batches(64, 4);
        var live = new Dictionary<long, long>();
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 25, LogEveryNSteps = 20, GradientAccumulationSteps = 2, MaxGradNorm = 1 });
        var progress = new SyncProgress<TrainingProgress>(p =>
        {
            if (p.Kind == TrainingEventKind.Step) live[p.Step] = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        });
        var result = trainer.Train(BatchSource.FromList(data, shuffle: true), ToyData.MseLoss(net), progress: progress);

        Assert.Equal(200, result.Steps);
        Assert.Equal(live[20], live[200]);
        Assert.Equal(live[40], live[120]);
    }

    [Fact]
    public void ProgressReportsStepsLossRateThroughputAndEta()
    {
        using var net = new ToyNet(seed: 9);
        var data = ToyData.Batches(24, 4);
        var events = new List<TrainingProgress>();
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 2, LogEveryNSteps = 4 });
        var result = trainer.Train(BatchSource.FromList(data), ToyData.MseLoss(net), progress: new SyncProgress<TrainingProgress>(events.Add));

        var steps = events.Where(e => e.Kind == TrainingEventKind.Step).ToList();
        Assert.Equal(new long[] { 4, 8, 12 }, steps.Select(e => e.Step));
        Assert.All(steps, e => Assert.Equal(12L, e.TotalSteps));
        Assert.Equal(result.History.Steps.Take(4).Average(s => s.Loss), steps[0].Loss, 12);
        Assert.All(steps, e => Assert.True(e.TokensPerSecond > 0 && e.LearningRate > 0 && e.GradNorm > 0));
        Assert.Equal(TimeSpan.Zero, steps[^1].EstimatedRemaining);
        Assert.Equal(2, events.Count(e => e.Kind == TrainingEventKind.EpochEnd));
        Assert.Contains("loss", steps[0].ToString());
    }

    [Fact]
    public void BadInputsAreClearErrors()
    {
        var frozen = new Parameter(zeros(2), requires_grad: false);
        Assert.Contains("does not require grad", Assert.Throws<ArgumentException>(() => new Trainer<int>(new[] { ("w", frozen) }, new TrainerOptions())).Message);
        Assert.Contains("No trainable", Assert.Throws<ArgumentException>(() => new Trainer<int>(Array.Empty<(string, Parameter)>(), new TrainerOptions())).Message);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TrainerOptions { GradientAccumulationSteps = 0 }.Validate());
        Assert.Contains("GradientAccumulationSteps", e.Message);
        var p = new Parameter(zeros(2));
        using var t = new Trainer<int>(new[] { ("p", p) }, new TrainerOptions());
        Assert.Contains("empty", Assert.Throws<ArgumentException>(() => t.Train(BatchSource.FromList(Array.Empty<int>()), _ => default)).Message);
    }
}
