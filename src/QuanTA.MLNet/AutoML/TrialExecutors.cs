using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using Microsoft.ML;

namespace QuanTA.MLNet.AutoML;

/// <summary>Runs the trials the sweep starts: in this process one at a time, or in child processes side by side.</summary>
internal interface ITrialExecutor : IDisposable
{
    /// <summary>How many trials may run at once.</summary>
    int Capacity { get; }
    /// <summary>Trials started and not yet handed back by <see cref="WaitAny"/>.</summary>
    int Running { get; }
    /// <summary>Starts <paramref name="trial"/>; <paramref name="pending"/> is its result record without the outcome.</summary>
    void Start(SweepTrial trial, SweepTrialResult pending);
    /// <summary>Waits until at least one trial has ended and returns the ended ones (on cancellation or at the time budget:
    /// every running trial, as <see cref="SweepTrialStatus.Cancelled"/>).</summary>
    IReadOnlyList<SweepTrialResult> WaitAny();
}

/// <summary>One trial with its error isolation: a thrown exception becomes a failed trial, a non-finite metric too, and a
/// cancellation (caller or time budget) a cancelled one. Shared by the in-process path and the child trial runner, so both
/// score a trial identically.</summary>
internal static class TrialIsolation
{
    public static SweepTrialResult Run(ISweepTrialRunner runner, SweepTrial trial, SweepTrialResult result, TimeSpan? timeLeft, CancellationToken outer)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(outer);
        if (timeLeft is { } left) cts.CancelAfter(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        var watch = Stopwatch.StartNew();
        try
        {
            double metric = runner.Run(trial, cts.Token);
            if (!double.IsFinite(metric))
                return result with { Status = SweepTrialStatus.Failed, Error = $"The metric is {metric} (training diverged?).", Seconds = watch.Elapsed.TotalSeconds };
            return result with { Status = SweepTrialStatus.Succeeded, Metric = metric, Seconds = watch.Elapsed.TotalSeconds };
        }
        catch (Exception e) when (Unwrap(e) is OperationCanceledException && cts.IsCancellationRequested)
        {
            return result with { Status = SweepTrialStatus.Cancelled, Error = outer.IsCancellationRequested ? "cancelled" : "time budget reached", Seconds = watch.Elapsed.TotalSeconds };
        }
        catch (Exception e)
        {
            var inner = Unwrap(e);
            return result with { Status = SweepTrialStatus.Failed, Error = $"{inner.GetType().Name}: {inner.Message}", Seconds = watch.Elapsed.TotalSeconds };
        }
    }

    static Exception Unwrap(Exception e)
    {
        while (e is TargetInvocationException or AggregateException && e.InnerException is not null) e = e.InnerException!;
        return e;
    }
}

/// <summary>The sequential path: the trial runs inside <see cref="Start"/>, on the calling thread.</summary>
internal sealed class InProcessTrialExecutor(ISweepTrialRunner runner, Func<TimeSpan> timeLeft, CancellationToken cancellationToken) : ITrialExecutor
{
    SweepTrialResult? _done;

    public int Capacity => 1;
    public int Running => _done is null ? 0 : 1;
    public void Start(SweepTrial trial, SweepTrialResult pending) => _done = TrialIsolation.Run(runner, trial, pending, timeLeft(), cancellationToken);

    public IReadOnlyList<SweepTrialResult> WaitAny()
    {
        var done = _done ?? throw new InvalidOperationException("No trial is running.");
        _done = null;
        return [done];
    }

    public void Dispose() { }
}

/// <summary>
/// The parallel path: each trial is a child process (<see cref="SweepTrialWorker"/>) given <c>trial-NNN/spec.json</c> in the
/// work folder; it writes <c>trial-NNN/result.json</c>, and its output goes to <c>trial-NNN/log.txt</c>. A child that exits
/// without a result (crash, out of memory, killed) becomes a failed trial with the tail of its error output (of its whole
/// output when it wrote no errors); cancellation and the
/// time budget kill every running child (its process tree) and record it as cancelled. The training and validation data are
/// written once per sweep as ML.NET binary files (<c>data/*.idv</c>) that every child reads, in the same row order as the
/// original views (see <see cref="SweepTrialWorker"/>). Trials that end during the same poll are handed back in worker order.
/// </summary>
internal sealed class ProcessTrialExecutor : ITrialExecutor
{
    const int TailLines = 8;

    sealed class Child
    {
        public required Process Process;
        public required SweepTrialResult Pending;
        public required string Folder;
        public readonly List<string> Lines = [];        // stdout and stderr as they arrive (log.txt)
        public readonly List<string> ErrorLines = [];   // stderr alone: the two pipes are read on their own threads, so their
                                                        // interleaving in Lines is not the order the child wrote them
        public readonly Stopwatch Watch = Stopwatch.StartNew();
    }

    readonly SweepWorkerOptions _options;
    readonly SweepMetric _metric;
    readonly Func<TimeSpan> _timeLeft;
    readonly CancellationToken _cancellation;
    readonly string _folder, _trainPath, _validationPath;
    readonly bool _ownsFolder, _trainCanShuffle, _validationCanShuffle;
    readonly int? _gpuDeviceId;
    readonly bool _fallbackToCpu;
    readonly Child?[] _slots;

    public ProcessTrialExecutor(MLContext ml, SweepWorkerOptions options, IDataView train, IDataView validation, SweepMetric metric,
        string? outputFolder, Func<TimeSpan> timeLeft, CancellationToken cancellationToken)
    {
        (_options, _metric, _timeLeft, _cancellation) = (options, metric, timeLeft, cancellationToken);
        _ownsFolder = outputFolder is null;
        _folder = Path.GetFullPath(outputFolder ?? Path.Combine(Path.GetTempPath(), $"quanta-sweep-{Guid.NewGuid():N}"));
        (_gpuDeviceId, _fallbackToCpu) = (ml.GpuDeviceId, ml.FallbackToCpu);
        _slots = new Child?[options.Capacity];
        var data = Directory.CreateDirectory(Path.Combine(_folder, "data")).FullName;
        (_trainPath, _validationPath) = (Path.Combine(data, "train.idv"), Path.Combine(data, "validation.idv"));
        (_trainCanShuffle, _validationCanShuffle) = (train.CanShuffle, validation.CanShuffle);
        Save(ml, train, _trainPath);
        Save(ml, validation, _validationPath);
        AppDomain.CurrentDomain.ProcessExit += KillOnExit;                 // SIGTERM / exit: no trial outlives the sweep
    }

    void KillOnExit(object? sender, EventArgs e)
    {
        foreach (var c in _slots)
            try { if (c is not null && !c.Process.HasExited) c.Process.Kill(entireProcessTree: true); }
            catch (Exception) { }                                 // exiting anyway: best effort (it may have ended meanwhile)
    }

    static void Save(MLContext ml, IDataView view, string path)
    {
        QuanTA.Core.Runtime.AtomicFile.Write(path, f => ml.Data.SaveAsBinary(view, f));
    }

    public int Capacity => _slots.Length;
    public int Running => _slots.Count(s => s is not null);

    public void Start(SweepTrial trial, SweepTrialResult pending)
    {
        int worker = Array.IndexOf(_slots, null);
        if (worker < 0) throw new InvalidOperationException("Every worker is busy.");
        var gpu = _options.GpuIds is { } ids ? ids[worker] : (int?)null;
        var folder = Directory.CreateDirectory(Path.Combine(_folder, $"trial-{trial.Id:D3}")).FullName;
        var resultPath = Path.Combine(folder, SweepTrialWorker.ResultFileName);
        File.Delete(resultPath);
        var spec = new SweepTrialSpec(trial.Id, trial.ConfigId, trial.Rung, trial.Parameters, trial.Options, trial.Count, _metric,
            _trainPath, _trainCanShuffle, _validationPath, _validationCanShuffle, gpu is null ? _gpuDeviceId : 0, gpu is null && _fallbackToCpu, resultPath, Environment.ProcessId);
        var specPath = Path.Combine(folder, SweepTrialWorker.SpecFileName);
        SweepTrialSpec.Write(spec, specPath);

        var (fileName, prefix) = _options.Command ?? Core.Distributed.LocalLauncher.SelfCommand();
        var psi = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in new[] { SweepTrialWorker.Verb, "--spec", specPath }) psi.ArgumentList.Add(a);
        if (gpu is { } g) psi.Environment["CUDA_VISIBLE_DEVICES"] = g.ToString(CultureInfo.InvariantCulture);   // the child sees one GPU: cuda:0
        foreach (var (k, v) in _options.Environment) psi.Environment[k] = v;

        var child = new Child { Process = new Process { StartInfo = psi }, Pending = pending with { Worker = worker }, Folder = folder };
        child.Process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (child.Lines) child.Lines.Add(e.Data); };
        child.Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (child.Lines) { child.Lines.Add(e.Data); child.ErrorLines.Add(e.Data); } };
        try { child.Process.Start(); }
        catch (System.ComponentModel.Win32Exception e)
        {
            child.Process.Dispose();
            throw new InvalidOperationException($"Cannot start the trial process '{fileName}' ({e.Message}); set SweepWorkerOptions.Command " +
                "to a program that runs SweepTrialWorker.Main.", e);
        }
        child.Process.BeginOutputReadLine();
        child.Process.BeginErrorReadLine();
        _slots[worker] = child;
    }

    public IReadOnlyList<SweepTrialResult> WaitAny()
    {
        if (Running == 0) throw new InvalidOperationException("No trial is running.");
        while (true)
        {
            if (_cancellation.IsCancellationRequested) return CancelAll("cancelled");
            if (_timeLeft() <= TimeSpan.Zero) return CancelAll("time budget reached");
            var ended = new List<SweepTrialResult>();
            for (int w = 0; w < _slots.Length; w++)
                if (_slots[w] is { } c && c.Process.HasExited) { ended.Add(Finish(c)); _slots[w] = null; }
            if (ended.Count > 0) return ended;
            _cancellation.WaitHandle.WaitOne(50);
        }
    }

    /// <summary>The child's result file, or a failed trial naming its exit code and last output lines.</summary>
    SweepTrialResult Finish(Child c)
    {
        c.Process.WaitForExit();                                  // flush the output readers
        int code = c.Process.ExitCode, pid = c.Process.Id;
        var r = c.Pending with { ProcessId = pid };
        var resultPath = Path.Combine(c.Folder, SweepTrialWorker.ResultFileName);
        try
        {
            if (code == 0 && File.Exists(resultPath))
            {
                var o = SweepTrialOutcome.Read(resultPath);
                return r with { Status = o.Status, Metric = o.Metric, Error = o.Error, Seconds = o.Seconds, ProcessId = o.ProcessId };
            }
            return r with { Status = SweepTrialStatus.Failed, Seconds = c.Watch.Elapsed.TotalSeconds,
                Error = $"The trial process {pid} exited with code {code} without a result: {Tail(c)}" };
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException)
        {
            return r with { Status = SweepTrialStatus.Failed, Seconds = c.Watch.Elapsed.TotalSeconds, Error = $"The trial process {pid} wrote an unreadable result ({e.Message})." };
        }
        finally { Close(c); }
    }

    IReadOnlyList<SweepTrialResult> CancelAll(string reason)
    {
        var cancelled = new List<SweepTrialResult>();
        for (int w = 0; w < _slots.Length; w++)
            if (_slots[w] is { } c)
            {
                Kill(c.Process);
                cancelled.Add(c.Pending with { Status = SweepTrialStatus.Cancelled, Error = reason, Seconds = c.Watch.Elapsed.TotalSeconds, ProcessId = c.Process.Id });
                Close(c);
                _slots[w] = null;
            }
        return cancelled;
    }

    /// <summary>The last lines of the child's error output (a crash's reason), or of all its output when it wrote no errors.</summary>
    static string Tail(Child c)
    {
        lock (c.Lines)
        {
            var lines = c.ErrorLines.Any(l => !string.IsNullOrWhiteSpace(l)) ? c.ErrorLines : c.Lines;
            var tail = lines.Where(l => !string.IsNullOrWhiteSpace(l)).TakeLast(TailLines).ToList();
            return tail.Count == 0 ? "(no output)" : string.Join(" | ", tail);
        }
    }

    /// <summary>Writes the child's output to log.txt and releases the process.</summary>
    static void Close(Child c)
    {
        try { lock (c.Lines) QuanTA.Core.Runtime.AtomicFile.WriteAllText(Path.Combine(c.Folder, "log.txt"), string.Join(Environment.NewLine, c.Lines) + Environment.NewLine); }
        catch (IOException) { }                                   // the log is a convenience; the result is already recorded
        c.Process.Dispose();
    }

    static void Kill(Process p)
    {
        try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        p.WaitForExit();
    }

    public void Dispose()
    {
        AppDomain.CurrentDomain.ProcessExit -= KillOnExit;
        for (int w = 0; w < _slots.Length; w++)
            if (_slots[w] is { } c) { Kill(c.Process); c.Process.Dispose(); _slots[w] = null; }
        if (_ownsFolder)
            try { Directory.Delete(_folder, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
