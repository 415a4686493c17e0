// Word → definition (definition modelling) on the embedded WordNet data and tiny LLaMA base model:
// `dotnet run -c Release --project samples/WordNetGeneration [-- --quick] [--gpu] [--out DIR]`.
// Prints a few greedy generations of the untuned base model, fine-tunes QuanTA adapters through ML.NET (loss on the
// definition tokens only), prints the same prompts again, and compares token F1 / exact match (SQuAD normalization,
// QuanTA.MLNet.GenerationMetrics) and perplexity of the reference definitions on held-out test words.
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Data;
using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Tokenization;
using QuanTA.Core.Training;
using QuanTA.MLNet;
using QuanTA.Samples;
using TorchSharp;

bool quick = args.Contains("--quick"), gpu = args.Contains("--gpu");
int outAt = Array.IndexOf(args, "--out");
string outDir = Path.GetFullPath(outAt >= 0 && outAt + 1 < args.Length ? args[outAt + 1] : "out/wordnet-generation");
int trainRows = quick ? 160 : 480, testRows = quick ? 40 : 100, shown = 6;
const int MaxNewTokens = 16;
var total = Stopwatch.StartNew();

// Target = " " + definition: the causal LM sees "lemma: definition", exactly WordNetData.PromptTargetSeparator's joining.
static Pair ToPair(DefinitionExample e) => new() { Prompt = e.Prompt, Target = WordNetData.PromptTargetSeparator + e.Target };
var train = WordNetData.LoadDefinitions(WordNetSplit.Train).Take(trainRows).Select(ToPair).ToList();
var test = WordNetData.LoadDefinitions(WordNetSplit.Test).Take(testRows).Select(ToPair).ToList();
string baseModel = EmbeddedDefaults.BaseModelDirectory();
Console.WriteLine($"WordNet word → definition: {train.Count} training rows, {test.Count} test rows (test split); base model {baseModel}");

// ---- before: the untuned base model, through QuanTA.Core directly (no adapter, nothing trained) ----
var before = BaseModelBaseline.Run(baseModel, test, MaxNewTokens);
Console.WriteLine();
Console.WriteLine($"Untuned base model: token F1 {before.F1:F3}, exact match {before.ExactMatch:F3}, perplexity {before.Perplexity:F1}");

// ---- fine-tune QuanTA through ML.NET ----
var ml = new MLContext(seed: 1);
if (gpu) { ml.GpuDeviceId = 0; ml.FallbackToCpu = true; }
var progress = new ConsoleProgress("quanta");
var options = new QuanTAFineTuneOptions
{
    Task = QuanTATask.TextGeneration,
    BaseModelPath = baseModel,
    TextColumnName = nameof(Pair.Prompt), TargetTextColumnName = nameof(Pair.Target),
    TargetModules = ["all-linear"], AxisCount = 4,
    Epochs = 2, BatchSize = 16, LearningRate = 3e-3, WarmupRatio = 0.06, MaxSequenceLength = 48,
    MaxNewTokens = MaxNewTokens, Seed = 1,
    LossCurvePngPath = Path.Combine(outDir, "loss-quanta-generation.png"),
    Progress = progress,
};
var clock = Stopwatch.StartNew();
using var model = ml.Transforms.QuanTAFineTune(options).Fit(ml.Data.LoadFromEnumerable(train));
progress.Finish();
Console.WriteLine($"QuanTA: {model.TrainableParameterCount:N0} trainable parameters on {model.AdaptedModules.Count} modules, fit {clock.Elapsed.TotalSeconds:F1} s; loss curve {options.LossCurvePngPath}");
var testView = ml.Data.LoadFromEnumerable(test);
var generated = ml.Data.Cache(model.Transform(testView));   // generate once, read twice
var after = GenerationMetrics.Evaluate(generated);
double afterPpl = model.Perplexity(testView);
var afterTexts = generated.GetColumn<string>(options.GeneratedTextColumnName).ToList();

Console.WriteLine();
for (int i = 0; i < Math.Min(shown, test.Count); i++)
{
    Console.WriteLine($"{test[i].Prompt}");
    Console.WriteLine($"   reference : {test[i].Target.Trim()}");
    Console.WriteLine($"   before    : {before.Texts[i].Trim()}");
    Console.WriteLine($"   after     : {afterTexts[i].Trim()}");
}
Console.WriteLine();
Console.WriteLine($"| {"model",-18} | {"token F1",8} | {"exact match",11} | {"perplexity",10} |");
Console.WriteLine($"|{new string('-', 20)}|{new string('-', 10)}|{new string('-', 13)}|{new string('-', 12)}|");
Console.WriteLine($"| {"untuned base",-18} | {before.F1,8:F3} | {before.ExactMatch,11:F3} | {before.Perplexity,10:F1} |");
Console.WriteLine($"| {"QuanTA fine-tuned",-18} | {after.F1,8:F3} | {after.ExactMatch,11:F3} | {afterPpl,10:F1} |");
Console.WriteLine($"Total wall time {total.Elapsed.TotalSeconds:F0} s.");

/// <summary>One word → definition row.</summary>
public sealed class Pair { public string Prompt { get; set; } = ""; public string Target { get; set; } = ""; }

/// <summary>Greedy generations, F1 / exact match and target perplexity of the base model without any adapter.</summary>
static class BaseModelBaseline
{
    public static (string[] Texts, double F1, double ExactMatch, double Perplexity) Run(string dir, IReadOnlyList<Pair> rows, int maxNewTokens)
    {
        var tok = HfTokenizer.FromPretrained(dir);
        using var lm = CausalLM.FromPretrained(dir, null, torch.CPU);
        var generator = new TextGenerator(lm, new Codec(tok));
        var texts = generator.Generate(rows.Select(r => r.Prompt).ToList(), new GenerationOptions
        {
            MaxNewTokens = maxNewTokens, Greedy = true, EosTokenIds = tok.EosId is int e ? [e] : null, StopStrings = ["\n"],
        }).Select(t => t.Split('\n')[0]).ToArray();
        double f1 = rows.Select((r, i) => GenerationMetrics.TokenF1(texts[i], r.Target)).Average();
        double em = rows.Select((r, i) => GenerationMetrics.ExactMatch(texts[i], r.Target) ? 1.0 : 0.0).Average();

        // Perplexity of the reference: prompt ids (with BOS) + target ids + EOS, loss on target tokens and EOS only
        // (the same encoding QuanTAFineTuneTransformer.Perplexity uses).
        double nll = 0; long count = 0;
        using (torch.no_grad())
            foreach (var r in rows)
            {
                using var scope = torch.NewDisposeScope();
                var p = tok.Encode(r.Prompt, addSpecialTokens: true);
                int[] t = [.. tok.Encode(r.Target, addSpecialTokens: false), tok.EosId ?? 0];
                var ids = torch.tensor(p.Concat(t).Select(x => (long)x).ToArray(), [1, p.Length + t.Length]);
                var mask = torch.ones_like(ids);
                var labels = Losses.PromptMaskedLabels(ids, mask, [p.Length]);
                var loss = Losses.CausalLM(lm.forward(ids, mask), labels, out long n);
                nll += loss.item<float>() * n; count += n;
            }
        return (texts, f1, em, Math.Exp(nll / count));
    }

    sealed class Codec(HfTokenizer tok) : ITextCodec
    {
        public IReadOnlyList<int> Encode(string text) => tok.Encode(text, addSpecialTokens: true);
        public string Decode(IReadOnlyList<int> ids) => tok.Decode(ids, skipSpecialTokens: true);
    }
}
