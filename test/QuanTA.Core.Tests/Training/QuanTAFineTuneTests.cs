using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using QuanTA.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Training;

/// <summary>The trainer on the real stack: the tiny Llama fixture with QuanTA on q/v, prompt→target causal-LM loss.</summary>
[Collection(TrainingCollection.Name)]
public class QuanTAFineTuneTests
{
    sealed record LmBatch(Tensor InputIds, Tensor Labels);

    /// <summary>8 sequences of 6 random prompt tokens + the fixed answer 100..105, in batches of 4; loss only on the answer.</summary>
    static List<LmBatch> Data()
    {
        using var g = new Generator(17);
        var list = new List<LmBatch>();
        for (var b = 0; b < 2; b++)
        {
            using var scope = NewDisposeScope();
            var ids = cat(new[] { randint(2, 1024, new long[] { 4, 6 }, generator: g), arange(100L, 106L).expand(4, -1) }, 1);  // (4, 12)
            var labels = Losses.PromptMaskedLabels(ids, ones_like(ids), new[] { 6, 6, 6, 6 });
            list.Add(new LmBatch(ids.DetachFromDisposeScope(), labels.DetachFromDisposeScope()));
        }
        return list;
    }

    static (CausalLM model, Trainer<LmBatch> trainer) Setup(TrainerOptions options, int adapterSeed)
    {
        TorchRuntime.Initialize();
        var model = CausalLM.FromPretrained(Path.Combine(AppContext.BaseDirectory, "fixtures", "llama-tiny"));
        AdapterInjector.Inject(model, new QuanTAConfig { Layout = [4, 4, 4, 2], Dropout = 0.1, Seed = adapterSeed }, TargetModules.Names("q_proj", "v_proj"));
        return (model, Trainer<LmBatch>.ForModule(model, options));
    }

    static Func<LmBatch, TrainStepResult> LossFn(CausalLM model) => b =>
    {
        var logits = model.forward(b.InputIds, null);                    // (B, T, V)
        var loss = Losses.CausalLM(logits, b.Labels, out var n);
        return new TrainStepResult(loss, n);
    };

    [Fact]
    public void QuanTAOnTinyLlamaLearnsTargetsAndResumesBitwise()
    {
        var data = Data();
        TrainerOptions Options(string dir) => new() { Epochs = 12, LearningRate = 5e-2, Schedule = LearningRateSchedule.Constant, CheckpointDir = dir, Seed = 3 };

        using var dirA = new TempDir();
        var (modelA, trainerA) = Setup(Options(dirA.Path), adapterSeed: 1);
        Assert.Equal(2 * 2 * 6, trainerA.Parameters.Count);              // 2 layers × (q, v) × 6 tensors T_i (all pairs of 4 axes)
        Assert.Equal(2 * 2 * 6, trainerA.StateTensors.Count);            // and their frozen copies S_i (buffers)
        Assert.All(trainerA.StateTensors, s => Assert.Contains(".quanta.S_", s.name));
        Assert.All(trainerA.Parameters, p => Assert.Contains(".quanta.", p.name));
        var full = trainerA.Train(BatchSource.FromList(data, shuffle: true, seed: 3), LossFn(modelA));
        var first = full.History.Steps.Take(2).Average(s => s.Loss);
        var last = full.History.Steps.TakeLast(2).Average(s => s.Loss);
        Assert.True(last < first - 1.0, $"answer-token loss {first:F3} → {last:F3} (chance: ln 1024 = 6.93)");
        var expected = trainerA.Parameters.Select(p => p.parameter.bytes.ToArray()).ToArray();
        trainerA.Dispose(); modelA.Dispose();

        using var dirB = new TempDir();
        var (modelB, trainerB) = Setup(Options(dirB.Path), adapterSeed: 1);
        using var cts = new CancellationTokenSource();
        var calls = 0;
        var lossB = LossFn(modelB);
        Assert.Throws<OperationCanceledException>(() => trainerB.Train(BatchSource.FromList(data, shuffle: true, seed: 3), b =>
        {
            if (++calls == 9) cts.Cancel();
            return lossB(b);
        }, cancellationToken: cts.Token));
        trainerB.Dispose(); modelB.Dispose();

        var resume = Options(dirB.Path);
        resume.ResumeFrom = dirB.Path;
        var (modelC, trainerC) = Setup(resume, adapterSeed: 2);          // other adapter init: all state must come from the checkpoint
        var resumed = trainerC.Train(BatchSource.FromList(data, shuffle: true, seed: 3), LossFn(modelC));
        Assert.Equal(full.History.Steps.Select(s => s.Loss), resumed.History.Steps.Select(s => s.Loss));
        Assert.Equal(expected, trainerC.Parameters.Select(p => p.parameter.bytes.ToArray()).ToArray());
        trainerC.Dispose(); modelC.Dispose();
    }
}
