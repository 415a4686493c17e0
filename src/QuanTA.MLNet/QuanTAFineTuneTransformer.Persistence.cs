using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using QuanTA.Core.Runtime;
using QuanTA.MLNet.Data;
using QuanTA.MLNet.Engine;
using QuanTA.MLNet.Internals;

namespace QuanTA.MLNet;

public sealed partial class QuanTAFineTuneTransformer : ICanSaveModel
{
    internal const string LoaderSignature = "QuanTAFineTuneXf";
    const string ModelSignature = "QUANTAFT";
    // 0x00010002: the options may name a conversation column and carry a chat template (older readers would ignore them).
    // 0x00010003: the options record the base's quantization (BaseQuantization; older models load as None, which they were).
    const uint FormatVersion = 0x00010003;
    const uint OldestReadableVersion = 0x00010001;
    const string AdapterStream = "QuanTA.adapter.safetensors";

    static object VersionInfo() => MlNetInternals.VersionInfo(ModelSignature, FormatVersion, FormatVersion, OldestReadableVersion,
        LoaderSignature, typeof(QuanTAFineTuneTransformer).Assembly);

    static readonly ConditionalWeakTable<ComponentCatalog, string> BaseModelOverrides = new();

    /// <summary>Registers the loader in <paramref name="catalog"/> (per MLContext, idempotent) and, optionally, a base model folder
    /// that replaces the one recorded in models loaded through it.</summary>
    internal static void Register(ComponentCatalog catalog, string? baseModelPath)
    {
        MlNetInternals.RegisterLoader(catalog, typeof(QuanTAFineTuneTransformer), "QuanTA fine-tuned model", LoaderSignature,
            typeof(QuanTAFineTuneTransformer).GetMethod(nameof(Create), BindingFlags.NonPublic | BindingFlags.Static)!);
        if (baseModelPath is not null) BaseModelOverrides.AddOrUpdate(catalog, Path.GetFullPath(baseModelPath));
    }

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ThrowIfDisposed();
        MlNetInternals.SetVersionInfo(ctx, VersionInfo());
        var w = MlNetInternals.Writer(ctx);
        w.Write(JsonSerializer.Serialize(SavedOptions.From(_options)));
        w.Write(_base.Path);
        w.Write(_base.Fingerprint);
        w.Write(_labels is not null);
        _labels?.Write(w);
        byte[] state;
        lock (_lock) state = _model.SaveTrainedState();
        MlNetInternals.SaveBinaryStream(ctx, AdapterStream, bw => bw.Write(state));
    }

    /// <summary>The loader ML.NET calls from <c>mlContext.Model.Load</c> (registered by <see cref="QuanTACatalog.RegisterQuanTA"/>).</summary>
    static QuanTAFineTuneTransformer Create(IHostEnvironment env, object ctx)
    {
        MlNetInternals.CheckAtModel(ctx, VersionInfo());
        var r = MlNetInternals.Reader(ctx);
        var saved = JsonSerializer.Deserialize<SavedOptions>(r.ReadString())
            ?? throw new InvalidDataException("The saved QuanTA model has no options.");
        string basePath = r.ReadString(), fingerprint = r.ReadString();
        var labels = r.ReadBoolean() ? LabelValues.Read(r) : null;
        byte[]? state = null;
        if (!MlNetInternals.TryLoadBinaryStream(ctx, AdapterStream, br =>
            {
                using var ms = new MemoryStream();
                br.BaseStream.CopyTo(ms);
                state = ms.ToArray();
            }))
            throw new InvalidDataException($"The saved QuanTA model has no '{AdapterStream}' entry.");

        if (BaseModelOverrides.TryGetValue(env.ComponentCatalog, out var overridePath)) basePath = overridePath;
        var reference = CheckBaseModel(basePath, fingerprint);
        var options = saved.ToOptions();
        options.BaseModelPath = reference.Path;

        TorchRuntime.Initialize();
        var device = TorchRuntime.ResolveDevice(MlNetInternals.GpuDeviceId(env), MlNetInternals.FallbackToCpu(env));
        var model = FineTuneModel.Create(options, labels?.Count ?? 0, device, options.Seed ?? QuanTA.Core.Training.TrainerOptions.DefaultSeed, labels?.KeyNames);
        try
        {
            model.LoadTrainedState(state!);
            return new QuanTAFineTuneTransformer(env, model, options, labels, reference, []);
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or InvalidDataException or EndOfStreamException
                                  or FormatException or IndexOutOfRangeException or OverflowException)
        {
            model.Dispose();   // the adapter bytes of the file decode to something unusable (e.g. NaN weights from damaged bytes)
            throw new InvalidDataException($"The saved QuanTA adapter state ({state!.Length} bytes) is damaged: {e.Message}", e);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    static BaseModelReference CheckBaseModel(string path, string fingerprint)
    {
        if (!Directory.Exists(path))
            throw new DirectoryNotFoundException($"The base model folder '{path}' that this QuanTA model was fine-tuned from was not found. " +
                "A saved QuanTA model stores only the adapter, not the base weights: put the same base model there, or call " +
                "mlContext.RegisterQuanTA(baseModelPath: \"<folder>\") before mlContext.Model.Load.");
        var found = BaseModelReference.Compute(path);
        if (found != fingerprint)
            throw new InvalidDataException($"The base model in '{path}' is not the one this QuanTA model was fine-tuned from " +
                $"(fingerprint {fingerprint[..12]}… expected, {found[..12]}… found). The adapter only makes sense on its own base model.");
        return new BaseModelReference(path, found);
    }

    /// <summary>The options persisted with a model (everything that shapes the adapter and inference).</summary>
    sealed record SavedOptions(QuanTATask Task, string TextColumnName, string? SecondTextColumnName, string LabelColumnName,
        string TargetTextColumnName, string ScoreColumnName, string PredictedLabelColumnName, string GeneratedTextColumnName,
        AdapterMethod Adapter, int[]? AxisLayout, int AxisCount, int[][]? Pairs, int? TensorCount, int? Rank, string[] TargetModules, float Dropout, int LoRARank,
        float LoRAAlpha, int MaxSequenceLength, TruncationPolicy Truncation, int? Seed, int MaxNewTokens, bool Greedy,
        float Temperature, float TopP, string[] StopStrings, int InferenceBatchSize, ClassificationMode ClassificationMode,
        string? MessagesColumnName = null, string? ChatTemplate = null, Core.Quantization.BaseQuantization BaseQuantization = Core.Quantization.BaseQuantization.None,
        float RepetitionPenalty = 1f, float FrequencyPenalty = 0f, float PresencePenalty = 0f)
    {
        public static SavedOptions From(QuanTAFineTuneOptions o) => new(o.Task, o.TextColumnName, o.SecondTextColumnName, o.LabelColumnName,
            o.TargetTextColumnName, o.ScoreColumnName, o.PredictedLabelColumnName, o.GeneratedTextColumnName, o.Adapter, o.AxisLayout,
            o.AxisCount, o.Pairs?.Select(p => new[] { p.Item1, p.Item2 }).ToArray(), o.TensorCount, o.Rank, o.TargetModules, o.Dropout, o.LoRARank, o.LoRAAlpha,
            o.MaxSequenceLength, o.Truncation, o.Seed, o.MaxNewTokens, o.Greedy, o.Temperature, o.TopP, o.StopStrings,
            o.InferenceBatchSize, o.ClassificationMode, o.MessagesColumnName, o.ChatTemplate, o.BaseQuantization,
            o.RepetitionPenalty, o.FrequencyPenalty, o.PresencePenalty);

        public QuanTAFineTuneOptions ToOptions() => new()
        {
            Task = Task, TextColumnName = TextColumnName, SecondTextColumnName = SecondTextColumnName, LabelColumnName = LabelColumnName,
            TargetTextColumnName = TargetTextColumnName, ScoreColumnName = ScoreColumnName, PredictedLabelColumnName = PredictedLabelColumnName,
            GeneratedTextColumnName = GeneratedTextColumnName, Adapter = Adapter, AxisLayout = AxisLayout, AxisCount = AxisCount,
            Pairs = Pairs?.Select(p => (p[0], p[1])).ToArray(), TensorCount = TensorCount, Rank = Rank, TargetModules = TargetModules, Dropout = Dropout, LoRARank = LoRARank,
            LoRAAlpha = LoRAAlpha, MaxSequenceLength = MaxSequenceLength, Truncation = Truncation, Seed = Seed, MaxNewTokens = MaxNewTokens,
            Greedy = Greedy, Temperature = Temperature, TopP = TopP, StopStrings = StopStrings, InferenceBatchSize = InferenceBatchSize,
            ClassificationMode = ClassificationMode, MessagesColumnName = MessagesColumnName, ChatTemplate = ChatTemplate,
            BaseQuantization = BaseQuantization,
            RepetitionPenalty = RepetitionPenalty, FrequencyPenalty = FrequencyPenalty, PresencePenalty = PresencePenalty,
        };
    }
}
