// Fit → mlContext.Model.Save → load in a fresh MLContext → PredictionEngine:
// `dotnet run -c Release --project samples/SaveLoadPredict [-- --out DIR]`.
// The saved .zip holds the adapter tensors, the trained head, the options, the label names and a fingerprint of the base
// model, not the base weights: the loading process needs the same base model folder (RegisterQuanTA(path) if it moved).
using System.Diagnostics;
using Microsoft.ML;
using QuanTA.Core.Data;
using QuanTA.MLNet;
using QuanTA.Samples;

int outAt = Array.IndexOf(args, "--out");
string outDir = Path.GetFullPath(outAt >= 0 && outAt + 1 < args.Length ? args[outAt + 1] : "out/save-load-predict");
var clock = Stopwatch.StartNew();
var classes = WordNetData.DefaultClasses;
var rand = new Random(1);
var rows = WordNetData.LoadLexnames(WordNetSplit.Train).GroupBy(r => r.Label).SelectMany(g => g.Take(40))
    .OrderBy(_ => rand.Next()).ToList();   // mixed classes: an enumerable view is read in order
string baseModel = ClassifierCheckpoint.Create(EmbeddedDefaults.BaseModelDirectory(), Path.Combine(outDir, "base-seqcls"), classes, seed: 1);
string zip = Path.Combine(outDir, "wordnet-quanta.zip");

// ---- 1. fit and save ----
var ml = new MLContext(seed: 1);
var data = ml.Data.LoadFromEnumerable(rows.Select(r => new Gloss { Text = r.Text, Label = r.Label }));
var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(new QuanTAFineTuneOptions
    {
        BaseModelPath = baseModel, TargetModules = ["all-linear"], TrainingPath = QuanTA.Core.Training.QuanTATrainingPath.Stacked,
        Epochs = 3, BatchSize = 16, LearningRate = 5e-3, MaxSequenceLength = 48, Seed = 1,
        Progress = new ConsoleProgress("fit"),
    }))
    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
var samples = WordNetData.LoadLexnames(WordNetSplit.Test).GroupBy(r => r.Label).Select(g => g.First()).Select(r => new Gloss { Text = r.Text, Label = r.Label }).ToList();
string[] before;
using (var model = pipeline.Fit(data))
{
    Console.WriteLine();
    ml.Model.SaveAtomically(model, data.Schema, zip);
    var engine = ml.Model.CreatePredictionEngine<Gloss, GlossPrediction>(model);
    before = samples.Select(s => engine.Predict(s).PredictedLabel).ToArray();
}
Console.WriteLine($"Saved {zip} ({new FileInfo(zip).Length / 1024.0:F0} KiB; the base model is referenced, not copied)");

// ---- 2. load in a fresh MLContext (another process would do exactly this) and predict row by row ----
var fresh = new MLContext().RegisterQuanTA();          // registers the QuanTA loader; once per MLContext that only loads
var loaded = fresh.Model.Load(zip, out var inputSchema);
try
{
    var engine = fresh.Model.CreatePredictionEngine<Gloss, GlossPrediction>(loaded, inputSchema);
    for (int i = 0; i < samples.Count; i++)
    {
        var p = engine.Predict(samples[i]);
        string text = samples[i].Text.Length > 70 ? samples[i].Text[..69] + "…" : samples[i].Text;
        Console.WriteLine($"{text,-72} → {p.PredictedLabel,-18} (p = {p.Score.Max():F2}; truth {samples[i].Label})");
        if (p.PredictedLabel != before[i])
            throw new InvalidOperationException($"Row {i}: the loaded model predicts {p.PredictedLabel}, the fitted one {before[i]}.");
    }
    Console.WriteLine("The loaded model predicts exactly what the fitted model predicted.");
}
finally { (loaded as IDisposable)?.Dispose(); }
Console.WriteLine($"Total wall time {clock.Elapsed.TotalSeconds:F0} s.");

/// <summary>Input row.</summary>
public sealed class Gloss { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }

/// <summary>Output row: the predicted class name and the class probabilities.</summary>
public sealed class GlossPrediction { public string PredictedLabel { get; set; } = ""; public float[] Score { get; set; } = []; }
