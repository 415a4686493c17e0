// The README's ML.NET snippet, runnable: `dotnet run --project samples/MLNetQuickStart` from the repository root.
// Base models: the tiny LLaMA fixtures (pass other Hugging Face folders as arguments: <classifier> <causal-lm>);
// add --gpu to train on CUDA device 0 (mlContext.GpuDeviceId; needs a CUDA libtorch, see docs).
using Microsoft.ML;
using QuanTA.MLNet;

bool gpu = args.Contains("--gpu");
args = args.Where(a => a != "--gpu").ToArray();
string clsBase = args.Length > 0 ? args[0] : "test/fixtures/llama-tiny-seqcls";
string lmBase = args.Length > 1 ? args[1] : "test/fixtures/llama-tiny";
var ml = new MLContext(seed: 1);
if (gpu) { ml.GpuDeviceId = 0; ml.FallbackToCpu = false; }

// ---- text classification: label = which keyword the text mentions -------------------------------------------------
var train = ml.Data.LoadFromEnumerable(Toy.Reviews(48, seed: 1));
var test = ml.Data.LoadFromEnumerable(Toy.Reviews(30, seed: 2));
var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(new QuanTAFineTuneOptions
    {
        BaseModelPath = clsBase,
        AxisLayout = [8, 4, 4],                 // hidden size 128 = 8·4·4 (LLaMA-7B: [16, 8, 8, 4])
        Epochs = 4, BatchSize = 8, LearningRate = 3e-3,
    }))
    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
var model = pipeline.Fit(train);
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
Console.WriteLine($"classification: micro-accuracy {metrics.MicroAccuracy:F3}, log-loss {metrics.LogLoss:F3}");
ml.Model.SaveAtomically(model, train.Schema, "classifier.zip");   // temp file + rename: a failed save keeps the old zip
model.Dispose();

var fresh = new MLContext { GpuDeviceId = ml.GpuDeviceId, FallbackToCpu = ml.FallbackToCpu }.RegisterQuanTA();   // once per MLContext that only loads
using (var loaded = (IDisposable)fresh.Model.Load("classifier.zip", out _))
{
    var engine = fresh.Model.CreatePredictionEngine<Review, ReviewPrediction>((ITransformer)loaded);
    Console.WriteLine($"'a music garden' → {engine.Predict(new Review { Text = "a music garden" }).PredictedLabel}");
}

// ---- text generation: prompt → target, loss on the target tokens only -----------------------------------------------
var pairs = ml.Data.LoadFromEnumerable(Toy.Pairs(32));
using var generator = ml.Transforms.QuanTAFineTune(new QuanTAFineTuneOptions
{
    Task = QuanTATask.TextGeneration,
    BaseModelPath = lmBase,
    TextColumnName = "Text", TargetTextColumnName = "Target",
    AxisLayout = [8, 4, 4], TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"],
    Epochs = 8, BatchSize = 8, LearningRate = 1e-2, MaxNewTokens = 4,
}).Fit(pairs);
var scores = GenerationMetrics.Evaluate(generator.Transform(pairs));
Console.WriteLine($"generation: exact match {scores.ExactMatch:F2}, F1 {scores.F1:F2}, perplexity {generator.Perplexity(pairs):F1}");
ml.Model.SaveAtomically(generator, pairs.Schema, "generator.zip");

using var loadedGenerator = (QuanTAFineTuneTransformer)new MLContext().RegisterQuanTA().Model.Load("generator.zip", out _);
var gen = ml.Model.CreatePredictionEngine<Prompt, Completion>(loadedGenerator);
Console.WriteLine($"'word: rose\\nkind:' →{gen.Predict(new Prompt { Text = "word: rose\nkind:" }).GeneratedText}");

public sealed class Review { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }
public sealed class ReviewPrediction { public string PredictedLabel { get; set; } = ""; public float[] Score { get; set; } = []; }
public sealed class Prompt { public string Text { get; set; } = ""; public string Target { get; set; } = ""; }
public sealed class Completion { public string GeneratedText { get; set; } = ""; }

static class Toy
{
    static readonly string[] Fillers = ["small", "green", "house", "table", "quiet", "paper", "stone", "light", "window", "garden"];
    static readonly (string Keyword, string Label)[] Classes = [("apple", "fruit"), ("river", "water"), ("music", "sound")];
    static readonly (string Word, string Kind)[] Kinds = [("cat", "animal"), ("rose", "flower"), ("oak", "tree"), ("car", "vehicle")];

    public static IEnumerable<Review> Reviews(int n, int seed)
    {
        var rand = new Random(seed);
        for (int i = 0; i < n; i++)
        {
            var words = Enumerable.Range(0, 4).Select(_ => Fillers[rand.Next(Fillers.Length)]).ToList();
            words.Insert(rand.Next(5), Classes[i % 3].Keyword);
            yield return new Review { Text = string.Join(' ', words), Label = Classes[i % 3].Label };
        }
    }

    public static IEnumerable<Prompt> Pairs(int n) =>
        Enumerable.Range(0, n).Select(i => new Prompt { Text = $"word: {Kinds[i % 4].Word}\nkind:", Target = $" {Kinds[i % 4].Kind}" });
}
