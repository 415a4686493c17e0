using System.CommandLine;
using QuanTA.Core.Adapters;
using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using QuanTA.Core.Tokenization;
using QuanTA.MLNet;
using TorchSharp;

namespace QuanTA.Cli.Commands;

/// <summary>Shared by the model verbs: loading a model folder (weights + tokenizer) and one-line error handling.</summary>
internal static class ModelFolder
{
    /// <summary>Runs a verb body; any failure becomes one line on stderr and exit code 1.</summary>
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e)
        {
            Console.Error.WriteLine($"error: {Flatten(e)}");
            return 1;
        }
    }

    static string Flatten(Exception e) => (e is AggregateException { InnerException: { } inner } ? inner : e).Message.ReplaceLineEndings(" ");

    /// <summary>Parses --dtype (fp32, fp16, bf16) or returns null for the device default.</summary>
    public static torch.ScalarType? ParseDType(string? s) => TorchRuntime.ParseDType(s, "--dtype");

    /// <summary>The --adapter option shared by the model verbs.</summary>
    public static Option<string?> AdapterOption() => new("--adapter")
    {
        Description = "An adapter to apply to the model: a .safetensors file saved by QuanTA.MLNet (with its .json next to it), or a PEFT adapter folder (adapter_config.json + adapter_model.safetensors: LoRA from PEFT or quanta export --format peft, QuanTA from quanta export).",
    };

    /// <summary>True when <paramref name="path"/> is a model .zip written by <c>quanta finetune</c> / <c>mlContext.Model.Save</c>.</summary>
    public static bool IsSavedModel(string? path) => path is not null && File.Exists(path) &&
        Path.GetExtension(path).Equals(".zip", StringComparison.OrdinalIgnoreCase);

    /// <summary>Loads a saved model .zip and finds its QuanTA transformer (disposed with the result).</summary>
    public static SavedModel LoadSavedModel(string path, string device)
    {
        var ml = CliRun.Context(device, seed: 1);
        var loaded = ml.Model.LoadWithQuanTA(ml, path, out _);
        return new SavedModel(TextData.FindQuanTA(loaded, path));
    }

    /// <summary>A loaded model .zip.</summary>
    public sealed class SavedModel(QuanTA.MLNet.QuanTAFineTuneTransformer transformer) : IDisposable
    {
        /// <summary>The fine-tuned transformer.</summary>
        public QuanTA.MLNet.QuanTAFineTuneTransformer Transformer => transformer;
        /// <inheritdoc/>
        public void Dispose() => transformer.Dispose();
    }

    /// <summary>Loads the causal LM (plus an optional adapter file) and its tokenizer from a Hugging Face folder.</summary>
    public static (CausalLM Model, ITextCodec Codec) Load(string? dir, string device, string? dtype, string? adapter = null)
    {
        if (string.IsNullOrWhiteSpace(dir)) throw new ArgumentException("--model is required (a Hugging Face model folder).");
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"--model '{dir}' is not a directory.");
        var dev = CliRun.Device(device);
        var codec = HfTokenizer.FromPretrained(dir);
        var model = CausalLM.FromPretrained(dir, ParseDType(dtype), dev);
        if (!string.IsNullOrWhiteSpace(adapter))
        {
            try
            {
                AdapterFile.Load(model, adapter);
                model.eval();                                  // the new adapter modules too (dropout off)
            }
            catch { model.Dispose(); throw; }
        }
        return (model, codec);
    }
}
