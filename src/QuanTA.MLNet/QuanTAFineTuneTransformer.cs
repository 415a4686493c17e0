using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using QuanTA.MLNet.Data;
using QuanTA.MLNet.Engine;

namespace QuanTA.MLNet;

/// <summary>
/// A fine-tuned model inside an ML.NET pipeline (made by <see cref="QuanTAFineTuneEstimator"/>). Classification adds
/// <c>Score</c> (softmax probabilities, with the annotations ML.NET's evaluators read) and <c>PredictedLabel</c> (key, with the
/// label's key values, so <c>MapKeyToValue</c> works); generation adds a generated-text column. <see cref="Transform"/> is lazy
/// and batched; <c>CreatePredictionEngine</c> works row by row. Adapters are merged into the base weights for inference.
/// Saved by <c>mlContext.Model.Save</c> (adapter tensors, options, label values and a fingerprint of the base model, not the
/// base weights). Dispose it to free the native tensors.
/// </summary>
public sealed partial class QuanTAFineTuneTransformer : ITransformer, IDisposable
{
    readonly IHost _host;
    readonly FineTuneModel _model;
    readonly QuanTAFineTuneOptions _options;
    readonly LabelValues? _labels;
    readonly BaseModelReference _base;
    readonly object _lock = new();
    bool _disposed;

    internal QuanTAFineTuneTransformer(IHostEnvironment env, FineTuneModel model, QuanTAFineTuneOptions options, LabelValues? labels,
        BaseModelReference baseModel, IReadOnlyList<double> trainingLosses)
    {
        _host = env.Register(nameof(QuanTAFineTuneTransformer));
        _model = model; _options = options; _labels = labels; _base = baseModel;
        TrainingLosses = trainingLosses;
        _model.Merge();   // zero inference overhead
    }

    /// <summary>
    /// The QuanTA step of a fitted or loaded model: <paramref name="model"/> itself, or the last QuanTA transformer of its chain
    /// (searching nested chains, e.g. a pipeline appended to a pipeline); null when there is none (not a QuanTA model).
    /// </summary>
    /// <param name="model">A transformer or transformer chain, e.g. from <c>estimator.Fit</c> or <c>mlContext.Model.Load</c>.</param>
    public static QuanTAFineTuneTransformer? FindIn(ITransformer model) => model switch
    {
        QuanTAFineTuneTransformer q => q,
        IEnumerable<ITransformer> chain => chain.Select(FindIn).LastOrDefault(q => q is not null),
        _ => null,
    };

    /// <summary>The torch-side model, for <c>QuanTAChatClient</c> (use under <see cref="SyncRoot"/>).</summary>
    internal FineTuneModel Model { get { ThrowIfDisposed(); return _model; } }

    /// <summary>The lock every use of the model takes (inference, perplexity, export, the chat client).</summary>
    internal object SyncRoot => _lock;

    /// <summary>The options the model was trained with (a copy).</summary>
    public QuanTAFineTuneOptions Options => _options.Clone();

    /// <summary>Mean training loss of every optimizer step of <c>Fit</c> (empty after loading).</summary>
    public IReadOnlyList<double> TrainingLosses { get; }

    /// <summary>Validation loss after each epoch, when a validation set was given.</summary>
    public IReadOnlyList<double> ValidationLosses { get; internal init; } = [];

    /// <summary>Class names in key order (classification), e.g. for display.</summary>
    public IReadOnlyList<string> ClassNames => _labels?.Names ?? [];

    /// <summary>Trainable parameters of the adapter (+ head).</summary>
    public long TrainableParameterCount => _model.Injection.TrainableParameters;

    /// <summary>Modules that carry an adapter.</summary>
    public IReadOnlyList<string> AdaptedModules => _model.Injection.AdaptedModules;

    /// <summary>True while adapters are folded into the weights (the default for inference).</summary>
    public bool IsMerged => _model.IsMerged;

    /// <summary>Folds (true) or unfolds (false) the adapters; outputs are the same either way up to float rounding.</summary>
    public void SetMerged(bool merged)
    {
        lock (_lock) { if (merged) _model.Merge(); else _model.Unmerge(); }
    }

    /// <summary>Always true: <c>CreatePredictionEngine</c> works.</summary>
    public bool IsRowToRowMapper => true;

    // ---------------------------------------------------------------- schema

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        CheckInput(inputSchema);
        var b = new DataViewSchema.Builder();
        b.AddColumns(inputSchema);
        if (_options.Task == QuanTATask.TextClassification)
        {
            var labels = _labels!;
            var scoreAnn = new DataViewSchema.Annotations.Builder();
            labels.AddScoreAnnotations(scoreAnn);
            b.AddColumn(_options.ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, labels.Count), scoreAnn.ToAnnotations());
            var keyAnn = new DataViewSchema.Annotations.Builder();
            labels.AddKeyValues(keyAnn);
            b.AddColumn(_options.PredictedLabelColumnName, new KeyDataViewType(typeof(uint), labels.Count), keyAnn.ToAnnotations());
        }
        else b.AddColumn(_options.GeneratedTextColumnName, TextDataViewType.Instance);
        return b.ToSchema();
    }

    internal void CheckInput(DataViewSchema schema)
    {
        ColumnChecks.Text(schema, _options.InputColumnName, _options.IsChat ? "conversation" : "text", ColumnChecks.InputProperty(_options));
        if (_options.SecondTextColumnName is not null) ColumnChecks.Text(schema, _options.SecondTextColumnName, "second text", nameof(QuanTAFineTuneOptions.SecondTextColumnName));
    }

    /// <summary>Names of the input columns the outputs are computed from.</summary>
    internal IEnumerable<string> InputColumnNames =>
        _options.SecondTextColumnName is null ? [_options.InputColumnName] : [_options.InputColumnName, _options.SecondTextColumnName];

    /// <summary>The task.</summary>
    internal QuanTATask Task => _options.Task;
    internal int InferenceBatchSize => _options.InferenceBatchSize;
    internal string[] OutputColumnNames => _options.Task == QuanTATask.TextClassification
        ? [_options.ScoreColumnName, _options.PredictedLabelColumnName] : [_options.GeneratedTextColumnName];

    // ---------------------------------------------------------------- inference

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ThrowIfDisposed();
        return new QuanTADataView(this, input);
    }

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ThrowIfDisposed();
        return new QuanTARowMapper(this, inputSchema);
    }

    /// <summary>Outputs for a batch of rows: class probabilities (classification) or generated texts (generation).</summary>
    internal (float[][]? Scores, string[]? Texts) Predict(IReadOnlyList<(string Text, string? Second)> rows)
    {
        ThrowIfDisposed();
        var encoded = new List<EncodedRow>(rows.Count);
        int truncated = 0;
        foreach (var (text, second) in rows)
        {
            if (string.IsNullOrWhiteSpace(text))
                throw new InvalidDataException($"The {(_options.IsChat ? "conversation" : "text")} column '{_options.InputColumnName}' is empty; every row needs text.");
            EncodedRow e;
            try { e = _options.Task == QuanTATask.TextClassification ? _model.EncodeClassification(text, second) : _model.EncodePrompt(text); }
            catch (Exception ex) when (_options.IsChat && ex is InvalidDataException or FormatException or QuanTA.Core.Chat.ChatTemplateException)
            {
                throw new InvalidDataException($"A row of the conversation column '{_options.InputColumnName}': {ex.Message}", ex);
            }
            if (e.Truncated)
            {
                if (_options.Truncation == TruncationPolicy.Error)
                    throw new InvalidDataException($"A row of '{_options.InputColumnName}' is longer than MaxSequenceLength = " +
                        $"{_options.MaxSequenceLength} tokens (Truncation = Error).");
                truncated++;
            }
            encoded.Add(e);
        }
        if (truncated > 0)
        {
            using var ch = _host.Start("QuanTA inference");
            ch.Warning(MessageSensitivity.None, $"{truncated} rows were longer than MaxSequenceLength = {_options.MaxSequenceLength} tokens and were truncated.");
        }
        lock (_lock)
        {
            if (_options.Task == QuanTATask.TextClassification) return (_model.ClassProbabilities(encoded), null);
            var settings = GenerationSettingsFor(_options);
            return (null, _model.Generate(encoded, settings));
        }
    }

    internal static GenerationSettings GenerationSettingsFor(QuanTAFineTuneOptions o) =>
        new(o.MaxNewTokens, o.Greedy, o.Temperature, o.TopP, o.StopStrings ?? [], o.Seed ?? QuanTA.Core.Training.TrainerOptions.DefaultSeed,
            o.RepetitionPenalty, o.FrequencyPenalty, o.PresencePenalty);

    /// <summary>
    /// Streams the continuation of a plain <paramref name="prompt"/> (no chat template; the tokenizer adds bos as in training)
    /// as text pieces while it is decoded; <paramref name="done"/> receives the number of generated tokens and why generation
    /// ended. Runs under the model's lock: other inference on this transformer waits until the enumeration ends.
    /// For conversations use <c>QuanTAChatClient</c>.
    /// </summary>
    public IEnumerable<string> StreamGeneration(string prompt, QuanTA.Core.Generation.GenerationOptions options,
        Action<int, QuanTA.Core.Generation.GenerationFinishReason>? done = null, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(options);
        if (_options.Task != QuanTATask.TextGeneration) throw new InvalidOperationException("StreamGeneration needs a text-generation model.");
        if (string.IsNullOrEmpty(prompt)) throw new ArgumentException("The prompt is empty.", nameof(prompt));
        var ids = _model.EncodeGeneration(prompt, null).Ids.Select(i => (long)i).ToArray();
        var o = options with { EosTokenIds = options.EosTokenIds ?? _model.StopTokenIds };
        var generator = _model.CreateGenerator();
        // Decoding holds the model's lock on a worker thread, not on the caller's: the caller may await between pieces.
        return LockedGeneration.RunAsync(_lock, token => generator.Stream(ids, o, token),
            () => done?.Invoke(generator.LastTokenCount, generator.LastFinishReason), () => _disposed, cancellationToken)
            .ToBlockingEnumerable(cancellationToken);
    }

    /// <summary>Perplexity of the target column given the prompt (loss on target tokens only), over a data view.</summary>
    public double Perplexity(IDataView data)
    {
        ThrowIfDisposed();
        if (_options.Task != QuanTATask.TextGeneration) throw new InvalidOperationException("Perplexity needs a text-generation model.");
        var reader = new InputRowReader(data, _options, withSupervision: true, role: "evaluated");
        double nll = 0; long tokens = 0;
        foreach (var batch in reader.Read().Chunk(_options.InferenceBatchSize))
        {
            var encoded = batch.Select(r => _model.EncodeTraining(r.Text, null, -1, r.Target)).ToList();
            lock (_lock)
            {
                var (n, t) = _model.TargetNll(encoded);
                nll += n; tokens += t;
            }
        }
        if (tokens == 0) throw new InvalidDataException("No target tokens to compute perplexity on.");
        return Math.Exp(nll / tokens);
    }

    /// <summary>Writes the adapter (and head) as a plain safetensors file plus a JSON description next to it, usable without ML.NET.</summary>
    public void ExportAdapter(string path)
    {
        ThrowIfDisposed();
        lock (_lock)
        {
            bool merged = _model.IsMerged;
            _model.Unmerge();
            try { CoreBackend.ExportAdapter(_model.Module, path); }
            finally { if (merged) _model.Merge(); }
        }
    }

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>True once disposed.</summary>
    internal bool IsDisposed => _disposed;

    /// <inheritdoc/>
    /// <remarks>Waits for a running inference or chat request on this model to finish first.</remarks>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _model.Dispose();
        }
    }
}
