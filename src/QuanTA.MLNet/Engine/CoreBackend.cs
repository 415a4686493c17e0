using QuanTA.Core.Adapters;
using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Runtime;
using QuanTA.Core.Tokenization;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.MLNet.Engine;

/// <summary>What adapter injection did.</summary>
internal sealed record InjectionSummary(IReadOnlyList<string> AdaptedModules, long TrainableParameters, long TotalParameters);

/// <summary>
/// The one file that calls QuanTA.Core's model, tokenizer and adapter APIs, so the rest of the ML.NET layer depends on them
/// through <see cref="ILanguageModel"/> / <see cref="ITextTokenizer"/> only.
/// </summary>
internal static class CoreBackend
{
    /// <summary>Loads tokenizer and model from a Hugging Face folder, with messages naming what is missing.</summary>
    /// <remarks>Classification from a base (causal-LM) checkpoint without a <c>score</c> head works as in transformers'
    /// AutoModelForSequenceClassification: the head is created with <paramref name="numClasses"/> outputs, drawn from
    /// N(0, initializer_range²), and trained with the adapter (<paramref name="log"/> is told).</remarks>
    public static (ILanguageModel Model, ITextTokenizer Tokenizer) Load(string baseModelPath, QuanTATask task, Device device,
        int numClasses = 0, Action<string>? log = null, Core.Quantization.BaseQuantization quantization = Core.Quantization.BaseQuantization.None)
    {
        if (!Directory.Exists(baseModelPath))
            throw new DirectoryNotFoundException($"Base model folder '{baseModelPath}' not found (BaseModelPath).");
        var tokenizer = new TokenizerAdapter(HfTokenizer.FromPretrained(baseModelPath));
        ILanguageModel model;
        if (task != QuanTATask.TextClassification) model = new CausalModel(CausalLM.FromPretrained(baseModelPath, null, device, quantization));
        else if (HasClassificationHead(baseModelPath)) model = new SequenceClassifier(LlamaForSequenceClassification.FromPretrained(baseModelPath, null, device, quantization: quantization));
        else
        {
            log?.Invoke($"'{baseModelPath}' has no classification head (score.weight): a new {numClasses}-class head is initialized " +
                        "from N(0, initializer_range²) and trained with the adapter, as transformers' AutoModelForSequenceClassification does.");
            model = new SequenceClassifier(LlamaForSequenceClassification.FromPretrained(baseModelPath, null, device,
                numLabels: numClasses >= 2 ? numClasses : null, initializeMissingHead: true, seed: 0, quantization: quantization));
        }
        return (model, tokenizer);
    }

    /// <summary>A causal LM from a Hugging Face folder for chat, with an optional adapter file (QuanTA.Core's
    /// <see cref="AdapterFile"/> format) applied; returns its context length (config.json max_position_embeddings).</summary>
    public static (ILanguageModel Model, ITextTokenizer Tokenizer, int ContextLength) LoadForChat(string modelDir, string? adapterPath,
        Device device, ScalarType? dtype)
    {
        if (!Directory.Exists(modelDir)) throw new DirectoryNotFoundException($"Model folder '{modelDir}' not found.");
        var tokenizer = new TokenizerAdapter(HfTokenizer.FromPretrained(modelDir));
        var lm = CausalLM.FromPretrained(modelDir, dtype, device);
        try
        {
            if (!string.IsNullOrWhiteSpace(adapterPath)) AdapterFile.Load(lm, adapterPath);
            lm.eval();
            return (new CausalModel(lm), tokenizer, lm.Config.MaxPositionEmbeddings);
        }
        catch { lm.Dispose(); throw; }
    }

    /// <summary>The context length of a base model folder (config.json max_position_embeddings).</summary>
    public static int ContextLength(string modelDir) => HfModelConfig.Load(modelDir).MaxPositionEmbeddings;

    /// <summary>True when the folder's weights hold a sequence-classification head (<c>score.weight</c>).</summary>
    static bool HasClassificationHead(string modelDir)
    {
        try
        {
            foreach (var file in CheckpointLoader.FindWeightFiles(modelDir))
            {
                using var stream = File.OpenRead(file);
                if (SafetensorsReader.ReadHeader(stream, file, out _).Any(e => e.Name == "score.weight")) return true;
            }
            return false;
        }
        // An unreadable file: let the strict loader report it (it names the file and says what is wrong).
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or InvalidDataException or ArgumentException) { return true; }
    }

    /// <summary>The adapter configuration the options describe.</summary>
    public static IAdapterConfig AdapterConfig(QuanTAFineTuneOptions o, int seed) => o.Adapter == AdapterMethod.QuanTA
        ? new QuanTAConfig
        {
            Layout = o.AxisLayout, AxisCount = o.AxisCount, Pairs = o.Pairs?.Select(p => new AxisPair(p.Item1, p.Item2)).ToArray(),
            TensorCount = o.TensorCount, Rank = o.Rank, Dropout = o.Dropout, Seed = seed,
        }
        : new LoRAConfig { Rank = o.LoRARank, Alpha = o.LoRAAlpha, Dropout = o.Dropout, Seed = seed };

    /// <summary>Attaches adapters to the target modules and freezes everything else; throws naming an unknown target or a
    /// layout that cannot cover a target.</summary>
    public static InjectionSummary Inject(nn.Module model, QuanTAFineTuneOptions options, int seed)
    {
        var targets = TargetModules.Parse(string.Join(",", options.TargetModules));
        InjectionReport report;
        try { report = AdapterInjector.Inject(model, AdapterConfig(options, seed), targets); }
        catch (ArgumentException e)
        {
            var hint = options.Adapter == AdapterMethod.QuanTA && options.AxisLayout is not null
                ? " Leave QuanTAFineTuneOptions.AxisLayout unset to derive a layout for each layer from AxisCount, or target only the layers it covers." : "";
            throw new ArgumentException($"QuanTAFineTuneOptions.TargetModules / AxisLayout: {e.Message}{hint}", nameof(QuanTAFineTuneOptions.TargetModules), e);
        }
        return new InjectionSummary(report.Layers.Select(l => l.Name).ToArray(), report.TrainableParameters, report.TotalParameters);
    }

    /// <summary>Folds every adapter into its layer's weight (zero inference overhead).</summary>
    public static void MergeAll(nn.Module model) => AdapterInjector.MergeAll(model);

    /// <summary>Restores every merged layer's base weight.</summary>
    public static void UnmergeAll(nn.Module model) => AdapterInjector.UnmergeAll(model);

    /// <summary>Plain adapter export: safetensors + JSON config (QuanTA.Core's <see cref="AdapterFile"/>); a trained
    /// classification head goes next to it as <c>&lt;name&gt;.head.safetensors</c>.</summary>
    public static void ExportAdapter(nn.Module model, string path)
    {
        AdapterFile.Save(model, path);
        var head = model.named_parameters().Where(p => p.name.StartsWith("score.", StringComparison.Ordinal) && p.parameter.requires_grad)
            .ToDictionary(p => p.name, p => p.parameter.detach().cpu().contiguous());
        if (head.Count == 0) return;
        try { AtomicFile.Write(Path.ChangeExtension(path, ".head.safetensors"), s => Safetensors.SaveStateDict(s, head, leaveOpen: true)); }
        finally { foreach (var t in head.Values) t.Dispose(); }
    }

    sealed class TokenizerAdapter(HfTokenizer tok) : ITextTokenizer, ITextCodec
    {
        public int[] Encode(string text, bool addSpecialTokens) => tok.Encode(text, addSpecialTokens);
        public string Decode(IReadOnlyList<int> ids) => tok.Decode(ids, skipSpecialTokens: true);
        public int PadId => tok.PadId ?? tok.EosId ?? 0;
        public int EosId => tok.EosId ?? throw new InvalidDataException($"The tokenizer in '{tok.Directory}' has no end-of-sequence token.");
        public IReadOnlyList<int> EosIds => tok.EosIds;
        public bool IsSpecial(int id) => tok.IsSpecial(id);
        IReadOnlyList<int> ITextCodec.Encode(string text) => tok.Encode(text, true);
    }

    sealed class SequenceClassifier(LlamaForSequenceClassification m) : ILanguageModel
    {
        public nn.Module Module => m;
        public int? NumLabels => m.NumLabels;
        public Tensor Forward(Tensor inputIds, Tensor attentionMask) => m.forward(inputIds, attentionMask);   // (B, L)
        public Tensor LanguageModelLoss(Tensor inputIds, Tensor attentionMask, Tensor labels) =>
            throw new InvalidOperationException("A sequence-classification model has no language-model loss.");
        public string[] Generate(IReadOnlyList<int[]> prompts, GenerationSettings settings, ITextTokenizer tokenizer) =>
            throw new InvalidOperationException("A sequence-classification model cannot generate text.");
        public TextGenerator CreateGenerator(ITextTokenizer tokenizer) =>
            throw new InvalidOperationException("A sequence-classification model cannot generate text.");
        public void Dispose() => m.Dispose();
    }

    sealed class CausalModel(CausalLM m) : ILanguageModel
    {
        public nn.Module Module => m;
        public int? NumLabels => null;
        public Tensor Forward(Tensor inputIds, Tensor attentionMask) => m.forward(inputIds, attentionMask);   // (B, T, V)
        public Tensor LanguageModelLoss(Tensor inputIds, Tensor attentionMask, Tensor labels) => m.LanguageModelLoss(inputIds, attentionMask, labels);

        public TextGenerator CreateGenerator(ITextTokenizer tokenizer) => new(m, tokenizer as ITextCodec);

        public string[] Generate(IReadOnlyList<int[]> prompts, GenerationSettings s, ITextTokenizer tokenizer)
        {
            var generator = new TextGenerator(m, tokenizer as ITextCodec);
            var options = new GenerationOptions
            {
                MaxNewTokens = s.MaxNewTokens, Greedy = s.Greedy, Temperature = s.Temperature, TopP = s.TopP, Seed = s.Seed,
                RepetitionPenalty = s.RepetitionPenalty, FrequencyPenalty = s.FrequencyPenalty, PresencePenalty = s.PresencePenalty,
                EosTokenIds = s.EosTokenIds ?? [tokenizer.EosId],
            };
            var ids = generator.GenerateIds(prompts.Select(p => (IReadOnlyList<long>)p.Select(i => (long)i).ToArray()).ToList(), options);
            return ids.Select(g => tokenizer.Decode(g.Select(i => (int)i).ToArray())).ToArray();
        }

        public void Dispose() => m.Dispose();
    }
}
