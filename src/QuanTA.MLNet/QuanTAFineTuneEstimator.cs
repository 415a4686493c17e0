using QuanTA.Core.Distributed;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using QuanTA.Core.Runtime;
using QuanTA.Core.Training;
using QuanTA.MLNet.Data;
using QuanTA.MLNet.Engine;
using QuanTA.MLNet.Internals;

namespace QuanTA.MLNet;

/// <summary>
/// Fine-tunes a QuanTA (or LoRA) adapter on a frozen LLaMA-family base model for text classification or text generation.
/// Create it with <c>mlContext.Transforms.QuanTAFineTune(...)</c> or
/// <c>mlContext.MulticlassClassification.Trainers.QuanTAFineTune(...)</c>. <see cref="Fit"/> streams the data view in batches,
/// logs epoch/step/loss/learning rate/tokens-per-second through <c>mlContext.Log</c> and a progress channel, and returns a
/// <see cref="QuanTAFineTuneTransformer"/> with the adapter merged for inference.
/// </summary>
public sealed class QuanTAFineTuneEstimator : IEstimator<QuanTAFineTuneTransformer>
{
    readonly IHostEnvironment _env;
    readonly IHost _host;
    readonly QuanTAFineTuneOptions _options;

    /// <summary>Creates the estimator (the catalog methods are the usual way).</summary>
    public QuanTAFineTuneEstimator(MLContext mlContext, QuanTAFineTuneOptions options) : this((IHostEnvironment)mlContext, options) { }

    internal QuanTAFineTuneEstimator(IHostEnvironment env, QuanTAFineTuneOptions options)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _env = env;
        _host = env.Register(nameof(QuanTAFineTuneEstimator));
        _options = options.Clone();
        QuanTAFineTuneTransformer.Register(env.ComponentCatalog, null);   // so Model.Load works in this MLContext
    }

    /// <summary>The options (a copy).</summary>
    public QuanTAFineTuneOptions Options => _options.Clone();

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var o = _options;
        ColumnChecks.Text(inputSchema, o.InputColumnName, o.IsChat ? "conversation" : "text", ColumnChecks.InputProperty(o));
        if (o.SecondTextColumnName is not null) ColumnChecks.Text(inputSchema, o.SecondTextColumnName, "second text", nameof(QuanTAFineTuneOptions.SecondTextColumnName));
        var columns = inputSchema.ToDictionary(c => c.Name);
        if (o.Task == QuanTATask.TextClassification)
        {
            var label = ColumnChecks.KeyLabel(inputSchema, o.LabelColumnName);
            var keyValues = label.Annotations.Where(a => a.Name == AnnotationKinds.KeyValues).ToList();
            var text = TextDataViewType.Instance;
            var scoreAnn = new List<SchemaShape.Column>
            {
                MlNetInternals.Column(AnnotationKinds.SlotNames, SchemaShape.Column.VectorKind.Vector, text, false),
                MlNetInternals.Column(AnnotationKinds.ScoreColumnKind, SchemaShape.Column.VectorKind.Scalar, text, false),
                MlNetInternals.Column(AnnotationKinds.ScoreValueKind, SchemaShape.Column.VectorKind.Scalar, text, false),
            };
            if (keyValues.Count > 0)
                scoreAnn.Add(MlNetInternals.Column(AnnotationKinds.TrainingLabelValues, keyValues[0].Kind, keyValues[0].ItemType, false));
            columns[o.ScoreColumnName] = MlNetInternals.Column(o.ScoreColumnName, SchemaShape.Column.VectorKind.Vector,
                NumberDataViewType.Single, false, new SchemaShape(scoreAnn));
            columns[o.PredictedLabelColumnName] = MlNetInternals.Column(o.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar,
                NumberDataViewType.UInt32, true, new SchemaShape(keyValues));
        }
        else
        {
            if (!o.IsChat) ColumnChecks.Text(inputSchema, o.TargetTextColumnName, "target text", nameof(QuanTAFineTuneOptions.TargetTextColumnName));
            columns[o.GeneratedTextColumnName] = MlNetInternals.Column(o.GeneratedTextColumnName, SchemaShape.Column.VectorKind.Scalar,
                TextDataViewType.Instance, false);
        }
        return new SchemaShape(columns.Values);
    }

    /// <summary>Trains the adapter on <paramref name="input"/> and returns the transformer.</summary>
    public QuanTAFineTuneTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options.Clone();
        var train = new InputRowReader(input, o, withSupervision: true);   // checks columns, naming any missing/mistyped one
        LabelValues? labels = o.Task == QuanTATask.TextClassification
            ? LabelValues.From(ColumnChecks.KeyLabel(input.Schema, o.LabelColumnName)) : null;
        InputRowReader? validation = null;
        if (o.ValidationSet is not null)
        {
            validation = new InputRowReader(o.ValidationSet, o, withSupervision: true, role: $"validation ({nameof(QuanTAFineTuneOptions)}.{nameof(QuanTAFineTuneOptions.ValidationSet)})");
            if (labels is not null)
            {
                var vCount = ((KeyDataViewType)o.ValidationSet.Schema[o.LabelColumnName].Type).Count;
                if (vCount != (ulong)labels.Count)
                    throw new ArgumentException($"The validation set's label column '{o.LabelColumnName}' has {vCount} classes but the " +
                        $"training data has {labels.Count}; map both with the same MapValueToKey transformer.", nameof(o.ValidationSet));
                foreach (var _ in validation.Read()) { }   // every row has a known label: fail now, not after the first epoch's training
            }
        }
        var reference = BaseModelReference.Of(o.BaseModelPath);
        o.BaseModelPath = reference.Path;
        o.Seed ??= MlNetInternals.Seed(_env) ?? TrainerOptions.DefaultSeed;

        TorchRuntime.Initialize();
        // Data parallel: a communicator given in the options, or the launcher's environment (WORLD_SIZE > 1).
        var fromEnvironment = o.Communicator is null && ProcessGroupOptions.FromEnvironment().WorldSize > 1;
        using var ownedDist = fromEnvironment ? DistributedContext.Initialize() : null;
        var dist = ownedDist ?? (o.Communicator is { WorldSize: > 1 } comm ? DistributedContext.FromCommunicator(comm) : null);
        var device = ownedDist is not null ? ownedDist.Device
            : TorchRuntime.ResolveDevice(MlNetInternals.GpuDeviceId(_env), MlNetInternals.FallbackToCpu(_env));
        var model = FineTuneModel.Create(o, labels?.Count ?? 0, device, o.Seed.Value, labels?.KeyNames,
            m => { using var warn = _host.Start("QuanTA"); warn.Warning(MessageSensitivity.None, m); });
        try
        {
            var runner = new FineTuneRunner(model, o, _host, o.Seed.Value, reference.Fingerprint, dist);
            runner.Run(train, validation);
            if (o.LossCurvePngPath is not null)
                Plotting.LossCurvePlot.SavePng(o.LossCurvePngPath, runner.History, $"QuanTA fine-tuning ({o.Task}, {o.Adapter}, lr {o.LearningRate:G3})");
            var keep = o.Clone();
            keep.ValidationSet = null; keep.Progress = null; keep.CancellationToken = default; keep.Communicator = null;
            // A chosen template (a built-in name, a .jinja file, text) is saved as its text: the model then renders the
            // same way wherever it is loaded, whatever happens to the file.
            if (o.ChatTemplate is not null && o.IsChat) keep.ChatTemplate = model.Chat.Template.Text;
            return new QuanTAFineTuneTransformer(_env, model, keep, labels, reference, runner.StepLosses.ToArray())
            {
                ValidationLosses = runner.ValidationLosses.ToArray(),
            };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
