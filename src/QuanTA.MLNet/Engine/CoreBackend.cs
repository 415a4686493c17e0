using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.MLNet.Engine;

/// <summary>What adapter injection did.</summary>
internal sealed record InjectionSummary(IReadOnlyList<string> AdaptedModules, long TrainableParameters, long TotalParameters);

/// <summary>
/// The one file that calls QuanTA.Core's model, tokenizer and adapter APIs, so the ML.NET layer depends on them through
/// <see cref="ILanguageModel"/> / <see cref="ITextTokenizer"/> only.
/// </summary>
internal static class CoreBackend
{
    /// <summary>Test hook: replaces base-model loading (a tiny in-test model).</summary>
    internal static Func<string, QuanTATask, Device, (ILanguageModel, ITextTokenizer)>? LoaderOverride;

    /// <summary>Loads tokenizer and model from a Hugging Face folder.</summary>
    public static (ILanguageModel Model, ITextTokenizer Tokenizer) Load(string baseModelPath, QuanTATask task, Device device)
    {
        if (LoaderOverride is not null) return LoaderOverride(baseModelPath, task, device);
        throw new NotImplementedException("waiting for QuanTA.Core models/tokenizer");
    }

    /// <summary>Attaches adapters to the target modules, freezes everything else; throws naming an unknown target or a
    /// layout that cannot cover a target.</summary>
    public static InjectionSummary Inject(nn.Module model, QuanTAFineTuneOptions options)
    {
        throw new NotImplementedException("waiting for QuanTA.Core AdapterInjector");
    }

    /// <summary>Folds every adapter into its layer's weight (zero inference overhead).</summary>
    public static void MergeAll(nn.Module model)
    {
        foreach (var (_, m) in model.named_modules()) if (m is AdaptableLinear l) l.Merge();
    }

    /// <summary>Restores every merged layer's base weight.</summary>
    public static void UnmergeAll(nn.Module model)
    {
        foreach (var (_, m) in model.named_modules()) if (m is AdaptableLinear l) l.Unmerge();
    }

    /// <summary>Plain adapter export: safetensors + JSON config.</summary>
    public static void ExportAdapter(nn.Module model, string path)
    {
        throw new NotImplementedException("waiting for QuanTA.Core AdapterFile");
    }
}
