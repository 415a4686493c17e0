using System.Text.Json;
using QuanTA.MLNet;
using QuanTA.MLNet.AutoML;

namespace QuanTA.Cli.Tests;

/// <summary><c>quanta sweep</c> on the tiny classifier: in-process trials against <c>--workers 2</c> (each trial a
/// <c>quanta sweep-trial</c> child process), a crashing child, and the verb's arguments.</summary>
[Collection("console")]
public sealed class SweepCliTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quanta-sweep-cli");

    public void Dispose() => _dir.Delete(true);

    string Data(string name, int rows, int seed)
    {
        var path = Path.Combine(_dir.FullName, name);
        FineTuneEvaluateCliTests.WriteToyCsv(path, rows, seed);
        return path;
    }

    (int Code, string Out, string Err, IReadOnlyList<SweepTrialResult> Trials) Sweep(string output, params string[] more)
    {
        string[] args = ["sweep", "--base-model", QuantaProcess.Dir("llama-tiny-seqcls"), "--train", Data("train.csv", 24, 1),
            "--validation", Data("valid.csv", 12, 2), "--text-column", "Sentence", "--label-column", "Category", "--epochs", "1-1",
            "--trials", "3", "--batch-size", "8", "--max-seq-len", "16", "--target-modules", "q_proj,v_proj", "--output", output, .. more];
        var (code, stdout, stderr) = QuantaProcess.Run(args);
        return (code, stdout, stderr, SweepResultFiles.ReadTrials(output));
    }

    [Fact]
    public void WorkersRunEachTrialInItsOwnProcessWithTheSameMetricsAsInProcessTrials()
    {
        var inProcess = Sweep(Path.Combine(_dir.FullName, "sequential"));
        Assert.True(inProcess.Code == 0, inProcess.Err);
        var parallelFolder = Path.Combine(_dir.FullName, "parallel");
        var parallel = Sweep(parallelFolder, "--workers", "2");
        Assert.True(parallel.Code == 0, parallel.Err);

        Assert.Equal(3, inProcess.Trials.Count);
        Assert.All(inProcess.Trials, t => Assert.Null(t.ProcessId));
        Assert.Equal(3, parallel.Trials.Count);
        Assert.All(parallel.Trials, t => Assert.Equal(SweepTrialStatus.Succeeded, t.Status));
        var pids = parallel.Trials.Select(t => t.ProcessId!.Value).ToList();
        Assert.Equal(3, pids.Distinct().Count());                                    // a process per trial …
        Assert.DoesNotContain(Environment.ProcessId, pids);                          // … none of them the sweep's
        Assert.Equal(new int?[] { 0, 1 }, parallel.Trials.Take(2).Select(t => t.Worker));
        // the same configurations (drawn in the same order), each with exactly the metric of its in-process trial
        Assert.Equal(inProcess.Trials.Select(t => (t.Description, t.Epochs, t.TrainableParameters, t.Metric)),
                     parallel.Trials.Select(t => (t.Description, t.Epochs, t.TrainableParameters, t.Metric)));
        Assert.All(parallel.Trials, t => Assert.InRange(t.Metric!.Value, 0.01, 5));
        // the child also reports the trainable parameters of the model it trained: the count the sweep computed up front
        foreach (var t in parallel.Trials)
        {
            var r = JsonDocument.Parse(File.ReadAllText(Path.Combine(parallelFolder, $"trial-{t.Id:D3}", "result.json"))).RootElement;
            Assert.Equal(t.TrainableParameters, r.GetProperty("TrainableParameters").GetInt64());
        }
        Assert.Contains("3 succeeded", parallel.Out);
        Assert.Contains("[worker 0 pid ", parallel.Err);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(parallelFolder, SweepResultFiles.CsvFileName)).Length);   // header + 3 trials
    }

    [Fact]
    public void ACrashingTrialProcessIsAFailedTrialAndTheSweepGoesOn()
    {
        Environment.SetEnvironmentVariable(SweepTrialWorker.CrashTrialEnv, "1");
        try
        {
            var (code, stdout, stderr, trials) = Sweep(Path.Combine(_dir.FullName, "crash"), "--workers", "2");
            Assert.True(code == 0, stderr);
            Assert.Equal(3, trials.Count);
            var failed = Assert.Single(trials, t => t.Status == SweepTrialStatus.Failed);
            Assert.Equal(1, failed.Id);
            Assert.StartsWith($"The trial process {failed.ProcessId} exited with code 3 without a result: ", failed.Error);
            Assert.Contains("trial 1 exits with code 3 without a result (test hook)", failed.Error);
            Assert.Equal(2, trials.Count(t => t.Status == SweepTrialStatus.Succeeded));
            Assert.Contains("2 succeeded", stdout);
        }
        finally { Environment.SetEnvironmentVariable(SweepTrialWorker.CrashTrialEnv, null); }
    }

    [Fact]
    public void ParallelOptionsAreCheckedAndTheTrialVerbIsHidden()
    {
        var (_, help, _) = QuantaProcess.Run("sweep", "--help");
        Assert.Contains("--gpus", help);
        Assert.Contains("--workers", help);
        var (_, rootHelp, _) = QuantaProcess.Run("--help");
        Assert.Contains("sweep", rootHelp);
        Assert.DoesNotContain(SweepTrialWorker.Verb, rootHelp);
        foreach (var (extra, message) in new[]
                 {
                     (new[] { "--gpus", "0,0" }, "--gpus '0,0'"),
                     (new[] { "--gpus", "0", "--workers", "2" }, "not both"),
                     (new[] { "--workers", "0" }, "--workers 0"),
                 })
        {
            var (code, stdout, stderr, _) = Sweep(Path.Combine(_dir.FullName, "bad"), extra);
            Assert.Equal(1, code);
            Assert.Equal("", stdout);
            Assert.StartsWith("error:", stderr);
            Assert.Contains(message, stderr);
        }
        var (c2, _, e2) = QuantaProcess.Run(SweepTrialWorker.Verb, "--spec", Path.Combine(_dir.FullName, "missing.json"));
        Assert.Equal(1, c2);
        Assert.Contains("missing.json", e2);
    }

    /// <summary>An adapter whose whole space is over the limit is named on stderr before the first trial, with the smallest
    /// configuration and the flag to change; the other adapter still runs.</summary>
    [Fact]
    public void AnAdapterWhoseWholeSpaceIsRejectedIsWarnedAboutOnStderrBeforeTheTrials()
    {
        var dir = QuantaProcess.Dir("llama-tiny-seqcls");
        var shape = ModelShape.FromConfig(dir, sequenceClassification: true);
        var options = new QuanTAFineTuneOptions { BaseModelPath = dir };
        bool trainsHead = options.ClassificationMode == ClassificationMode.Head;
        var checks = SweepSpaceCheck.Run(QuanTASearchSpace.Create(shape).Fix("TargetModules", "q_proj,v_proj"), shape, trainsHead, options,
            new SweepConstraint(null, null));
        long smallestQuanTA = checks.Single(c => c.Adapter == "QuanTA").Smallest!.Value.Count.Trainable;
        long smallestLoRA = checks.Single(c => c.Adapter == "LoRA").Smallest!.Value.Count.Trainable;
        Assert.True(smallestLoRA < smallestQuanTA, $"LoRA {smallestLoRA}, QuanTA {smallestQuanTA}");

        var (code, stdout, stderr, trials) = Sweep(Path.Combine(_dir.FullName, "no-quanta"), "--max-trainable", (smallestQuanTA - 1).ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(code == 0, stderr);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("warning: No QuanTA configuration of the search space can run", lines[0]);
        Assert.Contains("--max-trainable", lines[0]);
        Assert.Contains(lines, l => l.StartsWith("trial 0 ", StringComparison.Ordinal));
        Assert.Equal(3, trials.Count);
        Assert.All(trials, t => Assert.Equal("LoRA", t.Adapter));
        Assert.Contains("1 adapter(s) skipped entirely", stdout);
    }

    [Fact]
    public void ASweepWhereNothingCanRunFailsSayingWhyBeforeTraining()
    {
        var (code, stdout, stderr, trials) = Sweep(Path.Combine(_dir.FullName, "nothing"), "--max-trainable", "1");
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error: The sweep cannot run any configuration of its search space.", stderr);
        Assert.Contains("No QuanTA configuration", stderr);
        Assert.Contains("No LoRA configuration", stderr);
        Assert.Contains("--max-trainable", stderr);
        Assert.Empty(trials);
    }

    /// <summary>Issue 17: sweep's option errors name the flag the user typed, through finetune's rewording (not the library's
    /// property or parameter names), and fail before any trial.</summary>
    [Theory]
    [InlineData("--batch-size", "0", "error: --batch-size must be positive (got 0).")]
    [InlineData("--max-seq-len", "1", "error: --max-seq-len must be at least 2 (got 1).")]
    [InlineData("--trials", "0", "error: --trials: The trial budget must be at least 1.")]
    [InlineData("--time-minutes", "0", "error: --time-minutes: The time budget must be positive.")]
    [InlineData("--eta", "1", "error: --eta: η must be at least 2.")]
    [InlineData("--max-trainable", "0", "error: --max-trainable: Expected a positive parameter count.")]
    [InlineData("--max-trainable-percent", "150", "error: --max-trainable-percent 150 is not a percentage in (0, 100]")]
    [InlineData("--lr-range", "fast,1", "error: --lr-range 'fast,1' is not min,max")]
    [InlineData("--lr-range", "0,1e-3", "error: --lr-range '0,1e-3' is not min,max")]
    public void OptionErrorsNameTheSweepFlag(string flag, string value, string expectedStart)
    {
        var output = Path.Combine(_dir.FullName, "bad-" + flag.TrimStart('-'));
        var args = new List<string> { "sweep", "--base-model", QuantaProcess.Dir("llama-tiny-seqcls"), "--train", Data("train.csv", 24, 1),
            "--validation", Data("valid.csv", 12, 2), "--text-column", "Sentence", "--label-column", "Category", "--epochs", "1-1",
            "--trials", "3", "--batch-size", "8", "--max-seq-len", "16", "--target-modules", "q_proj,v_proj", "--output", output };
        int i = args.IndexOf(flag);
        if (i >= 0) args[i + 1] = value;
        else args.AddRange([flag, value]);
        var (code, stdout, stderr) = QuantaProcess.Run([.. args]);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.StartsWith(expectedStart, stderr);
        Assert.DoesNotContain("QuanTAFineTuneOptions", stderr);
        Assert.DoesNotContain("(Parameter '", stderr);
        Assert.Empty(SweepResultFiles.ReadTrials(output));                           // nothing ran
    }
}
