using Microsoft.ML;
using QuanTA.MLNet.AutoML;

namespace QuanTA.MLNet.Tests.AutoML;

/// <summary>Real trials (ML.NET fit of the tiny LLaMA fixture) through the sweep: kept to a few one-epoch trials.</summary>
public sealed class SweepEndToEndTests : IDisposable
{
    readonly string _folder = Path.Combine(Path.GetTempPath(), $"quanta-sweep-e2e-{Guid.NewGuid():N}");

    public void Dispose() { if (Directory.Exists(_folder)) Directory.Delete(_folder, true); }

    static QuanTAFineTuneOptions BaseOptions() => new()
    {
        BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), BatchSize = 8, MaxSequenceLength = 16,
    };

    [Fact]
    public void RealTrialsTrainScoreAndCountParametersLikeTheModel()
    {
        var ml = new MLContext(seed: 3);
        var train = ToyData.View(ml, ToyData.Classification(24, seed: 1));
        var validation = ToyData.View(ml, ToyData.Classification(12, seed: 2));
        var space = QuanTASearchSpace.Create(128).Fix("Epochs", 1).Fix("TargetModules", "q_proj,v_proj").Fix("CosineSchedule", false);
        var counted = new List<(long Model, double Loss)>();
        var seen = new List<SweepTrialResult>();
        var experiment = ml.QuanTASweep(BaseOptions())
            .SetData(train, validation)
            .SetSearchSpace(space)
            .SetMetric("validation loss (custom)", (model, data) =>
            {
                var quanta = ((IEnumerable<ITransformer>)model).OfType<QuanTAFineTuneTransformer>().Single();
                Assert.Equal(12, data.GetRowCount() ?? data.Preview().RowView.Length);   // the raw validation data
                counted.Add((quanta.TrainableParameterCount, quanta.ValidationLosses[^1]));
                return quanta.ValidationLosses[^1];
            }, greaterIsBetter: false)
            .SetBudget(3)
            .SetOutputFolder(_folder);
        experiment.TrialCompleted += seen.Add;
        var result = experiment.Run();

        Assert.Equal(3, result.Trials.Count);
        Assert.Equal(result.Trials, seen);
        Assert.All(result.Trials, t => Assert.Equal(SweepTrialStatus.Succeeded, t.Status));
        Assert.Equal(counted.Select(c => c.Model), result.Trials.Select(t => t.TrainableParameters));   // config count = injected model
        Assert.Equal(counted.Select(c => c.Loss), result.Trials.Select(t => t.Metric!.Value));
        Assert.All(result.Trials, t => Assert.InRange(t.Metric!.Value, 0.01, 5));
        Assert.Equal(3, result.Trials.Select(t => t.Description).Distinct().Count());
        foreach (var f in new[] { SweepResultFiles.JsonFileName, SweepResultFiles.CsvFileName, SweepResultFiles.PlotFileName })
            Assert.True(new FileInfo(Path.Combine(_folder, f)).Length > 100, f);

        // resume: nothing is trained again
        var again = ml.QuanTASweep(BaseOptions()).SetData(train, validation).SetSearchSpace(space).SetBudget(3).SetOutputFolder(_folder)
            .SetMetric("validation loss (custom)", (_, _) => throw new InvalidOperationException("must not train"), false).Run();
        Assert.Equal(3, again.ReusedTrials);
        Assert.Equal(result.Trials.Select(t => t.Metric), again.Trials.Select(t => t.Metric));
    }

    [Fact]
    public void BuiltInAccuracyMetricAndARealDivergence()
    {
        var ml = new MLContext(seed: 3);
        var train = ToyData.View(ml, ToyData.Classification(16, seed: 1));
        var validation = ToyData.View(ml, ToyData.Classification(9, seed: 2));
        // one LoRA trial at a sane learning rate, then one whose learning rate is absurd
        var space = QuanTASearchSpace.Create(128).Fix("Adapter", "LoRA").Fix("LoRA.Rank", 2).Fix("Epochs", 1)
            .Fix("TargetModules", "q_proj,v_proj").Fix("CosineSchedule", false)
            .With("LearningRate", new ChoiceOption([1e-3, 1e30]));
        var options = BaseOptions();
        options.MaxGradNorm = 0;
        var result = ml.QuanTASweep(options).SetData(train, validation).SetSearchSpace(space)
            .SetMetric(SweepMetric.MacroAccuracy).SetBudget(2).Run();
        Assert.True(result.GreaterIsBetter);
        Assert.Equal(2, result.Trials.Count);
        var ok = Assert.Single(result.Leaderboard);
        Assert.InRange(ok.Metric!.Value, 0, 1);
        var failed = Assert.Single(result.Trials, t => t.Status == SweepTrialStatus.Failed);
        Assert.Contains("1E+30", failed.Description.ToUpperInvariant());
        Assert.StartsWith("TrainingDivergedException: Training diverged", failed.Error);
    }
}
