using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace QuanTA.MLNet.AutoML;

/// <summary>How a trial ended.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<SweepTrialStatus>))]
public enum SweepTrialStatus
{
    /// <summary>Trained and evaluated; <see cref="SweepTrialResult.Metric"/> is set.</summary>
    Succeeded,
    /// <summary>Threw (bad layout, out of memory, diverged to NaN, …); <see cref="SweepTrialResult.Error"/> says why.</summary>
    Failed,
    /// <summary>Stopped by the time budget or the caller's cancellation; re-run when the sweep is resumed.</summary>
    Cancelled,
}

/// <summary>One trial of a sweep: one configuration trained for <see cref="Epochs"/> epochs and evaluated.</summary>
public sealed record SweepTrialResult
{
    /// <summary>0-based trial number, in the order trials were run.</summary>
    public int Id { get; init; }
    /// <summary>0-based configuration number (a configuration promoted by successive halving keeps its number).</summary>
    public int ConfigId { get; init; }
    /// <summary>Successive-halving rung (0 = first, fewest epochs).</summary>
    public int Rung { get; init; }
    /// <summary>Epochs trained (the resource).</summary>
    public int Epochs { get; init; }
    /// <summary>"QuanTA" or "LoRA".</summary>
    public string Adapter { get; init; } = "";
    /// <summary>The configuration in one line (<see cref="QuanTASweepParameters.Describe"/>); with <see cref="Epochs"/> its identity.</summary>
    public string Description { get; init; } = "";
    /// <summary>Every drawn parameter (dotted name → invariant text).</summary>
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();
    /// <summary>Trainable parameters (adapter + trained head).</summary>
    public long TrainableParameters { get; init; }
    /// <summary>100 · trainable / total.</summary>
    public double TrainablePercent { get; init; }
    /// <summary>The metric on the validation data (null unless <see cref="SweepTrialStatus.Succeeded"/>).</summary>
    public double? Metric { get; init; }
    /// <summary>How the trial ended.</summary>
    public SweepTrialStatus Status { get; init; }
    /// <summary>The error (type and message) of a failed or cancelled trial.</summary>
    public string? Error { get; init; }
    /// <summary>Wall time of the trial in seconds.</summary>
    public double Seconds { get; init; }
    /// <summary>The worker (0-based) that ran the trial with <see cref="QuanTASweepExperiment.SetWorkers"/>; null in-process.</summary>
    public int? Worker { get; init; }
    /// <summary>Id of the child process that ran the trial with <see cref="QuanTASweepExperiment.SetWorkers"/>; null in-process.</summary>
    public int? ProcessId { get; init; }
}

/// <summary>A configuration the sampler drew but did not run, with the reason (over the parameter constraint, or its layout
/// cannot hold a targeted layer).</summary>
/// <param name="Description">The configuration.</param>
/// <param name="Reason">Why it was not run.</param>
public sealed record SweepRejection(string Description, string Reason);

/// <summary>What a sweep produced: every trial, the leaderboard, the best trial and the Pareto front (metric vs trainable
/// parameters, the QuanTA paper's Figure-4 view).</summary>
public sealed record QuanTASweepResult
{
    /// <summary>Name of the metric.</summary>
    public string MetricName { get; init; } = "";
    /// <summary>True when a larger metric is better.</summary>
    public bool GreaterIsBetter { get; init; }
    /// <summary>Every trial in run order (failed and cancelled ones included).</summary>
    public IReadOnlyList<SweepTrialResult> Trials { get; init; } = [];
    /// <summary>Configurations drawn but not run (constraint, invalid layout).</summary>
    public IReadOnlyList<SweepRejection> Rejected { get; init; } = [];
    /// <summary>Warnings raised before the first trial: one per adapter whose whole search space was rejected (why, and what to
    /// change), see <see cref="QuanTASweepExperiment.SearchSpaceWarning"/>.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
    /// <summary>Trials taken from the results file of an earlier run instead of being trained again.</summary>
    public int ReusedTrials { get; init; }
    /// <summary>Why the sweep stopped ("trial budget", "time budget", "search space exhausted", "cancelled").</summary>
    public string StopReason { get; init; } = "";
    /// <summary>Where the results were written (null when no output folder was set).</summary>
    public string? OutputFolder { get; init; }

    /// <summary>Succeeded trials, best metric first (ties: fewer trainable parameters first).</summary>
    public IReadOnlyList<SweepTrialResult> Leaderboard => Trials.Where(t => t.Status == SweepTrialStatus.Succeeded)
        .OrderBy(t => GreaterIsBetter ? -t.Metric!.Value : t.Metric!.Value).ThenBy(t => t.TrainableParameters).ThenBy(t => t.Id).ToList();

    /// <summary>The best succeeded trial (null when none succeeded).</summary>
    public SweepTrialResult? BestTrial => Leaderboard.FirstOrDefault();

    /// <summary>Succeeded trials that no other trial beats on both axes (better-or-equal metric with fewer-or-equal trainable
    /// parameters, strictly better on one), by increasing trainable parameters.</summary>
    public IReadOnlyList<SweepTrialResult> ParetoFront
    {
        get
        {
            var front = new List<SweepTrialResult>();
            double best = GreaterIsBetter ? double.NegativeInfinity : double.PositiveInfinity;
            foreach (var t in Trials.Where(t => t.Status == SweepTrialStatus.Succeeded)
                         .OrderBy(t => t.TrainableParameters).ThenBy(t => GreaterIsBetter ? -t.Metric!.Value : t.Metric!.Value))
            {
                double m = t.Metric!.Value;
                if (GreaterIsBetter ? m > best : m < best) { front.Add(t); best = m; }
            }
            return front;
        }
    }

    /// <summary>The leaderboard as a fixed-width text table (top <paramref name="top"/> rows; 0 = all).</summary>
    public string FormatLeaderboard(int top = 10)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"{"#",3} {"trial",5} {"epochs",6} {MetricName,12} {"trainable",10} {"%",8}  configuration");
        int i = 0;
        foreach (var t in top > 0 ? Leaderboard.Take(top) : Leaderboard)
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{++i,3} {t.Id,5} {t.Epochs,6} {t.Metric,12:F4} {t.TrainableParameters,10:N0} {t.TrainablePercent,8:F3}  {t.Description}"));
        return sb.ToString();
    }
}

/// <summary>Writes and reads a sweep's results: <c>trials.json</c> (every trial, the resume file), <c>leaderboard.csv</c>.</summary>
public static class SweepResultFiles
{
    /// <summary>File name of the JSON results (read back to resume).</summary>
    public const string JsonFileName = "trials.json";
    /// <summary>File name of the CSV leaderboard.</summary>
    public const string CsvFileName = "leaderboard.csv";
    /// <summary>File name of the metric-vs-parameters plot.</summary>
    public const string PlotFileName = "pareto.png";

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>Writes <c>trials.json</c> and <c>leaderboard.csv</c> into <paramref name="folder"/> (atomically: temp file, then rename).</summary>
    public static void Write(string folder, QuanTASweepResult result)
    {
        Directory.CreateDirectory(folder);
        var doc = new SweepFile(result.MetricName, result.GreaterIsBetter, result.StopReason, result.BestTrial?.Id,
            result.ParetoFront.Select(t => t.Id).ToArray(), result.Trials, result.Rejected);
        WriteAtomic(Path.Combine(folder, JsonFileName), JsonSerializer.Serialize(doc, Json));
        WriteAtomic(Path.Combine(folder, CsvFileName), ToCsv(result));
    }

    /// <summary>The trials recorded in <paramref name="folder"/>'s <c>trials.json</c> (empty when there is none).</summary>
    public static IReadOnlyList<SweepTrialResult> ReadTrials(string folder)
    {
        var path = Path.Combine(folder, JsonFileName);
        if (!File.Exists(path)) return [];
        try
        {
            var doc = JsonSerializer.Deserialize<SweepFile>(File.ReadAllText(path), Json);
            return doc?.Trials ?? [];
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The sweep results file '{path}' is not valid ({e.Message}); delete it or choose another output folder.", e);
        }
    }

    /// <summary>The leaderboard as CSV: rank, trial, config, rung, epochs, adapter, metric, trainable, percent, seconds, description;
    /// failed and cancelled trials follow with their error.</summary>
    public static string ToCsv(QuanTASweepResult result)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"rank,trial,config,rung,epochs,adapter,status,{Quote(result.MetricName)},trainable_parameters,trainable_percent,seconds,description,error");
        int rank = 0;
        var rows = result.Leaderboard.Concat(result.Trials.Where(t => t.Status != SweepTrialStatus.Succeeded));
        foreach (var t in rows)
        {
            string r = t.Status == SweepTrialStatus.Succeeded ? (++rank).ToString(CultureInfo.InvariantCulture) : "";
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{r},{t.Id},{t.ConfigId},{t.Rung},{t.Epochs},{t.Adapter},{t.Status},{t.Metric?.ToString("R", CultureInfo.InvariantCulture)}," +
                $"{t.TrainableParameters},{t.TrainablePercent:R},{t.Seconds:F2},{Quote(t.Description)},{Quote(t.Error ?? "")}"));
        }
        return sb.ToString();
    }

    static string Quote(string s) => s.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;

    static void WriteAtomic(string path, string text) => QuanTA.Core.Runtime.AtomicFile.WriteAllText(path, text);

    sealed record SweepFile(string Metric, bool GreaterIsBetter, string StopReason, int? BestTrial, int[] ParetoFront,
        IReadOnlyList<SweepTrialResult> Trials, IReadOnlyList<SweepRejection> Rejected);
}
