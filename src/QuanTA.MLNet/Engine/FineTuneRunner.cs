using System.Diagnostics;
using Microsoft.ML.Runtime;
using QuanTA.MLNet.Data;
using QuanTA.MLNet.Internals;
using TorchSharp;

namespace QuanTA.MLNet.Engine;

/// <summary>
/// The training loop of <c>Fit</c>: streams micro-batches from the data view, AdamW over the trainable parameters only,
/// warm-up + linear/cosine/constant schedule, gradient accumulation, grad-norm clipping, a NaN guard, cancellation
/// (options token, and ML.NET's own CheckAlive), and progress through ML.NET channels and <see cref="IProgress{T}"/>.
/// </summary>
internal sealed class FineTuneRunner(FineTuneModel model, QuanTAFineTuneOptions options, IHost host, int seed)
{
    readonly List<double> _losses = [];

    /// <summary>Mean loss of each optimizer step.</summary>
    public IReadOnlyList<double> StepLosses => _losses;

    /// <summary>Validation loss after each epoch (when a validation set is given).</summary>
    public List<double> ValidationLosses { get; } = [];

    /// <summary>Learning rate at 0-based <paramref name="step"/> of <paramref name="total"/> steps with <paramref name="warmup"/> warm-up steps.</summary>
    public static double LearningRateAt(QuanTAFineTuneOptions o, int step, int total, int warmup)
    {
        if (step < warmup) return o.LearningRate * (step + 1) / warmup;
        double progress = total <= warmup ? 0 : (double)(step - warmup) / (total - warmup);   // 0 → 1
        return o.Schedule switch
        {
            LearningRateSchedule.Linear => o.LearningRate * (1 - progress),
            LearningRateSchedule.Cosine => o.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * progress)),
            _ => o.LearningRate,
        };
    }

    /// <summary>Runs all epochs over <paramref name="train"/>.</summary>
    public void Run(InputRowReader train, InputRowReader? validation)
    {
        var o = options;
        long rows = train.Count();
        if (rows == 0) throw new InvalidDataException("The training data has no rows.");
        int microPerEpoch = (int)((rows + o.BatchSize - 1) / o.BatchSize);
        int stepsPerEpoch = (microPerEpoch + o.GradientAccumulationSteps - 1) / o.GradientAccumulationSteps;
        int totalSteps = stepsPerEpoch * o.Epochs;
        int warmup = (int)Math.Ceiling(o.WarmupRatio * totalSteps);

        var parameters = model.TrainableParameters();
        if (parameters.Count == 0) throw new InvalidOperationException("No trainable parameters after adapter injection.");
        using var optimizer = torch.optim.AdamW(parameters, lr: o.LearningRate, weight_decay: o.WeightDecay);

        using var ch = host.Start("QuanTA fine-tuning");
        using var pch = host.StartProgressChannel("QuanTA fine-tuning");
        int epoch = 0, step = 0;
        double lastLoss = double.NaN, lastLr = 0, lastTps = 0;
        pch.SetHeader(new ProgressHeader(["Loss", "Learning rate", "Tokens/s"], ["Epochs", "Steps"]), e =>
        {
            e.SetProgress(0, epoch, o.Epochs);
            e.SetProgress(1, step, totalSteps);
            e.SetMetric(0, lastLoss); e.SetMetric(1, lastLr); e.SetMetric(2, lastTps);
        });
        ch.Info(MessageSensitivity.None, $"QuanTA fine-tuning: {o.Task}, {o.Adapter} on {model.Injection.AdaptedModules.Count} modules, " +
            $"{model.Injection.TrainableParameters:N0} trainable of {model.Injection.TotalParameters:N0} parameters; {rows} rows, " +
            $"{o.Epochs} epochs × {stepsPerEpoch} steps (batch {o.BatchSize} × {o.GradientAccumulationSteps}), device {model.Device}.");

        var rand = new Random(seed);
        for (epoch = 0; epoch < o.Epochs; epoch++)
        {
            model.SetTraining(true);
            int micro = 0, truncated = 0;
            double groupLoss = 0; long groupTokens = 0;
            var clock = Stopwatch.StartNew();
            optimizer.zero_grad();
            foreach (var batch in train.Read(rand).Chunk(o.BatchSize))
            {
                CheckCancel();
                var encoded = batch.Select(r => Encode(r, ref truncated)).ToList();
                int groupStart = micro / o.GradientAccumulationSteps * o.GradientAccumulationSteps;
                int groupSize = Math.Min(o.GradientAccumulationSteps, microPerEpoch - groupStart);
                using (var scope = torch.NewDisposeScope())
                {
                    var loss = model.Task == QuanTATask.TextClassification
                        ? model.ClassificationLoss(encoded, batch.Select(r => r.Label).ToList())
                        : model.LanguageModelLoss(encoded);
                    double value = loss.item<float>();
                    if (!double.IsFinite(value))
                        throw new InvalidOperationException($"The training loss became {value} at epoch {epoch}, step {step + 1}. " +
                            $"Lower the learning rate (now {o.LearningRate}) or check the data.");
                    (loss / groupSize).backward();
                    groupLoss += value / groupSize;
                }
                groupTokens += encoded.Sum(e => e.Ids.Length);
                micro++;
                if (micro % o.GradientAccumulationSteps != 0 && micro != microPerEpoch) continue;

                double lr = LearningRateAt(o, step, totalSteps, warmup);
                foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                if (o.MaxGradNorm > 0) torch.nn.utils.clip_grad_norm_(parameters, o.MaxGradNorm);
                optimizer.step();
                optimizer.zero_grad();
                step++;
                double secs = Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                (lastLoss, lastLr, lastTps) = (groupLoss, lr, groupTokens / secs);
                _losses.Add(groupLoss);
                ch.Info(MessageSensitivity.None, $"epoch {epoch + 1}/{o.Epochs} step {step}/{totalSteps} loss {groupLoss:F4} lr {lr:G3} tokens/s {lastTps:F0}");
                o.Progress?.Report(new QuanTAProgress(epoch, step, totalSteps, groupLoss, lr, lastTps));
                groupLoss = 0; groupTokens = 0; clock.Restart();
                pch.Checkpoint(lastLoss, lastLr, lastTps);
            }
            if (micro != microPerEpoch)
                throw new InvalidOperationException($"The training data changed during Fit: counted {rows} rows but epoch {epoch + 1} read " +
                    $"{micro} batches instead of {microPerEpoch}.");
            if (truncated > 0)
                ch.Warning(MessageSensitivity.None, $"{truncated} rows were longer than MaxSequenceLength = {o.MaxSequenceLength} tokens " +
                    "and were truncated (set Truncation = TruncationPolicy.Error to fail instead).");
            if (validation is not null)
            {
                double v = Evaluate(validation);
                ValidationLosses.Add(v);
                ch.Info(MessageSensitivity.None, $"epoch {epoch + 1}/{o.Epochs} validation loss {v:F4}");
                o.Progress?.Report(new QuanTAProgress(epoch, step, totalSteps, lastLoss, lastLr, lastTps, v));
            }
        }
        model.SetTraining(false);
    }

    EncodedRow Encode(InputRow r, ref int truncated)
    {
        var e = model.Task == QuanTATask.TextClassification
            ? model.EncodeClassification(r.Text, r.SecondText)
            : model.EncodeGeneration(r.Text, r.Target);
        if (e.Truncated)
        {
            if (options.Truncation == TruncationPolicy.Error)
                throw new InvalidDataException($"Row {r.Row} is longer than MaxSequenceLength = {options.MaxSequenceLength} tokens " +
                    "(Truncation = Error). Raise MaxSequenceLength or shorten the text.");
            truncated++;
        }
        return e;
    }

    /// <summary>Mean loss over a data view (no gradient, eval mode).</summary>
    public double Evaluate(InputRowReader data)
    {
        model.SetTraining(false);
        double sum = 0; long n = 0;
        int truncated = 0;
        foreach (var batch in data.Read().Chunk(options.BatchSize))
        {
            CheckCancel();
            var encoded = batch.Select(r => Encode(r, ref truncated)).ToList();
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            var loss = model.Task == QuanTATask.TextClassification
                ? model.ClassificationLoss(encoded, batch.Select(r => r.Label).ToList())
                : model.LanguageModelLoss(encoded);
            sum += loss.item<float>() * batch.Length; n += batch.Length;
        }
        return n == 0 ? double.NaN : sum / n;
    }

    void CheckCancel()
    {
        options.CancellationToken.ThrowIfCancellationRequested();
        MlNetInternals.CheckAlive(host);
    }
}
