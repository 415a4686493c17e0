// Point QuanTA at your own Hugging Face model folder (downloaded by you, e.g. with `huggingface-cli download
// meta-llama/Llama-3.2-1B --local-dir ~/models/Llama-3.2-1B`; this project never downloads anything):
//   dotnet run -c Release --project samples/YourOwnModel -- ~/models/Llama-3.2-1B [--gpu] [--rows N]
// Classifies WordNet glosses (the embedded data) by scoring each class name as the model's continuation
// (ClassificationMode.Verbalizer, the paper's commonsense setup), so a plain causal-LM checkpoint works without a head.
// See README.md next to this file for every option, GPU set-up and bf16.
using Microsoft.ML;
using QuanTA.Core.Data;
using QuanTA.MLNet;

if (args.Length == 0 || args[0].StartsWith("--", StringComparison.Ordinal))
{
    Console.Error.WriteLine("Usage: YourOwnModel <Hugging Face model folder> [--gpu] [--rows N]   (see samples/YourOwnModel/README.md)");
    return 2;
}
string modelDir = args[0];
bool gpu = args.Contains("--gpu");
int rowsAt = Array.IndexOf(args, "--rows");
int perClass = rowsAt > 0 && rowsAt + 1 < args.Length ? int.Parse(args[rowsAt + 1]) : 20;

var ml = new MLContext(seed: 1);
if (gpu)
{
    ml.GpuDeviceId = 0;          // CUDA device 0; weights load as bfloat16 on CUDA, float32 on CPU
    ml.FallbackToCpu = false;    // true: run on the CPU (with a warning) when CUDA is unavailable
}

var train = ml.Data.LoadFromEnumerable(WordNetData.LoadLexnames(WordNetSplit.Train).GroupBy(r => r.Label).SelectMany(g => g.Take(perClass)));
var test = ml.Data.LoadFromEnumerable(WordNetData.LoadLexnames(WordNetSplit.Test).GroupBy(r => r.Label).SelectMany(g => g.Take(10)));

var options = new QuanTAFineTuneOptions
{
    BaseModelPath = modelDir,
    ClassificationMode = ClassificationMode.Verbalizer,    // causal LM scores " noun.animal", " noun.artifact", ...
    Adapter = AdapterMethod.QuanTA,
    AxisCount = 4,                                          // layout derived per layer, e.g. 2048 → [7,7,7,7]; or AxisLayout = [8, 8, 8, 4]
    TargetModules = ["q_proj", "v_proj"],                   // the paper's; or ["all-linear"]
    Epochs = 1, BatchSize = 4, GradientAccumulationSteps = 4, LearningRate = 1e-4, MaxSequenceLength = 64,
    Progress = new Progress<QuanTAProgress>(p => Console.WriteLine($"step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} {p.TokensPerSecond:F0} tok/s")),
};
var pipeline = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(options));
using var model = pipeline.Fit(train);
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
var tuned = (QuanTAFineTuneTransformer)model.LastTransformer;
Console.WriteLine($"{tuned.TrainableParameterCount:N0} trainable parameters; micro-accuracy {metrics.MicroAccuracy:F3}, " +
                  $"macro-accuracy {metrics.MacroAccuracy:F3}, log-loss {metrics.LogLoss:F3}");
return 0;
