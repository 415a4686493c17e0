using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Training;
using QuanTA.MLNet;

namespace QuanTA.Cli.Tests;

/// <summary>
/// Crash safety of <c>quanta finetune</c>: the training process (a child process) is killed with SIGKILL at chosen places —
/// inside an optimizer step, after each file of a checkpoint is written into its temporary folder, between the two renames of
/// an epoch-end re-save, after a checkpoint is renamed into place but before older ones are pruned, and while the model .zip
/// is written — and restarted each time with <c>--resume latest</c> until it completes. The places are reached
/// deterministically through the test-only <c>QUANTA_TEST_HOLD_AT</c> hook (the process stops there and says so; the test
/// kills it). After every kill: no <c>checkpoint-N</c> folder is partial, the newest valid one is the expected step, and the
/// model .zip that was at <c>--output</c> before is byte for byte intact. At the end the exported adapter, the per-step
/// history (loss, learning rate, gradient norm) and the saved model's predictions equal an uninterrupted run's bit for bit.
/// </summary>
[Collection("console")]
public sealed class CrashResumeTests(CrashResumeTests.Runs runs) : IClassFixture<CrashResumeTests.Runs>
{
    /// <summary>24 rows, batch 4: 6 optimizer steps per epoch, 2 epochs; a checkpoint every 2 steps, only the newest kept.</summary>
    const int TotalSteps = 12;

    /// <summary>(place to kill at, newest valid checkpoint step on disk after the kill; 0: none yet), in chain order.</summary>
    public static TheoryData<string, (string Point, int LatestStep)[]> Chains => new()
    {
        {
            "while writing checkpoints", [
                ("checkpoint:2:adapter.safetensors", 0),   // the first checkpoint half-written: 'latest' starts from scratch
                ("checkpoint:4:optimizer.bin", 2),
                ("checkpoint:4:rng_state.bin", 2),
                ("checkpoint:4:trainer_state.json", 2),    // every file written, the folder not yet renamed
                ("checkpoint:4:renamed", 4),               // in place, checkpoint-2 not yet pruned
                ("checkpoint:6:replacing", 6),             // epoch-end re-save: old folder moved aside, new one not in place
            ]
        },
        {
            "mid-step and while writing the model", [
                ("step:1", 0),                             // inside the first step: nothing saved yet
                ("step:7", 6),
                ("checkpoint:10:trainer_state.json", 8),
                ("atomic-write:model.zip", TotalSteps),     // training done, the model .zip's temporary file written, not renamed
            ]
        },
    };

    [Theory]
    [MemberData(nameof(Chains))]
    public void KilledAnywhereAndResumedEqualsUninterruptedRun(string chain, (string Point, int LatestStep)[] kills)
    {
        var dir = Directory.CreateTempSubdirectory("quanta-crash-").FullName;
        try
        {
            var (checkpoints, output, adapter) = (Path.Combine(dir, "ckpt"), Path.Combine(dir, "model.zip"), Path.Combine(dir, "adapter.safetensors"));
            File.Copy(runs.PreviousModel, output);                                    // a model from an earlier run is at --output
            var previous = File.ReadAllBytes(output);
            foreach (var (point, latest) in kills)
            {
                var err = RunUntilKilled(point, Args(runs.TrainCsv, checkpoints, output, adapter, resume: "latest"));
                Assert.True(File.ReadAllBytes(output).AsSpan().SequenceEqual(previous), $"[{chain}] killed at {point}: the previous --output model changed");
                Assert.False(File.Exists(adapter), $"[{chain}] killed at {point}: an adapter was exported before training ended");
                foreach (var c in Checkpoints.List(checkpoints)) Checkpoints.Verify(c);   // nothing visible is partial
                var found = Checkpoints.FindLatestValid(checkpoints);
                Assert.True(latest == (found is null ? 0 : Checkpoints.Verify(found).Step),
                    $"[{chain}] killed at {point}: newest valid checkpoint {found ?? "none"}, expected step {latest}; stderr: {err}");
            }
            var (code, log) = RunToEnd(Args(runs.TrainCsv, checkpoints, output, adapter, resume: "latest"));
            Assert.True(code == 0, $"[{chain}] the final resume failed: {log}");

            Assert.True(File.ReadAllBytes(adapter).AsSpan().SequenceEqual(File.ReadAllBytes(runs.Reference.Adapter)),
                $"[{chain}] the resumed run's adapter differs from the uninterrupted run's");
            Assert.Equal(runs.Reference.History, HistoryOf(checkpoints));
            Assert.Equal(runs.Reference.Predictions, Predictions(output, runs.TrainCsv));
            Assert.Equal([Checkpoints.FolderName(TotalSteps)], Directory.GetDirectories(checkpoints).Select(Path.GetFileName));   // leftovers cleaned
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>The uninterrupted reference run and an earlier model for <c>--output</c>, made once for the class.</summary>
    public sealed class Runs : IDisposable
    {
        readonly string _dir = Directory.CreateTempSubdirectory("quanta-crash-ref-").FullName;

        public Runs()
        {
            TrainCsv = Path.Combine(_dir, "train.csv");
            FineTuneEvaluateCliTests.WriteToyCsv(TrainCsv, 24, 1);
            var (checkpoints, output, adapter) = (Path.Combine(_dir, "ckpt"), Path.Combine(_dir, "model.zip"), Path.Combine(_dir, "adapter.safetensors"));
            var (code, log) = RunToEnd(Args(TrainCsv, checkpoints, output, adapter));
            Assert.True(code == 0, log);
            Assert.Contains($"step {TotalSteps}/{TotalSteps}", log);
            Reference = (adapter, HistoryOf(checkpoints), Predictions(output, TrainCsv));
            PreviousModel = Path.Combine(_dir, "previous.zip");
            (code, log) = RunToEnd(Args(TrainCsv, Path.Combine(_dir, "ckpt-previous"), PreviousModel, null, epochs: 1));
            Assert.True(code == 0, log);
        }

        public string TrainCsv { get; }
        public (string Adapter, string History, string Predictions) Reference { get; }
        public string PreviousModel { get; }

        public void Dispose() => Directory.Delete(_dir, recursive: true);
    }

    static string[] Args(string trainCsv, string checkpoints, string output, string? adapter, string? resume = null, int epochs = 2) =>
    [
        "finetune", "--base-model", QuantaProcess.Dir("llama-tiny"), "--train", trainCsv, "--text-column", "Sentence",
        "--label-column", "Category", "--classification-mode", "verbalizer", "--axis-layout", "8,4,4", "--epochs", epochs.ToString(CultureInfo.InvariantCulture),
        "--batch-size", "4", "--lr", "3e-3", "--dropout", "0.1", "--max-seq-len", "32", "--seed", "7",
        "--checkpoint-dir", checkpoints, "--checkpoint-every", "2", "--keep-checkpoints", "1", "--output", output,
        .. adapter is null ? Array.Empty<string>() : ["--export-adapter", adapter], .. resume is null ? Array.Empty<string>() : ["--resume", resume],
    ];

    static ProcessStartInfo Quanta(string[] args, string? holdAt)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "quanta.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (holdAt is not null) psi.Environment["QUANTA_TEST_HOLD_AT"] = holdAt;
        return psi;
    }

    static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    static (int Code, string Log) RunToEnd(string[] args)
    {
        using var p = Process.Start(Quanta(args, holdAt: null))!;
        var err = p.StandardError.ReadToEndAsync();
        _ = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(Patience)) { p.Kill(); throw new TimeoutException($"quanta {string.Join(' ', args)} ran over {Patience}"); }
        return (p.ExitCode, err.Result);
    }

    /// <summary>Starts training, waits until it stops at <paramref name="point"/>, kills it with SIGKILL; returns its stderr.</summary>
    static string RunUntilKilled(string point, string[] args)
    {
        using var p = Process.Start(Quanta(args, holdAt: point))!;
        var log = new StringBuilder();
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (log) log.AppendLine(e.Data);
            if (e.Data == "QUANTA_HOLD " + point) held.TrySetResult();
        };
        p.BeginErrorReadLine();
        p.BeginOutputReadLine();
        try
        {
            var exited = p.WaitForExitAsync();
            if (Task.WaitAny([held.Task, exited], Patience) != 0)
                lock (log) throw new InvalidOperationException($"quanta never reached {point} (exited: {p.HasExited}); stderr: {log}");
            p.Kill();                                           // SIGKILL on Unix: no handler, no flush, no cleanup runs
            p.WaitForExit();
            Assert.Equal(128 + 9, p.ExitCode);                  // killed by signal 9
            lock (log) return log.ToString();
        }
        finally { if (!p.HasExited) p.Kill(); }
    }

    /// <summary>The per-step records (loss, learning rate, gradient norm, tokens) of the run's last checkpoint, as JSON.</summary>
    static string HistoryOf(string checkpoints)
    {
        var last = Checkpoints.FindLatestValid(checkpoints) ?? throw new InvalidOperationException($"no checkpoint in {checkpoints}");
        var state = Checkpoints.Verify(last);
        Assert.Equal(TotalSteps, state.Step);
        return JsonSerializer.Serialize(state.History);
    }

    /// <summary>Every training row's score vector (bits of each float) and predicted label under the saved model.</summary>
    static string Predictions(string zip, string csv)
    {
        var ml = new MLContext(seed: 1);
        var rows = File.ReadLines(csv).Skip(1).Select(l => l.Split(',')).Select(f => new Row { Sentence = f[0], Category = f[1] }).ToList();
        var model = ml.Model.LoadWithQuanTA(ml, zip, out _);
        try
        {
            var scored = model.Transform(ml.Data.LoadFromEnumerable(rows));
            var scores = scored.GetColumn<float[]>("Score").ToList();
            var labels = scored.GetColumn<string>("PredictedLabel").ToList();
            Assert.Equal(rows.Count, scores.Count);
            return string.Join('\n', scores.Zip(labels, (s, l) => l + " " + string.Join(',', s.Select(x => BitConverter.SingleToInt32Bits(x).ToString("X8")))));
        }
        finally { foreach (var t in (model as IEnumerable<ITransformer>) ?? [model]) (t as IDisposable)?.Dispose(); }
    }

    sealed class Row
    {
        public string Sentence { get; set; } = "";
        public string Category { get; set; } = "";
    }
}
