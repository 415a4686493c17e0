using Microsoft.ML.Runtime;
using QuanTA.Core.Training;
using QuanTA.MLNet.Data;
using QuanTA.MLNet.Internals;
using QuanTA.Core.Adapters;
using QuanTA.Core.Distributed;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.MLNet.Engine;

/// <summary>
/// Runs <c>Fit</c>'s training through QuanTA.Core's <see cref="Trainer{TBatch}"/> (AdamW over the trainable tensors, schedule,
/// accumulation, clipping, NaN guard): streams micro-batches of rows from the data view (one cursor pass per epoch, shuffled
/// per epoch with a seed when the view can shuffle), and reports through ML.NET channels, a progress channel and
/// <see cref="IProgress{T}"/>. Cancellation: the options' token and ML.NET's own CheckAlive. Checkpoints, resume, validation
/// metric and early stopping come from the options; checkpoints carry a run fingerprint (base-model fingerprint + adapter
/// options + parameter layout), so a resume against another base model or adapter is refused before anything is loaded.
/// </summary>
internal sealed class FineTuneRunner(FineTuneModel model, QuanTAFineTuneOptions options, IHost host, int seed, string baseModelFingerprint, DistributedContext? dist = null)
{
    /// <summary>The trainer's history (per-step loss, learning rate, validations).</summary>
    public TrainingHistory History { get; private set; } = new();

    /// <summary>Mean loss of each optimizer step.</summary>
    public IReadOnlyList<double> StepLosses => History.Steps.Select(s => s.Loss).ToArray();

    /// <summary>Validation loss after each epoch (when a validation set is given).</summary>
    public IReadOnlyList<double> ValidationLosses => History.Validations.Select(v => v.Metric).ToArray();

    /// <summary>Runs all epochs over <paramref name="train"/>.</summary>
    public void Run(InputRowReader train, InputRowReader? validation)
    {
        var o = options;
        long rows = train.Count();
        if (rows == 0) throw new InvalidDataException("The training data has no rows.");
        // Data parallel: this rank's rows are every W-th row of the epoch's order, the remainder dropped (equal step counts).
        int world = dist?.WorldSize ?? 1, rank = dist?.Rank ?? 0;
        long rowsPerRank = rows / world;
        if (rowsPerRank == 0) throw new InvalidDataException($"The training data has {rows} rows, fewer than the {world} data-parallel ranks.");
        long batchesPerEpoch = (rowsPerRank + o.BatchSize - 1) / o.BatchSize;
        var trainerOptions = new TrainerOptions
        {
            Epochs = o.Epochs, BatchSize = o.BatchSize, GradientAccumulationSteps = o.GradientAccumulationSteps,
            LearningRate = o.LearningRate, Schedule = o.Schedule, WarmupRatio = o.WarmupRatio, WeightDecay = o.WeightDecay,
            MaxGradNorm = o.MaxGradNorm, Seed = seed, LogEveryNSteps = 1,
            GreaterIsBetter = o.ValidationMetric == ValidationMetric.Accuracy, RestoreBestAtEnd = o.RestoreBestAtEnd,
            CheckpointDir = o.CheckpointDirectory is null ? null : Path.GetFullPath(o.CheckpointDirectory),   // rank 0 only (below)
            CheckpointEverySteps = o.CheckpointEverySteps, KeepLastCheckpoints = o.KeepLastCheckpoints,
            EarlyStoppingPatience = o.EarlyStoppingPatience, EarlyStoppingThreshold = o.EarlyStoppingThreshold,
            ValidateEverySteps = o.ValidateEverySteps,
        };
        // The QuanTA training path: decided here, once per fit, and logged with its reason.
        var computeDType = model.Module.parameters().First(p => !p.requires_grad).dtype;   // the frozen base's
        var path = ResolveTrainingPath(computeDType, out var pathNote);
        using var bank = path is { UsesBank: true } ? QuanTABank.Create(model.Module, path.Path) : null;
        trainerOptions.RunFingerprint = RunFingerprints.Make(baseModelFingerprint, o, fused: bank is not null, worldSize: world);
        trainerOptions.OutOfMemoryHint = OutOfMemoryHint(o, path?.Path);
        if (o.ResumeFromCheckpoint is not null)
            trainerOptions.ResumeFrom = RunFingerprints.ResolveResume(o.ResumeFromCheckpoint, trainerOptions.CheckpointDir, trainerOptions.RunFingerprint, seed,
                m => { using var c = host.Start("QuanTA resume"); c.Warning(MessageSensitivity.None, m); });
        if (rank != 0) trainerOptions.CheckpointDir = null;   // only rank 0 writes; the others resume from what it wrote
        using var trainer = bank is null
            ? Trainer<InputRow[]>.ForModule(model.Module, trainerOptions)
            : new Trainer<InputRow[]>(bank.OptimizerParameters(model.Module), trainerOptions, model.Module, AdapterBuffers(model.Module));
        using var gradientSync = world > 1 ? dist!.CreateGradientSync(trainer.Parameters.Select(p => p.parameter)) : null;
        // before each optimizer step, in this order: stacked-recompute's check that every chunk's gradient is in, then the
        // data-parallel average of the adapter gradients
        Action? beforeStep = null;
        if (bank is not null) beforeStep += bank.CheckBackwardComplete;
        if (gradientSync is not null) beforeStep += gradientSync.Synchronize;
        trainer.BeforeOptimizerStep = beforeStep;
        if (gradientSync is not null)
        {
            if (trainerOptions.ResumeFrom is null) gradientSync.BroadcastParameters();   // every rank starts from rank 0's adapter
            trainer.ReduceStepStatistics = dist!.Communicator.MeanAndSum;           // log the global loss and tokens
        }
        using var ch = host.Start("QuanTA fine-tuning");
        if (pathNote is not null) ch.Info(MessageSensitivity.None, pathNote);
        int checkpointed = Core.Models.Llama.LlamaModel.SetGradientCheckpointing(model.Module, o.GradientCheckpointing);
        if (o.GradientCheckpointing)
            ch.Info(MessageSensitivity.None, $"Gradient checkpointing: {checkpointed} decoder layers keep only their input and run again in the backward pass.");
        using var pch = host.StartProgressChannel("QuanTA fine-tuning");
        TrainingProgress? last = null;
        pch.SetHeader(new ProgressHeader(["Loss", "Learning rate", "Tokens/s"], ["Epochs", "Steps"]), e =>
        {
            if (last is null) return;
            e.SetProgress(0, last.Epoch, o.Epochs);
            e.SetProgress(1, last.Step, last.TotalSteps);
            e.SetMetric(0, last.Loss); e.SetMetric(1, last.LearningRate); e.SetMetric(2, last.TokensPerSecond);
        });
        trainer.Log = m => ch.Info(MessageSensitivity.None, m);
        ch.Info(MessageSensitivity.None, $"QuanTA fine-tuning: {o.Task}, {o.Adapter} on {model.Injection.AdaptedModules.Count} modules, " +
            $"{model.Injection.TrainableParameters:N0} trainable of {model.Injection.TotalParameters:N0} parameters; {rows} rows, " +
            $"{o.Epochs} epochs × {batchesPerEpoch} batches (batch {o.BatchSize}, accumulation {o.GradientAccumulationSteps}), device {model.Device}.");

        int truncated = 0;
        var progress = new Reporter(p =>
        {
            if (p.Kind == TrainingEventKind.Step)
            {
                last = p;
                ch.Info(MessageSensitivity.None, $"epoch {p.Epoch + 1}/{o.Epochs} step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} " +
                    $"lr {p.LearningRate:G3} tokens/s {p.TokensPerSecond:F0}");
                pch.Checkpoint(p.Loss, p.LearningRate, p.TokensPerSecond);
                o.Progress?.Report(new QuanTAProgress(p.Epoch, (int)p.Step, (int)p.TotalSteps, p.Loss, p.LearningRate, p.TokensPerSecond));
            }
            else if (p.Kind == TrainingEventKind.Validation && p.ValidationMetric is double v)
            {
                ch.Info(MessageSensitivity.None, $"epoch {p.Epoch + 1}/{o.Epochs} step {p.Step} validation {o.ValidationMetric.ToString().ToLowerInvariant()} {v:F4}");
                o.Progress?.Report(new QuanTAProgress(p.Epoch, (int)p.Step, (int)p.TotalSteps, last?.Loss ?? double.NaN,
                    last?.LearningRate ?? 0, last?.TokensPerSecond ?? 0, v));
            }
            else if (p.Kind == TrainingEventKind.EpochEnd && truncated > 0)
            {
                ch.Warning(MessageSensitivity.None, $"{truncated} rows were longer than MaxSequenceLength = {o.MaxSequenceLength} tokens " +
                    (o.IsChat ? "and lost their oldest exchanges (or, a single exchange, were cut)" : "and were truncated") +
                    " (set Truncation = TruncationPolicy.Error to fail instead).");
                truncated = 0;
            }
        });

        var source = BatchSource.FromFactory(epoch => train.Read(new Random(unchecked(seed * 7919 + epoch)))
            .Take((int)(rowsPerRank * world)).Where((_, i) => i % world == rank).Chunk(o.BatchSize), batchesPerEpoch);
        var result = trainer.Train(source, batch =>
        {
            MlNetInternals.CheckAlive(host);
            var encoded = batch.Select(r => Encode(r, ref truncated)).ToList();
            bank?.Materialize(computeDType);                   // this micro-batch's ΔW for every adapted layer (in the step's scope)
            var loss = model.TrainingLoss(encoded, batch.Select(r => r.Label).ToList());
            return new TrainStepResult(loss, encoded.Sum(e => (long)e.Ids.Length));
        }, validation is null ? null : () => { bank?.Clear(); return Evaluate(validation); }, progress, o.CancellationToken);
        bank?.Clear();
        Core.Models.Llama.LlamaModel.SetGradientCheckpointing(model.Module, false);   // inference records no graph; leave the model as loaded
        History = result.History;
        model.SetTraining(false);
    }

    /// <summary>What to change after an out-of-memory step, in this library's option names and the CLI's flags: the batch size
    /// (with accumulation to keep the effective batch), the sequence length, and the QuanTA training path (null: not QuanTA).</summary>
    internal static string OutOfMemoryHint(QuanTAFineTuneOptions o, QuanTATrainingPath? path)
    {
        var hint = $"these are QuanTAFineTuneOptions.BatchSize (CLI: --batch-size, now {o.BatchSize}), GradientAccumulationSteps " +
            $"(CLI: --grad-accum, now {o.GradientAccumulationSteps}) and MaxSequenceLength (CLI: --max-seq-len, now {o.MaxSequenceLength})";
        if (path is QuanTATrainingPath.Stacked or QuanTATrainingPath.PerLayer)
            hint += "; or set TrainingPath = StackedRecompute (CLI: --training-path stacked-recompute), which keeps one weight-sized " +
                "tensor per adapted layer between forward and backward instead of about five, or Layerwise (CLI: --training-path " +
                "layerwise), which keeps none (same results, a little slower)";
        else if (path is QuanTATrainingPath.StackedRecompute)
            hint += "; or set TrainingPath = Layerwise (CLI: --training-path layerwise), which keeps no weight-sized " +
                "tensor per adapted layer between forward and backward (same results, a little slower)";
        else if (path is QuanTATrainingPath.Layerwise)
            hint += "; or set TrainingPath = LayerwiseUncached (CLI: --training-path layerwise-uncached), which also rebuilds the " +
                "frozen chain instead of caching it (same results, slower)";
        return hint;
    }

    /// <summary>The QuanTA training path of this fit (<see cref="QuanTATrainingPaths.Resolve"/>) and the line that logs it; null
    /// for LoRA. A fused path with no adapter it can serve (all have dropout or a rank) falls back to PerLayer, said in the log.</summary>
    QuanTATrainingPathChoice? ResolveTrainingPath(ScalarType computeDType, out string? note)
    {
        note = null;
        if (options.Adapter != AdapterMethod.QuanTA) return null;
        bool onCuda = model.Device.type == DeviceType.CUDA;
        var choice = QuanTATrainingPaths.Resolve(options.TrainingPath, onCuda,
            () => QuanTABank.EstimatedStackedExtraBytes(model.Module, computeDType),
            () => DeviceMemory.Query(model.Device.index < 0 ? 0 : model.Device.index)?.Free,
            () => QuanTABank.EstimatedRecomputeExtraBytes(model.Module, computeDType));
        var (fused, perLayer) = QuanTABank.CountEligible(model.Module);
        if (choice.UsesBank && fused == 0)
            choice = new(QuanTATrainingPath.PerLayer, $"{QuanTATrainingPaths.Name(choice.Path)} was chosen ({choice.Reason}), but every " +
                "adapter has dropout or a per-tensor rank, which only the per-layer path serves");
        note = choice.ToString() + (choice.UsesBank && perLayer > 0
            ? $"; {perLayer} of {fused + perLayer} adapters run per layer (dropout or a per-tensor rank)" : "") + ".";
        return choice;
    }

    /// <summary>Buffers of the modules that own trainable parameters (the adapters' frozen S), saved with checkpoints.</summary>
    static List<(string, Tensor)> AdapterBuffers(nn.Module module)
    {
        var state = new List<(string, Tensor)>();
        foreach (var (prefix, m) in module.named_modules())
            if (m is Adapter)
                foreach (var (name, buffer) in m.named_buffers(recurse: false)) state.Add((prefix + "." + name, buffer));
        return state;
    }

    EncodedRow Encode(InputRow r, ref int truncated)
    {
        EncodedRow e;
        try { e = model.EncodeTraining(r.Text, r.SecondText, r.Label, r.Target); }
        catch (Exception ex) when (options.IsChat && ex is InvalidDataException or InvalidOperationException or FormatException or Core.Chat.ChatTemplateException)
        {
            throw new InvalidDataException($"Row {r.Row} of the conversation column '{options.MessagesColumnName}': {ex.Message}", ex);
        }
        if (e.Truncated)
        {
            if (options.Truncation == TruncationPolicy.Error)
                throw new InvalidDataException($"Row {r.Row} is longer than MaxSequenceLength = {options.MaxSequenceLength} tokens " +
                    (options.IsChat ? "even as a whole conversation (Truncation = Error refuses it; TruncateWithWarning drops its oldest exchanges). "
                                    : "(Truncation = Error). ") + "Raise MaxSequenceLength or shorten the text.");
            truncated++;
        }
        return e;
    }

    /// <summary>Mean loss, or accuracy, over a data view (called by the trainer under no_grad, in eval mode).</summary>
    double Evaluate(InputRowReader data)
    {
        double sum = 0; long n = 0;
        int truncated = 0;
        bool accuracy = options.ValidationMetric == ValidationMetric.Accuracy;
        foreach (var batch in data.Read().Chunk(options.BatchSize))
        {
            MlNetInternals.CheckAlive(host);
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            if (accuracy)
            {
                var probs = model.ClassProbabilities(batch.Select(r => model.EncodeClassification(r.Text, r.SecondText)).ToList());
                for (int i = 0; i < batch.Length; i++)
                    if (Array.IndexOf(probs[i], probs[i].Max()) == batch[i].Label) sum++;
                n += batch.Length;
                continue;
            }
            var encoded = batch.Select(r => Encode(r, ref truncated)).ToList();
            var loss = model.TrainingLoss(encoded, batch.Select(r => r.Label).ToList());
            sum += loss.item<float>() * batch.Length; n += batch.Length;
        }
        return n == 0 ? double.NaN : sum / n;
    }

    /// <summary>Reports synchronously on the training thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    sealed class Reporter(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
