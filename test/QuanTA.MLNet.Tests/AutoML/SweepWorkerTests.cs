using System.Diagnostics;
using Microsoft.ML;
using QuanTA.MLNet.AutoML;

namespace QuanTA.MLNet.Tests.AutoML;

/// <summary>Parallel trials in child processes (<see cref="QuanTASweepExperiment.SetWorkers"/>), with /bin/sh standing in for the
/// trial runner so the scheduler, the isolation and the killing are tested without training (the real child runner, quanta
/// sweep-trial, is tested end to end in QuanTA.Cli.Tests). Asynchronous successive halving with pending trials is tested on the tuner.</summary>
public sealed class SweepWorkerTests : IDisposable
{
    readonly MLContext _ml = new(seed: 1);
    readonly string _folder = Path.Combine(Path.GetTempPath(), $"quanta-sweep-workers-{Guid.NewGuid():N}");

    public void Dispose() { if (Directory.Exists(_folder)) Directory.Delete(_folder, true); }

    /// <summary>A child: <c>sh -c SCRIPT sweep-trial --spec PATH</c>, so $2 is the spec path.</summary>
    static SweepWorkerOptions Shell(string script, int workers = 2, IReadOnlyList<int>? gpus = null) => new()
    {
        Workers = workers, GpuIds = gpus, Command = ("/bin/sh", ["-c", "d=$(dirname \"$2\"); " + script]),
    };

    const string WriteResult = "printf '{\"Status\":\"Succeeded\",\"Metric\":%s,\"Seconds\":0.2,\"ProcessId\":%s}' 1.5 $$ > \"$d/result.json\"";

    QuanTASweepExperiment Experiment(int trials, TimeSpan? time = null) =>
        _ml.QuanTASweep(new QuanTAFineTuneOptions { BaseModelPath = ToyData.Fixture("llama-tiny-seqcls") })
            .SetData(ToyData.View(_ml, ToyData.Classification(20, seed: 1)))
            .SetSearchSpace(QuanTASearchSpace.Create(128).Fix("Epochs", 1))
            .SetBudget(trials, time)
            .SetOutputFolder(_folder);

    [Fact]
    public void TunerHandsOutPendingJobsAndPromotesOnlyOnCompletedResults()
    {
        var t = new SuccessiveHalvingTuner(1, 3, eta: 3);                     // rungs: 1, 3 epochs
        var a = t.Next()!.Value; var b = t.Next()!.Value; var c = t.Next()!.Value;
        Assert.Equal([0, 1, 2], new[] { a, b, c }.Select(j => j.ConfigId));    // three new configurations while none has finished
        Assert.All(new[] { a, b, c }, j => Assert.True(j.IsNew));
        t.Report(c, 0.1);                                                      // out of order; 1 result: quota 1/3 = 0
        var d = t.Next()!.Value;
        Assert.True(d.IsNew);
        Assert.Equal(3, d.ConfigId);
        t.Report(a, 0.5); t.Report(b, 0.9);                                     // 3 results: the best (config 2) is promoted
        var p = t.Next()!.Value;
        Assert.Equal((2, 1, 3, false), (p.ConfigId, p.Rung, p.Epochs, p.IsNew));
        var e = t.Next()!.Value;                                               // the promotion is pending: not offered twice
        Assert.True(e.IsNew);
        t.Withdraw(p);                                                         // cancelled: the promotion can be offered again
        Assert.Equal(2, t.Next()!.Value.ConfigId);
        Assert.Throws<InvalidOperationException>(() => t.Report(new SweepJob(99, 0, 1, true), 0.3));
    }

    [Fact]
    public void TrialsRunSideBySideInChildProcessesAndACrashCostsOnlyItsTrial()
    {
        var script = "echo \"cvd=$CUDA_VISIBLE_DEVICES\"; case \"$d\" in *trial-001) echo boom >&2; exit 5;; esac; sleep 0.3; " + WriteResult;
        var seen = new List<SweepTrialResult>();
        var experiment = Experiment(trials: 5).SetWorkers(Shell(script, gpus: [3, 5]));
        experiment.TrialCompleted += seen.Add;
        var result = experiment.Run();

        Assert.Equal("trial budget", result.StopReason);
        Assert.Equal(Enumerable.Range(0, 5), result.Trials.Select(t => t.Id));
        Assert.Equal(5, seen.Count);
        Assert.Equal(new int?[] { 0, 1 }, result.Trials.Take(2).Select(t => t.Worker));     // both workers busy at once
        var crashed = Assert.Single(result.Trials, t => t.Status == SweepTrialStatus.Failed);
        Assert.Equal(1, crashed.Id);
        Assert.Contains($"The trial process {crashed.ProcessId} exited with code 5 without a result: ", crashed.Error);
        Assert.EndsWith("boom", crashed.Error);                               // the tail of its error output
        Assert.Equal(4, result.Leaderboard.Count);
        Assert.All(result.Leaderboard, t => Assert.Equal(1.5, t.Metric));
        var pids = result.Trials.Select(t => t.ProcessId!.Value).ToList();
        Assert.Equal(5, pids.Distinct().Count());                             // one process per trial, none of them this one
        Assert.DoesNotContain(Environment.ProcessId, pids);
        Assert.Equal(5, result.Trials.Select(t => t.Description).Distinct().Count());

        // each worker's child sees only its GPU and is told to use cuda:0 without falling back to the CPU
        foreach (var t in result.Trials)
        {
            var dir = Path.Combine(_folder, $"trial-{t.Id:D3}");
            Assert.Contains($"cvd={(t.Worker == 0 ? 3 : 5)}", File.ReadAllText(Path.Combine(dir, "log.txt")));
            var spec = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "spec.json"))).RootElement;
            Assert.Equal(0, spec.GetProperty("GpuDeviceId").GetInt32());
            Assert.False(spec.GetProperty("FallbackToCpu").GetBoolean());
            Assert.Equal(t.Description, DescribeSpec(spec));
        }
        Assert.Equal(5, SweepResultFiles.ReadTrials(_folder).Count);
    }

    /// <summary>The configuration described by a spec's parameters (the child re-reads exactly what the parent drew).</summary>
    static string DescribeSpec(System.Text.Json.JsonElement spec)
    {
        var p = spec.GetProperty("Parameters");
        var json = System.Text.Json.JsonSerializer.Deserialize<QuanTASweepParameters>(p.GetRawText(), new System.Text.Json.JsonSerializerOptions { IncludeFields = true })!;
        return json.Describe();
    }

    [Fact]
    public async Task TimeBudgetAndCancellationKillTheRunningChildren()
    {
        var watch = Stopwatch.StartNew();
        // 5 s: the budget also covers writing the data files and starting both children, which took over 1.5 s while other
        // test classes ran beside this one on 2 cores (then only one child had started)
        var result = Experiment(trials: 10, TimeSpan.FromSeconds(5)).SetWorkers(Shell("exec sleep 60")).Run();
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"took {watch.Elapsed}");
        Assert.Equal("time budget", result.StopReason);
        Assert.Equal(2, result.Trials.Count);
        Assert.All(result.Trials, t => Assert.Equal((SweepTrialStatus.Cancelled, "time budget reached"), (t.Status, t.Error)));
        Assert.All(result.Trials, t => Assert.False(Directory.Exists($"/proc/{t.ProcessId}"), $"process {t.ProcessId} still alive"));

        // Cancel once all three children run (a fixed delay raced their start on a busy machine: only one had started).
        using var cts = new CancellationTokenSource();
        int Started() => Directory.Exists(_folder) ? Directory.GetFiles(_folder, "started", System.IO.SearchOption.AllDirectories).Length : 0;
        var canceller = Task.Run(async () =>
        {
            var until = Stopwatch.StartNew();
            while (Started() < 3 && until.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(50);
            cts.Cancel();
        });
        var cancelled = Experiment(trials: 10).SetOutputFolder(_folder, resume: false)
            .SetWorkers(Shell("touch \"$d/started\"; exec sleep 60", workers: 3)).Run(cts.Token);
        await canceller;
        Assert.Equal("cancelled", cancelled.StopReason);
        Assert.Equal(3, cancelled.Trials.Count);
        Assert.All(cancelled.Trials, t => Assert.Equal((SweepTrialStatus.Cancelled, "cancelled"), (t.Status, t.Error)));
    }

    [Fact]
    public void WorkersNeedTheBuiltInRunnerAndMetric()
    {
        var custom = Experiment(2).SetMetric("mine", (_, _) => 0, false).SetWorkers(new SweepWorkerOptions { Workers = 2 });
        Assert.Contains("custom metric 'mine'", Assert.Throws<InvalidOperationException>(() => custom.Run()).Message);
        var runner = Experiment(2).SetTrialRunner(new FakeRunner()).SetWorkers(new SweepWorkerOptions { Workers = 2 });
        Assert.Contains("SetTrialRunner", Assert.Throws<InvalidOperationException>(() => runner.Run()).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Experiment(2).SetWorkers(new SweepWorkerOptions { Workers = 0 }));
        Assert.Throws<ArgumentException>(() => Experiment(2).SetWorkers(new SweepWorkerOptions { GpuIds = [0, 0] }));
        Assert.Throws<ArgumentException>(() => Experiment(2).SetWorkers(new SweepWorkerOptions { GpuIds = [] }));
    }
}
