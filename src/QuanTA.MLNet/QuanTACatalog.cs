using Microsoft.ML;
using QuanTA.MLNet.Internals;

namespace QuanTA.MLNet;

/// <summary>ML.NET catalog entry points for QuanTA fine-tuning.</summary>
public static class QuanTACatalog
{
    /// <summary>
    /// Fine-tunes a QuanTA (or LoRA) adapter on a frozen LLaMA-family model: text classification (key-typed label →
    /// <c>Score</c>, <c>PredictedLabel</c>) or text generation (prompt → target, adds a generated-text column). Also registers the
    /// model loader in this MLContext so <c>mlContext.Model.Load</c> works.
    /// </summary>
    public static QuanTAFineTuneEstimator QuanTAFineTune(this TransformsCatalog catalog, QuanTAFineTuneOptions options) =>
        new(MlNetInternals.GetEnvironment(catalog), options);

    /// <summary>Fine-tunes with the most common settings; see <see cref="QuanTAFineTuneOptions"/> for every option and its default.
    /// A parameter left null takes the default of a fresh <see cref="QuanTAFineTuneOptions"/> (defaults live there only).</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="baseModelPath">Hugging Face model folder (…ForSequenceClassification for classification).</param>
    /// <param name="task">Classification or generation (<see cref="QuanTAFineTuneOptions.Task"/>).</param>
    /// <param name="textColumnName">Input text, the prompt for generation (<see cref="QuanTAFineTuneOptions.TextColumnName"/>).</param>
    /// <param name="labelColumnName">Key-typed label (classification: <see cref="QuanTAFineTuneOptions.LabelColumnName"/>) or
    /// target text (generation: <see cref="QuanTAFineTuneOptions.TargetTextColumnName"/>) column.</param>
    /// <param name="adapter">QuanTA or LoRA (<see cref="QuanTAFineTuneOptions.Adapter"/>).</param>
    /// <param name="epochs">Passes over the data (<see cref="QuanTAFineTuneOptions.Epochs"/>).</param>
    /// <param name="batchSize">Rows per micro-batch (<see cref="QuanTAFineTuneOptions.BatchSize"/>).</param>
    /// <param name="learningRate">Peak AdamW learning rate (<see cref="QuanTAFineTuneOptions.LearningRate"/>).</param>
    /// <param name="validationSet">Optional validation data.</param>
    public static QuanTAFineTuneEstimator QuanTAFineTune(this TransformsCatalog catalog, string baseModelPath,
        QuanTATask? task = null, string? textColumnName = null, string? labelColumnName = null,
        AdapterMethod? adapter = null, int? epochs = null, int? batchSize = null, double? learningRate = null,
        IDataView? validationSet = null)
    {
        var o = new QuanTAFineTuneOptions { BaseModelPath = baseModelPath, ValidationSet = validationSet };
        o.Task = task ?? o.Task;
        o.TextColumnName = textColumnName ?? o.TextColumnName;
        SetTraining(o, adapter, epochs, batchSize, learningRate);
        if (labelColumnName is not null)
        {
            if (o.Task == QuanTATask.TextClassification) o.LabelColumnName = labelColumnName;
            else o.TargetTextColumnName = labelColumnName;
        }
        return catalog.QuanTAFineTune(o);
    }

    /// <summary>Text classification by QuanTA fine-tuning, where ML.NET users look for multiclass trainers. The label must be a
    /// key (<c>MapValueToKey</c> upstream); outputs <c>Score</c> and <c>PredictedLabel</c>.</summary>
    public static QuanTAFineTuneEstimator QuanTAFineTune(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        QuanTAFineTuneOptions options)
    {
        if (options.Task != QuanTATask.TextClassification)
            throw new ArgumentException("The multiclass classification catalog fine-tunes for TextClassification; use " +
                "mlContext.Transforms.QuanTAFineTune for TextGeneration.", nameof(options));
        return new(MlNetInternals.GetEnvironment(catalog), options);
    }

    /// <summary>Text classification by QuanTA fine-tuning with the most common settings. A parameter left null takes the
    /// default of a fresh <see cref="QuanTAFineTuneOptions"/> (the field of the same name).</summary>
    public static QuanTAFineTuneEstimator QuanTAFineTune(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string baseModelPath, string? labelColumnName = null, string? textColumnName = null, string? secondTextColumnName = null,
        string? scoreColumnName = null, string? predictedLabelColumnName = null, AdapterMethod? adapter = null,
        int? epochs = null, int? batchSize = null, double? learningRate = null, IDataView? validationSet = null)
    {
        var o = new QuanTAFineTuneOptions
        {
            BaseModelPath = baseModelPath, SecondTextColumnName = secondTextColumnName, ValidationSet = validationSet,
        };
        o.LabelColumnName = labelColumnName ?? o.LabelColumnName;
        o.TextColumnName = textColumnName ?? o.TextColumnName;
        o.ScoreColumnName = scoreColumnName ?? o.ScoreColumnName;
        o.PredictedLabelColumnName = predictedLabelColumnName ?? o.PredictedLabelColumnName;
        SetTraining(o, adapter, epochs, batchSize, learningRate);
        return catalog.QuanTAFineTune(o);
    }

    /// <summary>The training settings both simple overloads take; a null keeps the options' default.</summary>
    static void SetTraining(QuanTAFineTuneOptions o, AdapterMethod? adapter, int? epochs, int? batchSize, double? learningRate)
    {
        o.Adapter = adapter ?? o.Adapter;
        o.Epochs = epochs ?? o.Epochs;
        o.BatchSize = batchSize ?? o.BatchSize;
        o.LearningRate = learningRate ?? o.LearningRate;
    }

    /// <summary>
    /// Registers the QuanTA model loader in this MLContext, needed once before <c>mlContext.Model.Load</c> of a saved QuanTA model in
    /// a fresh MLContext (the catalog methods do it automatically). <paramref name="baseModelPath"/> optionally replaces the base
    /// model folder recorded in the saved model (e.g. after moving it); its fingerprint is still checked.
    /// </summary>
    public static MLContext RegisterQuanTA(this MLContext mlContext, string? baseModelPath = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        QuanTAFineTuneTransformer.Register(mlContext.ComponentCatalog, baseModelPath);
        return mlContext;
    }

    /// <summary><c>RegisterQuanTA()</c> then <c>mlContext.Model.Load(path, out inputSchema)</c>; a QuanTA load failure (base model
    /// missing or different, …) is rethrown as itself rather than wrapped in ML.NET's reflection exceptions. A file that is not
    /// a loadable model (truncated, damaged bytes, not a zip, another kind of zip) throws <see cref="InvalidDataException"/>
    /// saying it is corrupt or not a QuanTA model, with its path and size; a missing file <see cref="FileNotFoundException"/>.</summary>
    public static ITransformer LoadWithQuanTA(this ModelOperationsCatalog model, MLContext mlContext, string path, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        mlContext.RegisterQuanTA();
        if (!File.Exists(path)) throw new FileNotFoundException($"The model file '{path}' was not found.", path);
        try { ModelZipIntegrity.Verify(path); }   // ML.NET would load a damaged tensor entry as different weights
        catch (Exception e) when (e is InvalidDataException or IOException) { throw CorruptModel(path, e); }
        try { return model.Load(path, out inputSchema); }
        catch (Exception e) when (Innermost(e) is { } inner && IsLoadEnvironmentError(e, inner))
        {
            // The base model folder the file records is missing or different: same type, with the model file named too.
            if (inner is DirectoryNotFoundException missing) throw new DirectoryNotFoundException($"Loading '{path}': {missing.Message}", missing);
            if (inner is InvalidDataException other) throw new InvalidDataException($"Loading '{path}': {other.Message}", other);
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(inner).Throw();
            throw;
        }
        catch (Exception e) when (e is not (OutOfMemoryException or OperationCanceledException))
        {
            throw CorruptModel(path, e);
        }
    }

    /// <summary>A load failure that is not about the file's bytes: one the QuanTA loader raised (base model folder missing or
    /// different, device errors, …) unless it is a decoding error of the saved bytes, or an ML.NET without the internals QuanTA
    /// needs, a cancelled or out-of-memory load.</summary>
    static bool IsLoadEnvironmentError(Exception e, Exception inner) => !SavedStateDamaged(e) && (
        inner is MlNetCompatibilityException or OutOfMemoryException or OperationCanceledException ||
        (inner.StackTrace?.Contains(typeof(QuanTAFineTuneTransformer).FullName!, StringComparison.Ordinal) == true &&
         (inner.Message.Contains("base model", StringComparison.Ordinal) ||
          inner is not (InvalidDataException or EndOfStreamException or FormatException or System.Text.Json.JsonException
                        or ArgumentOutOfRangeException or IndexOutOfRangeException or OverflowException or NullReferenceException))));

    /// <summary>True when the QuanTA loader reported the saved adapter bytes themselves as unusable ("The saved QuanTA …").</summary>
    static bool SavedStateDamaged(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is InvalidDataException && e.Message.StartsWith("The saved QuanTA", StringComparison.Ordinal)) return true;
        return false;
    }

    /// <summary>"'path' (N bytes) is corrupt or not a QuanTA model …", keeping ML.NET's innermost reason.</summary>
    internal static InvalidDataException CorruptModel(string path, Exception e)
    {
        long size = new FileInfo(path).Length;
        return new InvalidDataException($"The model file '{path}' ({size.ToString(System.Globalization.CultureInfo.InvariantCulture)} bytes) " +
            $"is corrupt or not a QuanTA model: it could not be loaded ({Innermost(e).Message.TrimEnd('.')}). Use a model .zip written by " +
            "quanta finetune or mlContext.Model.Save (a truncated or damaged copy cannot be repaired: copy or train it again).", e);
    }

    /// <summary>
    /// <c>mlContext.Model.Save</c> without the risk of losing the previous model: the zip is written to a temporary file in the
    /// same folder, flushed to disk and renamed over <paramref name="path"/>. If saving fails (disk full, no permission, …) the
    /// file at <paramref name="path"/> is left as it was and no partial file remains.
    /// </summary>
    public static void SaveAtomically(this ModelOperationsCatalog model, ITransformer transformer, DataViewSchema inputSchema, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        QuanTA.Core.Runtime.AtomicFile.Write(path, s => model.Save(transformer, inputSchema, s));
    }

    static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e;
    }

    /// <summary>Checks that the ML.NET internals QuanTA.MLNet uses for Model.Save/Load exist in the installed ML.NET; throws
    /// <see cref="MlNetCompatibilityException"/> naming the missing member otherwise.</summary>
    public static void CheckMlNetCompatibility() => MlNetInternals.SelfTest();
}
