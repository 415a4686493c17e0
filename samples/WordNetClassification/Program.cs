// The README's main job: `dotnet run -c Release --project samples/WordNetClassification` (or scripts/run-default.sh).
// WordNet 3.0 gloss → lexicographer file (10 classes, e.g. "mandolin: a stringed instrument ..." → noun.artifact) on the
// embedded tiny LLaMA base model, fine-tuned three ways through ML.NET and evaluated with ML.NET's multiclass metrics:
//   1. head only   — the untuned baseline: the backbone stays frozen, only the classification head is trained
//                    (a linear probe of the base model's last hidden state; every adapted model below trains this head too);
//   2. QuanTA      — QuanTA tensors (4 axes, all 6 pairs, full rank) on every linear layer ("all-linear") + the head;
//                    on this 4-layer model the paper's q_proj,v_proj targets (--targets q_proj,v_proj) gain less;
//   3. LoRA        — LoRA on the same targets, rank 6: about the same trainable parameter count as QuanTA + the head.
// Options: --quick (fewer rows), --gpu (CUDA device 0 through mlContext.GpuDeviceId; needs a CUDA libtorch, see
// samples/YourOwnModel), --out DIR (loss-curve PNGs and the classifier checkpoint; default out/wordnet-classification).
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Data;
using QuanTA.MLNet;
using QuanTA.Samples;

bool quick = args.Contains("--quick"), gpu = args.Contains("--gpu");
int outAt = Array.IndexOf(args, "--out");
string outDir = Path.GetFullPath(outAt >= 0 && outAt + 1 < args.Length ? args[outAt + 1] : "out/wordnet-classification");
string? Value(string name) { int at = Array.IndexOf(args, name); return at >= 0 && at + 1 < args.Length ? args[at + 1] : null; }
string[] valued = ["--out", "--lr", "--epochs", "--targets", "--runs", "--lora-rank", "--quantize", "--seed"];
var unknown = args.Where((a, i) => a is not ("--quick" or "--gpu") && !valued.Contains(a) && !(i > 0 && valued.Contains(args[i - 1]))).ToList();
if (unknown.Count > 0)
{
    Console.Error.WriteLine($"Unknown argument(s): {string.Join(' ', unknown)}. Expected --quick, --gpu, --out DIR, --lr X, --epochs N, " +
                            "--targets q_proj,v_proj|all-linear, --lora-rank R, --runs head-only,quanta,lora, --quantize none|int8|nf4, --seed N.");
    return 2;
}
double lr = double.Parse(Value("--lr") ?? "5e-3", System.Globalization.CultureInfo.InvariantCulture);
int epochs = int.Parse(Value("--epochs") ?? "3");
string[] targets = (Value("--targets") ?? "all-linear").Split(',');
// LoRA rank with about QuanTA's parameter count: all-linear LoRA has 4,864 parameters per rank per layer here, QuanTA
// (4 axes, 6 full-rank pairs) 29,472 per layer → r = 6; on q_proj,v_proj: 896 vs 3,072 per layer → r = 3.
int loraRank = int.Parse(Value("--lora-rank") ?? (targets is ["all-linear"] ? "6" : "3"));
string[] only = (Value("--runs") ?? "head-only,quanta,lora").Split(',');
// --quantize: store the frozen base's decoder projections in Int8 or NF4 (QuanTAFineTuneOptions.BaseQuantization).
var quantize = Enum.TryParse<QuanTA.Core.Quantization.BaseQuantization>(Value("--quantize") ?? "none", true, out var q) && Enum.IsDefined(q)
    ? q : throw new ArgumentException($"--quantize '{Value("--quantize")}' is not none, int8 or nf4.");

// --seed: the training seed (adapter initialization, shuffling); the data subset and the score head stay fixed.
int seed = int.Parse(Value("--seed") ?? "1");

int trainPerClass = quick ? 16 : 100, testPerClass = quick ? 20 : 50;
var total = Stopwatch.StartNew();
var ml = new MLContext(seed: 1);
if (gpu) { ml.GpuDeviceId = 0; ml.FallbackToCpu = true; }

// ---- data: the embedded WordNet sample (10 balanced classes), a per-class subset so the run takes minutes on 2 cores ----
var classes = WordNetData.DefaultClasses;
var trainRows = TakePerClass(WordNetData.LoadLexnames(WordNetSplit.Train), trainPerClass, seed: 1);
var testRows = TakePerClass(WordNetData.LoadLexnames(WordNetSplit.Test), testPerClass, seed: 2);
var train = ml.Data.LoadFromEnumerable(trainRows);
var test = ml.Data.LoadFromEnumerable(testRows);
Console.WriteLine($"WordNet gloss → lexicographer file: {classes.Count} classes, {trainRows.Count} training rows, {testRows.Count} test rows (test split)");
Console.WriteLine($"  e.g. \"{Shorten(trainRows[0].Text, 90)}\" → {trainRows[0].Label}");

// ---- base model: the embedded tiny LLaMA (causal LM) given a fresh classification head, as HF's AutoModelForSequenceClassification does ----
string causalLm = EmbeddedDefaults.BaseModelDirectory();
string baseModel = ClassifierCheckpoint.Create(causalLm, Path.Combine(outDir, "base-seqcls"), classes, seed: 1);
Console.WriteLine($"Base model: {causalLm} (+ a {classes.Count}-class score head → {baseModel})");
Console.WriteLine($"Device: {(gpu ? "cuda:0 requested (falls back to CPU when unavailable)" : "cpu")}; output folder: {outDir}; base quantization: {quantize}");
Console.WriteLine();

QuanTAFineTuneOptions Common(string name) => new()
{
    BaseModelPath = baseModel,
    MaxSequenceLength = 48, Epochs = epochs, BatchSize = 16, LearningRate = lr, TargetModules = targets,
    Schedule = QuanTA.Core.Training.LearningRateSchedule.Linear, WarmupRatio = 0.06, Seed = seed, BaseQuantization = quantize,
    LossCurvePngPath = Path.Combine(outDir, $"loss-{name}.png"),
};
var runs = new (string Name, string What, QuanTAFineTuneOptions Options)[]
{
    ("head-only", "untuned baseline: frozen base, head trained", Tweak(Common("head-only"), o => { o.Adapter = AdapterMethod.LoRA; o.TargetModules = ["score"]; o.LoRARank = 1; })),
    ("quanta", $"QuanTA {string.Join(",", targets)}, 4 axes", Tweak(Common("quanta"), o => { o.Adapter = AdapterMethod.QuanTA; o.AxisCount = 4; o.TrainingPath = QuanTA.Core.Training.QuanTATrainingPath.Stacked; })),
    ("lora", $"LoRA {string.Join(",", targets)}, r={loraRank}", Tweak(Common("lora"), o => { o.Adapter = AdapterMethod.LoRA; o.LoRARank = loraRank; o.LoRAAlpha = 2 * loraRank; })),
};

var results = new List<(string Name, string What, long Params, MulticlassClassificationMetrics M, TimeSpan Time)>();
foreach (var (name, what, options) in runs.Where(r => only.Contains(r.Name)))
{
    Console.WriteLine($"== {name}: {what}");
    var progress = new ConsoleProgress(name);
    options.Progress = progress;
    var clock = Stopwatch.StartNew();
    var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", keyOrdinality: Microsoft.ML.Transforms.ValueToKeyMappingEstimator.KeyOrdinality.ByValue)
        .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(options));
    using var model = pipeline.Fit(train);
    progress.Finish();
    var fitTime = clock.Elapsed;
    var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
    clock.Stop();
    var tuned = (QuanTAFineTuneTransformer)model.LastTransformer;
    Console.WriteLine($"  trainable parameters {tuned.TrainableParameterCount:N0} ({tuned.AdaptedModules.Count} adapted modules); " +
                      $"fit {fitTime.TotalSeconds:F1} s, fit + evaluate {clock.Elapsed.TotalSeconds:F1} s");
    Console.WriteLine($"  micro-accuracy {metrics.MicroAccuracy:F3}  macro-accuracy {metrics.MacroAccuracy:F3}  log-loss {metrics.LogLoss:F3}");
    Console.WriteLine($"  loss curve: {options.LossCurvePngPath}");
    Console.WriteLine();
    results.Add((name, what, tuned.TrainableParameterCount, metrics, clock.Elapsed));
}

// ---- summary ----
Console.WriteLine($"Results on {testRows.Count} test rows ({classes.Count} classes, chance = {1.0 / classes.Count:F3}):");
Console.WriteLine($"| {"run",-10} | {"what",-44} | {"trainable",10} | {"micro-acc",9} | {"macro-acc",9} | {"log-loss",8} | {"time (s)",8} |");
Console.WriteLine($"|{new string('-', 12)}|{new string('-', 46)}|{new string('-', 12)}|{new string('-', 11)}|{new string('-', 11)}|{new string('-', 10)}|{new string('-', 10)}|");
foreach (var r in results)
    Console.WriteLine($"| {r.Name,-10} | {r.What,-44} | {r.Params,10:N0} | {r.M.MicroAccuracy,9:F3} | {r.M.MacroAccuracy,9:F3} | {r.M.LogLoss,8:F3} | {r.Time.TotalSeconds,8:F1} |");
Console.WriteLine();
var best = results.Where(r => r.Name != "head-only").DefaultIfEmpty(results[0]).MaxBy(r => r.M.MicroAccuracy);
Console.WriteLine($"Confusion matrix of {best.Name} (rows = truth, columns = predicted):");
Console.WriteLine(best.M.ConfusionMatrix.GetFormattedConfusionTable());
Console.WriteLine($"Total wall time {total.Elapsed.TotalSeconds:F0} s.");
return 0;

static QuanTAFineTuneOptions Tweak(QuanTAFineTuneOptions o, Action<QuanTAFineTuneOptions> f) { f(o); return o; }

static List<LexnameExample> TakePerClass(IReadOnlyList<LexnameExample> rows, int perClass, int seed)
{
    var rand = new Random(seed);
    return rows.GroupBy(r => r.Label).OrderBy(g => g.Key, StringComparer.Ordinal)
        .SelectMany(g => g.Take(perClass)).OrderBy(_ => rand.Next()).ToList();
}

static string Shorten(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "…";
