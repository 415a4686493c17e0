// Sweeps QuanTA axis layouts (generated from the model's hidden size) and LoRA ranks on a small learnable task, with
// successive halving over epochs, a trial/time budget and a trainable-parameter cap; prints the leaderboard and the Pareto
// front, and writes trials.json, leaderboard.csv and pareto.png. Runs on CPU in a few minutes:
//   dotnet run --project samples/Sweep [-- <base model folder> <output folder>]
// Default base model: the tiny LLaMA classifier fixture (hidden size 128); default output folder artifacts/sweep (git-ignored).
// Running it again resumes from the output folder.
using System.Globalization;
using Microsoft.ML;
using QuanTA.MLNet;
using QuanTA.MLNet.AutoML;

string baseModel = args.Length > 0 ? args[0] : FindUp("test/fixtures/llama-tiny-seqcls");
string output = args.Length > 1 ? args[1] : Path.Combine("artifacts", "sweep");
var ml = new MLContext(seed: 1);

// ---- a small task: label = which keyword the text mentions (the rest is filler) --------------------------------------
var train = ml.Data.LoadFromEnumerable(Toy.Rows(60, seed: 1));
var validation = ml.Data.LoadFromEnumerable(Toy.Rows(30, seed: 2));

// ---- the search space: QuanTA layouts of 128 for N = 2, 3, 4 (generated) vs LoRA ranks; lr on a log scale -------------
var shape = ModelShape.FromConfig(baseModel);
var space = QuanTASearchSpace.Create(shape.HiddenSize, axisCounts: [2, 3, 4])
    .Fix("TargetModules", "q_proj,v_proj")
    .Fix("CosineSchedule", false)
    .With("Epochs", new RangeOption(1, 4, null, false, typeof(int)))              // successive halving: 1 → 2 → 4 epochs
    .With("LearningRate", new RangeOption(1e-3, 3e-2, null, true, typeof(double)));
Console.WriteLine($"Base model {baseModel}: hidden size {shape.HiddenSize}, {shape.BaseParameters:N0} parameters.");
foreach (var n in new[] { 2, 3, 4 })
    Console.WriteLine($"  N = {n}: layouts {string.Join("  ", QuanTASearchSpace.Factorizations(shape.HiddenSize, n, 4).Select(QuanTASearchSpace.FormatLayout))}");

var experiment = ml.QuanTASweep(new QuanTAFineTuneOptions { BaseModelPath = baseModel, BatchSize = 10, MaxSequenceLength = 16 })
    .SetData(train, validation)
    .SetSearchSpace(space)
    .SetMetric(SweepMetric.ValidationLoss)
    .SetBudget(maxTrials: 36, maxTime: TimeSpan.FromMinutes(5))
    .SetConstraint(maxTrainableFraction: 0.03)                                     // ≤ 3 % trainable (head included)
    .SetReductionFactor(2)
    .SetSeed(1)
    .SetOutputFolder(output);
experiment.TrialCompleted += t => Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"  trial {t.Id,2}  {t.Epochs} ep  {t.Status,-9} {(t.Metric is double m ? m.ToString("F4", CultureInfo.InvariantCulture) : t.Error),8}  " +
    $"{t.TrainableParameters,7:N0} params  {t.Seconds,5:F1}s  {t.Description}"));

var result = experiment.Run();
Console.WriteLine();
Console.WriteLine($"Stopped: {result.StopReason}. {result.Trials.Count} trials ({result.ReusedTrials} reused from {output}), " +
    $"{result.Leaderboard.Count} succeeded, {result.Rejected.Count} configurations rejected by the constraint.");
Console.WriteLine();
Console.WriteLine("Leaderboard (validation loss, lower is better):");
Console.Write(result.FormatLeaderboard(12));
Console.WriteLine();
Console.WriteLine("Pareto front (fewest trainable parameters for a given validation loss):");
foreach (var p in result.ParetoFront)
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  {p.TrainableParameters,7:N0} params ({p.TrainablePercent:F2} %)  loss {p.Metric:F4}  {p.Description} ({p.Epochs} epochs)"));
Console.WriteLine();
Console.WriteLine($"Best: {result.BestTrial?.Description} ({result.BestTrial?.Epochs} epochs), loss {result.BestTrial?.Metric:F4}");
Console.WriteLine($"Files: {Path.GetFullPath(output)}/{{{SweepResultFiles.JsonFileName}, {SweepResultFiles.CsvFileName}, {SweepResultFiles.PlotFileName}}}");

static string FindUp(string relative)
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        if (Directory.Exists(Path.Combine(dir.FullName, relative))) return Path.Combine(dir.FullName, relative);
    throw new DirectoryNotFoundException($"'{relative}' not found above {Directory.GetCurrentDirectory()}; pass the base model folder as the first argument.");
}

/// <summary>Rows of the toy task.</summary>
sealed class Row
{
    public string Text { get; set; } = "";
    public string Label { get; set; } = "";
}

static class Toy
{
    static readonly string[] Fillers = ["small", "green", "house", "table", "quiet", "paper", "stone", "light", "window", "garden",
        "old", "city", "road", "morning", "blue", "simple", "warm", "night", "open", "cloud"];
    static readonly (string Keyword, string Label)[] Classes = [("apple", "fruit"), ("river", "water"), ("music", "sound"), ("horse", "animal")];

    public static List<Row> Rows(int count, int seed)
    {
        var rand = new Random(seed);
        var rows = new List<Row>();
        for (int i = 0; i < count; i++)
        {
            var (kw, label) = Classes[i % Classes.Length];
            var words = Enumerable.Range(0, 5).Select(_ => Fillers[rand.Next(Fillers.Length)]).ToList();
            words.Insert(rand.Next(words.Count + 1), kw);
            rows.Add(new Row { Text = string.Join(' ', words), Label = label });
        }
        return rows.OrderBy(_ => rand.Next()).ToList();
    }
}
