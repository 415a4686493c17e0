using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.AutoML;

/// <summary>One trial handed to an <see cref="ISweepTrialRunner"/>: the drawn parameters, the fine-tune options they map to
/// (epochs already set to the rung's resource) and the trainable-parameter count computed without training.</summary>
/// <param name="Id">Trial number.</param>
/// <param name="ConfigId">Configuration number.</param>
/// <param name="Rung">Successive-halving rung.</param>
/// <param name="Parameters">The drawn parameters.</param>
/// <param name="Options">Fine-tune options for this trial (a copy the runner may change).</param>
/// <param name="Count">Trainable / total parameters of the configuration.</param>
public sealed record SweepTrial(int Id, int ConfigId, int Rung, QuanTASweepParameters Parameters, QuanTAFineTuneOptions Options, ParameterCount Count);

/// <summary>Trains and scores one trial. The experiment catches anything it throws and records the trial as failed, so a
/// runner need not guard itself; it should honour the cancellation token (the time budget).</summary>
public interface ISweepTrialRunner
{
    /// <summary>Trains <paramref name="trial"/> and returns its metric on the validation data.</summary>
    double Run(SweepTrial trial, CancellationToken cancellationToken);
}

/// <summary>Built-in metrics of a sweep.</summary>
public enum SweepMetric
{
    /// <summary>Validation loss after the last epoch (lower is better); works for classification and generation.</summary>
    ValidationLoss,
    /// <summary>Macro-averaged accuracy on the validation data (classification; higher is better).</summary>
    MacroAccuracy,
    /// <summary>Micro-averaged accuracy on the validation data (classification; higher is better).</summary>
    MicroAccuracy,
    /// <summary>ML.NET's multiclass log-loss on the validation data (classification; lower is better).</summary>
    LogLoss,
}

/// <summary>The runner a sweep uses by default: fits <c>QuanTAFineTune</c> (after <c>MapValueToKey</c> of the label for
/// classification) on the training data and scores the validation data.</summary>
internal sealed class MlNetTrialRunner(MLContext ml, IDataView train, IDataView validation, SweepMetric metric,
    Func<ITransformer, IDataView, double>? customMetric) : ISweepTrialRunner
{
    ITransformer? _keyMap;

    /// <summary>Trainable parameters of the model the last <see cref="Run"/> fitted.</summary>
    public long? LastTrainableParameters { get; private set; }

    public double Run(SweepTrial trial, CancellationToken cancellationToken)
    {
        var o = trial.Options.Clone();
        o.CancellationToken = cancellationToken;
        o.Progress = null;
        o.LossCurvePngPath = null;
        bool classification = o.Task == QuanTATask.TextClassification;
        ITransformer keyMap = classification
            ? _keyMap ??= ml.Transforms.Conversion.MapValueToKey(o.LabelColumnName).Fit(train)
            : new TransformerChain<ITransformer>();
        var keyedValidation = keyMap.Transform(validation);
        o.ValidationSet = keyedValidation;
        using var model = new QuanTAFineTuneEstimator(ml, o).Fit(keyMap.Transform(train));
        LastTrainableParameters = model.TrainableParameterCount;
        if (customMetric is not null)
            return customMetric(new TransformerChain<ITransformer>(keyMap, model), validation);
        if (metric == SweepMetric.ValidationLoss)
            return model.ValidationLosses.Count > 0 ? model.ValidationLosses[^1]
                : throw new InvalidOperationException("Fit reported no validation loss.");
        if (!classification) throw new InvalidOperationException($"Metric {metric} needs a classification task; use ValidationLoss or a custom metric.");
        var scored = model.Transform(keyedValidation);
        var m = ml.MulticlassClassification.Evaluate(scored, o.LabelColumnName, o.ScoreColumnName, o.PredictedLabelColumnName);
        return metric switch
        {
            SweepMetric.MacroAccuracy => m.MacroAccuracy,
            SweepMetric.MicroAccuracy => m.MicroAccuracy,
            _ => m.LogLoss,
        };
    }
}
