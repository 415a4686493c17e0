using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Microsoft.ML;
using QuanTA.Core.Runtime;

namespace QuanTA.MLNet.AutoML;

/// <summary>
/// Parallel trials for <see cref="QuanTASweepExperiment.SetWorkers"/>: each trial runs in an independent child process,
/// <see cref="Capacity"/> at a time, so a crash, an out-of-memory or a hung trial costs only that trial. The child is
/// <see cref="Command"/> followed by <c>sweep-trial --spec &lt;trial-NNN/spec.json&gt;</c>; the program it starts must hand
/// those arguments to <see cref="SweepTrialWorker.Main"/> (the <c>quanta</c> tool does; in your own program, call it first
/// thing in <c>Main</c> when <c>args[0] == SweepTrialWorker.Verb</c>).
/// </summary>
public sealed record SweepWorkerOptions
{
    /// <summary>Workers on the experiment's own device (the <see cref="MLContext"/>'s GPU settings, or the CPU); ignored when
    /// <see cref="GpuIds"/> is set. Default 1 (trials still isolated in a child process).</summary>
    public int Workers { get; init; } = 1;

    /// <summary>One worker per GPU id: worker k's children get <c>CUDA_VISIBLE_DEVICES=GpuIds[k]</c> and train on <c>cuda:0</c>,
    /// the only GPU they see (no CPU fallback).</summary>
    public IReadOnlyList<int>? GpuIds { get; init; }

    /// <summary>The program that runs a trial and the arguments before <c>sweep-trial</c> (default:
    /// <see cref="Core.Distributed.LocalLauncher.SelfCommand"/>, this same program).</summary>
    public (string FileName, IReadOnlyList<string> PrefixArguments)? Command { get; init; }

    /// <summary>More environment variables for every child (e.g. <c>OMP_NUM_THREADS</c> to share CPU cores between workers).</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>How many trials run at once: the number of GPU ids, else <see cref="Workers"/>.</summary>
    public int Capacity => GpuIds?.Count ?? Workers;

    internal void Validate()
    {
        if (GpuIds is { } ids)
        {
            if (ids.Count == 0) throw new ArgumentException("GpuIds is empty; give at least one GPU id (e.g. 0,1) or leave it null.");
            if (ids.Any(i => i < 0) || ids.Distinct().Count() != ids.Count)
                throw new ArgumentException($"GpuIds [{string.Join(",", ids)}] must be distinct non-negative GPU ids.");
        }
        else if (Workers < 1) throw new ArgumentOutOfRangeException(nameof(Workers), Workers, "At least one worker is needed.");
    }
}

/// <summary>
/// The child side of parallel sweeps: reads a trial spec written by the sweep, loads the data, trains and evaluates the trial
/// exactly as an in-process trial would (same runner, same error isolation) and writes <c>result.json</c> next to the spec.
/// Test hook: when the environment variable <c>QUANTA_TEST_CRASH_TRIAL</c> equals the trial's id, the child exits with code 3
/// before training and without a result (a stand-in for a crash, to test that the sweep records it and goes on).
/// The child ignores SIGINT (Ctrl+C reaches the whole process group; the parent kills its trials itself) and exits when its
/// parent sweep is gone.
/// </summary>
public static class SweepTrialWorker
{
    /// <summary>The first argument that selects the trial runner: <c>sweep-trial --spec &lt;path&gt;</c>.</summary>
    public const string Verb = "sweep-trial";
    /// <summary>Test hook variable (see the class remarks).</summary>
    public const string CrashTrialEnv = "QUANTA_TEST_CRASH_TRIAL";
    internal const string SpecFileName = "spec.json", ResultFileName = "result.json";

    /// <summary>Entry point for <c>sweep-trial --spec &lt;path&gt;</c> (the verb as <c>args[0]</c>); returns the exit code.</summary>
    public static int Main(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        if (args.Length != 3 || args[0] != Verb || args[1] != "--spec")
        {
            Console.Error.WriteLine($"error: expected '{Verb} --spec <path>', got '{string.Join(' ', args)}'.");
            return 2;
        }
        try { return Run(args[2]); }
        catch (Exception e)
        {
            Console.Error.WriteLine($"error: {e.GetType().Name}: {e.Message}");
            return 1;
        }
    }

    /// <summary>Runs the trial described by <paramref name="specPath"/> and writes its result file; 0 when the result was
    /// written (the trial itself may have failed: the result says so), 3 for the crash test hook.</summary>
    public static int Run(string specPath)
    {
        var spec = SweepTrialSpec.Read(specPath);
        if (System.Environment.GetEnvironmentVariable(CrashTrialEnv) == spec.TrialId.ToString(System.Globalization.CultureInfo.InvariantCulture))
        {
            Console.Error.WriteLine($"{CrashTrialEnv}={spec.TrialId}: trial {spec.TrialId} exits with code 3 without a result (test hook).");
            return 3;
        }
        // Ctrl+C in a terminal interrupts the whole process group: the parent sweep decides (it kills running trials and records
        // them as cancelled), so the trial does not die on its own and get recorded as a crash.
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => c.Cancel = true);
        if (spec.ParentProcessId is int parent) WatchParent(parent);
        TorchRuntime.Initialize();
        var ml = new MLContext(spec.Options.Seed) { GpuDeviceId = spec.GpuDeviceId, FallbackToCpu = spec.FallbackToCpu };
        var runner = new MlNetTrialRunner(ml, Load(ml, spec.TrainData, spec.TrainCanShuffle), Load(ml, spec.ValidationData, spec.ValidationCanShuffle), spec.Metric, null);
        var trial = new SweepTrial(spec.TrialId, spec.ConfigId, spec.Rung, spec.Parameters, spec.Options, spec.Count);
        var r = TrialIsolation.Run(runner, trial, new SweepTrialResult { Id = spec.TrialId }, null, CancellationToken.None);
        SweepTrialOutcome.Write(new SweepTrialOutcome(r.Status, r.Metric, r.Error, r.Seconds, System.Environment.ProcessId,
            runner.LastTrainableParameters), spec.ResultPath);
        return 0;
    }

    /// <summary>Exits (code 4) soon after the sweep that started this trial is gone (killed hard), so no trial outlives it.</summary>
    static void WatchParent(int pid)
    {
        static bool Alive(int pid)
        {
            try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
            catch (ArgumentException) { return false; }
            catch (InvalidOperationException) { return false; }
        }
        new Thread(() =>
        {
            while (Alive(pid)) Thread.Sleep(1000);
            Console.Error.WriteLine($"The sweep (process {pid}) is gone; this trial stops.");
            System.Environment.Exit(4);
        }) { IsBackground = true, Name = "sweep parent watch" }.Start();
    }

    /// <summary>The binary copy of a view; it reads in file order unless the original view could shuffle, since training
    /// shuffles each epoch only a view that can (<see cref="IDataView.CanShuffle"/>): text files and in-memory data cannot, the
    /// binary loader can, so without this the child would train on another row order than the in-process trial.</summary>
    static IDataView Load(MLContext ml, string path, bool canShuffle)
    {
        var view = ml.Data.LoadFromBinary(path);
        return canShuffle ? view : new InOrderView(view);
    }

    /// <summary>A view that ignores the shuffling request: rows always in order.</summary>
    sealed class InOrderView(IDataView source) : IDataView
    {
        public bool CanShuffle => false;
        public DataViewSchema Schema => source.Schema;
        public long? GetRowCount() => source.GetRowCount();
        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => source.GetRowCursor(columnsNeeded);
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => [source.GetRowCursor(columnsNeeded)];
    }
}

/// <summary>What the sweep hands a child: the trial (its options already carry the rung's epochs and the seed), the metric, the
/// data files and the device. Runtime-only option members (validation view, communicator, progress, cancellation) are not written.</summary>
internal sealed record SweepTrialSpec(int TrialId, int ConfigId, int Rung, QuanTASweepParameters Parameters, QuanTAFineTuneOptions Options,
    ParameterCount Count, SweepMetric Metric, string TrainData, bool TrainCanShuffle, string ValidationData, bool ValidationCanShuffle,
    int? GpuDeviceId, bool FallbackToCpu, string ResultPath, int? ParentProcessId)
{
    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true, IncludeFields = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter() },
        TypeInfoResolver = new DefaultJsonTypeInfoResolver { Modifiers = { SkipRuntimeMembers } },
    };

    /// <summary>Interfaces (IDataView, ICommunicator, IProgress) and tokens live only in the parent process.</summary>
    static void SkipRuntimeMembers(JsonTypeInfo info)
    {
        if (info.Kind != JsonTypeInfoKind.Object) return;
        foreach (var p in info.Properties.Where(p => p.PropertyType.IsInterface && !typeof(System.Collections.IEnumerable).IsAssignableFrom(p.PropertyType)
                     || p.PropertyType == typeof(CancellationToken)).ToList())
            info.Properties.Remove(p);
    }

    public static void Write(SweepTrialSpec spec, string path) => WriteAtomic(path, JsonSerializer.Serialize(spec, Json));

    public static SweepTrialSpec Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Trial spec '{path}' not found.", path);
        return JsonSerializer.Deserialize<SweepTrialSpec>(File.ReadAllText(path), Json)
            ?? throw new InvalidDataException($"Trial spec '{path}' is empty.");
    }

    internal static void WriteAtomic(string path, string text) => QuanTA.Core.Runtime.AtomicFile.WriteAllText(path, text);
}

/// <summary>What a child writes back: how the trial ended, its metric, error, wall time, process id and the trainable
/// parameters of the model it trained.</summary>
internal sealed record SweepTrialOutcome(SweepTrialStatus Status, double? Metric, string? Error, double Seconds, int ProcessId, long? TrainableParameters)
{
    public static void Write(SweepTrialOutcome outcome, string path) => SweepTrialSpec.WriteAtomic(path, JsonSerializer.Serialize(outcome, SweepTrialSpec.Json));

    public static SweepTrialOutcome Read(string path) => JsonSerializer.Deserialize<SweepTrialOutcome>(File.ReadAllText(path), SweepTrialSpec.Json)
        ?? throw new InvalidDataException($"Trial result '{path}' is empty.");
}
