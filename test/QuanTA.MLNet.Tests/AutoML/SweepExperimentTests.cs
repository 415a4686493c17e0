using System.Text.Json;
using Microsoft.ML;
using QuanTA.Core.Training;
using QuanTA.MLNet.AutoML;

namespace QuanTA.MLNet.Tests.AutoML;

/// <summary>A trial runner that trains nothing: a made-up loss from the parameters (best near lr = 10^-2.5, better with more
/// epochs), with hooks to fail, wait or count calls.</summary>
sealed class FakeRunner : ISweepTrialRunner
{
    public readonly List<SweepTrial> Calls = [];
    public Func<SweepTrial, CancellationToken, double?>? Hook;

    public static double Loss(QuanTASweepParameters p, int epochs) =>
        Math.Abs(Math.Log10(p.LearningRate) + 2.5) + (p.Adapter == "LoRA" ? 0.2 : 0) + 0.1 / epochs;

    public double Run(SweepTrial trial, CancellationToken cancellationToken)
    {
        Calls.Add(trial);
        return Hook?.Invoke(trial, cancellationToken) ?? Loss(trial.Parameters, trial.Options.Epochs);
    }
}

public sealed class SweepExperimentTests : IDisposable
{
    readonly MLContext _ml = new(seed: 1);
    readonly string _folder = Path.Combine(Path.GetTempPath(), $"quanta-sweep-{Guid.NewGuid():N}");
    static readonly string Fixture = ToyData.Fixture("llama-tiny-seqcls");

    public void Dispose() { if (Directory.Exists(_folder)) Directory.Delete(_folder, true); }

    QuanTASweepExperiment Experiment(FakeRunner runner, int trials, TimeSpan? time = null, int seed = 1) =>
        _ml.QuanTASweep(new QuanTAFineTuneOptions { BaseModelPath = Fixture })
            .SetTrialRunner(runner).SetBudget(trials, time).SetSeed(seed);

    [Fact]
    public void RungsGrowByEtaUpToTheMaximum()
    {
        Assert.Equal([1, 3, 9], new SuccessiveHalvingTuner(1, 9, 3).RungEpochs);
        Assert.Equal([1, 2, 4, 6], new SuccessiveHalvingTuner(1, 6, 2).RungEpochs);
        Assert.Equal([5], new SuccessiveHalvingTuner(5, 5).RungEpochs);
        Assert.Throws<ArgumentOutOfRangeException>(() => new SuccessiveHalvingTuner(0, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => new SuccessiveHalvingTuner(1, 3, eta: 1));
    }

    [Fact]
    public void TrialBudgetIsExactAndSuccessiveHalvingPromotesTheBest()
    {
        var runner = new FakeRunner();
        var result = Experiment(runner, trials: 24).Run();
        Assert.Equal("trial budget", result.StopReason);
        Assert.Equal(24, result.Trials.Count);
        Assert.Equal(24, runner.Calls.Count);
        Assert.All(result.Trials, t => Assert.Equal(SweepTrialStatus.Succeeded, t.Status));
        Assert.Equal(Enumerable.Range(0, 24), result.Trials.Select(t => t.Id));
        // most configurations only cost the smallest resource; the promoted ones were the best of their rung when promoted
        var rung0 = result.Trials.Where(t => t.Rung == 0).ToList();
        var promoted = result.Trials.Where(t => t.Rung > 0).ToList();
        Assert.True(rung0.Count >= 15, $"only {rung0.Count} configurations tried");
        Assert.NotEmpty(promoted);
        Assert.Contains(result.Trials, t => t.Epochs == 9);
        Assert.All(promoted, t => Assert.Equal(t.Rung == 1 ? 3 : 9, t.Epochs));
        foreach (var p in promoted.Where(t => t.Rung == 1))
        {
            var before = rung0.Where(t => t.Id < p.Id).OrderBy(t => t.Metric).ToList();
            int rank = before.FindIndex(t => t.ConfigId == p.ConfigId);
            Assert.InRange(rank, 0, before.Count / 3 - 1);
        }
        // the best trial is the best configuration trained longest, better than every configuration's rung-0 result
        Assert.Equal(result.Trials.Min(t => t.Metric), result.BestTrial!.Metric);
        Assert.True(result.BestTrial.Rung > 0);
        // same seed → same sweep; another seed → another one
        var again = Experiment(new FakeRunner(), trials: 24).Run();
        Assert.Equal(result.Trials.Select(t => (t.Description, t.Epochs)), again.Trials.Select(t => (t.Description, t.Epochs)));
        var other = Experiment(new FakeRunner(), trials: 24, seed: 2).Run();
        Assert.NotEqual(result.Trials.Select(t => t.Description), other.Trials.Select(t => t.Description));
    }

    [Fact]
    public void UnderTheSameBudgetSuccessiveHalvingBeatsAGridAtFullEpochs()
    {
        // Same compute (epochs summed over trials): a grid at full epochs must cover every searched dimension; here only the
        // adapter (2 values) and the learning rate matter to the made-up loss, so the grid spends its budget on 2 × k points.
        var asha = Experiment(new FakeRunner(), trials: 30).Run();
        double budgetEpochs = asha.Trials.Sum(t => t.Epochs);
        int gridPoints = (int)(budgetEpochs / 9);
        int k = Math.Max(1, gridPoints / 2);
        var lrs = Enumerable.Range(0, k).Select(i => 1e-4 * Math.Pow(3e-2 / 1e-4, k == 1 ? 0.5 : i / (k - 1.0)));
        var grid = lrs.SelectMany(lr => new[] { "QuanTA", "LoRA" }.Select(a => FakeRunner.Loss(new QuanTASweepParameters { Adapter = a, LearningRate = lr }, 9))).Min();
        Assert.True(asha.BestTrial!.Metric <= grid + 1e-9, $"ASHA {asha.BestTrial.Metric:F4} vs grid {grid:F4} ({gridPoints} points)");
        Assert.True(asha.Trials.Select(t => t.ConfigId).Distinct().Count() > 2 * gridPoints);
    }

    [Fact]
    public void TimeBudgetStopsTheSweepAndCancelsTheRunningTrial()
    {
        var runner = new FakeRunner
        {
            Hook = (t, ct) =>
            {
                if (t.Id < 2) { Thread.Sleep(50); return null; }
                ct.WaitHandle.WaitOne(TimeSpan.FromSeconds(20));   // a long trial: only the budget's cancellation ends it
                ct.ThrowIfCancellationRequested();
                return null;
            },
        };
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var result = Experiment(runner, trials: 100, time: TimeSpan.FromSeconds(3)).SetOutputFolder(_folder).Run();
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(15), $"took {watch.Elapsed}");
        Assert.Equal("time budget", result.StopReason);
        Assert.Equal(3, result.Trials.Count);
        Assert.Equal(SweepTrialStatus.Cancelled, result.Trials[^1].Status);
        Assert.Equal("time budget reached", result.Trials[^1].Error);
        Assert.Equal(2, result.Leaderboard.Count);
        // a sweep stopped by time is resumed: finished trials reused, the cancelled one runs again
        var second = new FakeRunner();
        var resumed = Experiment(second, trials: 5).SetOutputFolder(_folder).Run();
        Assert.Equal(2, resumed.ReusedTrials);
        Assert.Equal(3, second.Calls.Count);
        Assert.Equal(result.Trials[2].Description, resumed.Trials[2].Description);
        Assert.Equal(SweepTrialStatus.Succeeded, resumed.Trials[2].Status);
    }

    [Fact]
    public void ExternalCancellationStopsBetweenOrDuringTrials()
    {
        using var cts = new CancellationTokenSource();
        var runner = new FakeRunner { Hook = (t, ct) => { if (t.Id == 3) cts.Cancel(); ct.ThrowIfCancellationRequested(); return null; } };
        var result = Experiment(runner, trials: 50).Run(cts.Token);
        Assert.Equal("cancelled", result.StopReason);
        Assert.Equal(4, result.Trials.Count);
        Assert.Equal(SweepTrialStatus.Cancelled, result.Trials[3].Status);
    }

    [Fact]
    public void FailingTrialsAreRecordedAndTheSweepGoesOn()
    {
        var runner = new FakeRunner
        {
            Hook = (t, _) => t.Id switch
            {
                1 => throw new ArgumentException("Axis layout [8,4,4] has D = 128, smaller than the layer"),
                2 => throw new TrainingDivergedException(3, 0, double.NaN, 10, null),
                3 => double.NaN,
                4 => throw new InvalidOperationException("CUDA out of memory"),
                _ => null,
            },
        };
        var result = Experiment(runner, trials: 10).SetOutputFolder(_folder).Run();
        Assert.Equal(10, result.Trials.Count);
        Assert.Equal(10, runner.Calls.Count);
        var failed = result.Trials.Where(t => t.Status == SweepTrialStatus.Failed).ToList();
        Assert.Equal([1, 2, 3, 4], failed.Select(t => t.Id));
        Assert.StartsWith("ArgumentException: Axis layout", failed[0].Error);
        Assert.StartsWith("TrainingDivergedException: Training diverged", failed[1].Error);
        Assert.Contains("NaN", failed[2].Error);
        Assert.Contains("out of memory", failed[3].Error);
        Assert.All(failed, t => Assert.Null(t.Metric));
        Assert.Equal(6, result.Leaderboard.Count);
        Assert.DoesNotContain(result.Leaderboard, t => t.Status != SweepTrialStatus.Succeeded);
        // the CSV lists failures after the leaderboard, with their errors
        var csv = File.ReadAllLines(Path.Combine(_folder, SweepResultFiles.CsvFileName));
        Assert.Equal(11, csv.Length);
        Assert.StartsWith("rank,trial,", csv[0]);
        Assert.StartsWith("1,", csv[1]);
        Assert.Contains(csv, l => l.Contains("Failed") && l.Contains("TrainingDivergedException"));
        Assert.True(new FileInfo(Path.Combine(_folder, SweepResultFiles.PlotFileName)).Length > 1000);
    }

    [Fact]
    public void ConstraintRejectsOversizedConfigurationsBeforeTraining()
    {
        var runner = new FakeRunner();
        var result = Experiment(runner, trials: 15).SetConstraint(maxTrainableFraction: 0.01).Run();
        Assert.Equal(15, result.Trials.Count);
        Assert.All(result.Trials, t => Assert.True(t.TrainablePercent <= 1.0, $"{t.Description}: {t.TrainablePercent} %"));
        Assert.All(runner.Calls, c => Assert.True(c.Count.TrainableFraction <= 0.01));
        Assert.Contains(result.Rejected, r => r.Reason.Contains("% > 1 %"));
        // all-linear draws layouts that hold its 384-wide MLP (not the 128-wide hidden size's), so none is rejected for its size
        Assert.DoesNotContain(result.Rejected, r => r.Reason.Contains("smaller than the layer"));
        // an absolute cap works too, and the counts are the ones from config.json
        var capped = Experiment(new FakeRunner(), trials: 10).SetConstraint(maxTrainableParameters: 2000).Run();
        Assert.All(capped.Trials, t => Assert.True(t.TrainableParameters <= 2000));
        Assert.Contains(capped.Rejected, r => r.Reason.EndsWith("> 2,000"));
    }

    [Fact]
    public void ResumeReusesRecordedTrialsAndContinuesIdentically()
    {
        var full = Experiment(new FakeRunner(), trials: 16).Run();

        var first = new FakeRunner();
        var part = Experiment(first, trials: 7).SetOutputFolder(_folder).Run();
        Assert.Equal(7, first.Calls.Count);
        var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(_folder, SweepResultFiles.JsonFileName)));
        Assert.Equal(7, json.RootElement.GetProperty("Trials").GetArrayLength());

        var second = new FakeRunner();
        var resumed = Experiment(second, trials: 16).SetOutputFolder(_folder).Run();
        Assert.Equal(7, resumed.ReusedTrials);
        Assert.Equal(9, second.Calls.Count);   // only the new trials were trained
        Assert.DoesNotContain(second.Calls, c => part.Trials.Any(t => t.Description == c.Parameters.Describe() && t.Epochs == c.Options.Epochs));
        Assert.Equal(full.Trials.Select(t => (t.Description, t.Epochs, t.Metric)), resumed.Trials.Select(t => (t.Description, t.Epochs, t.Metric)));

        // resume=false starts over
        var third = new FakeRunner();
        Experiment(third, trials: 3).SetOutputFolder(_folder, resume: false).Run();
        Assert.Equal(3, third.Calls.Count);
    }

    [Fact]
    public void ParetoFrontIsTheNonDominatedSet()
    {
        var result = Experiment(new FakeRunner(), trials: 20).Run();
        var ok = result.Leaderboard;
        foreach (var t in ok)
        {
            bool dominated = ok.Any(o => o.TrainableParameters <= t.TrainableParameters && o.Metric <= t.Metric &&
                                         (o.TrainableParameters < t.TrainableParameters || o.Metric < t.Metric));
            Assert.Equal(!dominated, result.ParetoFront.Contains(t) || result.ParetoFront.Any(f => f.TrainableParameters == t.TrainableParameters && f.Metric == t.Metric));
        }
        Assert.Contains(result.BestTrial, result.ParetoFront);
        var table = result.FormatLeaderboard(5);
        Assert.Equal(6, table.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Contains("ValidationLoss", table);
    }

    [Fact]
    public void BadSettingsAreNamed()
    {
        var e = Experiment(new FakeRunner(), 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => e.SetBudget(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => e.SetConstraint(maxTrainableFraction: 1.5));
        Assert.Throws<ArgumentException>(() => e.SetSearchSpace(SearchSpace.FromType<LoRAParameters>()));
        var noData = _ml.QuanTASweep(new QuanTAFineTuneOptions { BaseModelPath = Fixture });
        Assert.Contains("SetData", Assert.Throws<InvalidOperationException>(() => noData.Run()).Message);
    }
}
