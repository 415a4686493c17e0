using static TorchSharp.torch;

namespace QuanTA.Core.Training;

/// <summary>
/// What the loss function returns for one micro-batch: the scalar loss (with its autograd graph; the trainer scales it,
/// calls <c>backward</c> and disposes it) and how many tokens (or examples) it covered, for tokens/s.
/// </summary>
/// <param name="Loss">Scalar loss tensor (any float dtype; fp32 recommended, see <see cref="Losses"/>).</param>
/// <param name="TokenCount">Tokens (or examples) the loss is the mean over; used for throughput only.</param>
public readonly record struct TrainStepResult(Tensor Loss, long TokenCount);

/// <summary>What a progress event reports.</summary>
public enum TrainingEventKind
{
    /// <summary>Training steps were taken (every <see cref="TrainerOptions.LogEveryNSteps"/> steps).</summary>
    Step,
    /// <summary>A validation ran; <see cref="TrainingProgress.ValidationMetric"/> is set.</summary>
    Validation,
    /// <summary>A checkpoint was written; <see cref="TrainingProgress.CheckpointPath"/> is set.</summary>
    Checkpoint,
    /// <summary>An epoch ended.</summary>
    EpochEnd,
}

/// <summary>A progress event of <see cref="Trainer{TBatch}"/> (sent through <see cref="IProgress{T}"/>).</summary>
public sealed record TrainingProgress
{
    /// <summary>What happened.</summary>
    public required TrainingEventKind Kind { get; init; }
    /// <summary>Zero-based epoch.</summary>
    public required int Epoch { get; init; }
    /// <summary>Optimizer steps completed so far (1-based after the first step).</summary>
    public required long Step { get; init; }
    /// <summary>Optimizer steps the whole run will take.</summary>
    public required long TotalSteps { get; init; }
    /// <summary>Mean training loss over the steps since the previous <see cref="TrainingEventKind.Step"/> event (NaN before any step).</summary>
    public required double Loss { get; init; }
    /// <summary>Learning rate used by the latest step.</summary>
    public required double LearningRate { get; init; }
    /// <summary>Global gradient L2 norm before clipping, of the latest step.</summary>
    public required double GradNorm { get; init; }
    /// <summary>Tokens per second since training (or the resumed run) started.</summary>
    public required double TokensPerSecond { get; init; }
    /// <summary>Wall time since training (or the resumed run) started.</summary>
    public required TimeSpan Elapsed { get; init; }
    /// <summary>Estimated time left (from the mean step time of this run).</summary>
    public required TimeSpan EstimatedRemaining { get; init; }
    /// <summary>Validation metric (for <see cref="TrainingEventKind.Validation"/>).</summary>
    public double? ValidationMetric { get; init; }
    /// <summary>Checkpoint folder (for <see cref="TrainingEventKind.Checkpoint"/>).</summary>
    public string? CheckpointPath { get; init; }

    /// <summary>One-line summary, e.g. for a console or an ML.NET channel.</summary>
    public override string ToString() => Kind switch
    {
        TrainingEventKind.Validation => $"epoch {Epoch} step {Step}/{TotalSteps} validation metric {ValidationMetric:G6}",
        TrainingEventKind.Checkpoint => $"epoch {Epoch} step {Step}/{TotalSteps} checkpoint saved to {CheckpointPath}",
        TrainingEventKind.EpochEnd => $"epoch {Epoch} ended at step {Step}/{TotalSteps}",
        _ => $"epoch {Epoch} step {Step}/{TotalSteps} loss {Loss:F4} lr {LearningRate:E2} grad-norm {GradNorm:F3} " +
             $"{TokensPerSecond:F0} tok/s ETA {EstimatedRemaining:hh\\:mm\\:ss}",
    };
}

/// <summary>One optimizer step of the training history.</summary>
/// <param name="Step">1-based optimizer step.</param>
/// <param name="Epoch">Zero-based epoch.</param>
/// <param name="Loss">Mean (unscaled) micro-batch loss of this step.</param>
/// <param name="LearningRate">Learning rate used by this step.</param>
/// <param name="GradNorm">Global gradient L2 norm before clipping.</param>
/// <param name="Tokens">Tokens in this step's micro-batches.</param>
public sealed record TrainingStepRecord(long Step, int Epoch, double Loss, double LearningRate, double GradNorm, long Tokens);

/// <summary>One validation of the training history.</summary>
/// <param name="Step">Optimizer step after which it ran.</param>
/// <param name="Epoch">Zero-based epoch.</param>
/// <param name="Metric">The metric the validation function returned.</param>
public sealed record ValidationRecord(long Step, int Epoch, double Metric);

/// <summary>Everything logged during training (also restored on resume), e.g. for a loss-curve plot.</summary>
public sealed class TrainingHistory
{
    /// <summary>One entry per optimizer step, in order.</summary>
    public List<TrainingStepRecord> Steps { get; init; } = new();
    /// <summary>One entry per validation, in order.</summary>
    public List<ValidationRecord> Validations { get; init; } = new();
}

/// <summary>Outcome of <see cref="Trainer{TBatch}.Train"/>.</summary>
public sealed class TrainingResult
{
    /// <summary>Optimizer steps completed (including those before a resume).</summary>
    public required long Steps { get; init; }
    /// <summary>Epochs fully or partly run.</summary>
    public required int EpochsRun { get; init; }
    /// <summary>True when early stopping ended training.</summary>
    public required bool StoppedEarly { get; init; }
    /// <summary>Best validation metric, if any validation ran.</summary>
    public double? BestMetric { get; init; }
    /// <summary>Step of the best validation metric, if any.</summary>
    public long? BestStep { get; init; }
    /// <summary>Checkpoint folder of the best validation, when checkpoints are written.</summary>
    public string? BestCheckpoint { get; init; }
    /// <summary>Newest checkpoint folder written, if any.</summary>
    public string? LastCheckpoint { get; init; }
    /// <summary>Training and validation history.</summary>
    public required TrainingHistory History { get; init; }
}

/// <summary>
/// The loss became NaN or infinite. Parameters and optimizer state are those before the failing step (the step was not
/// applied); when a checkpoint folder is set, they were also saved to <see cref="LastGoodCheckpoint"/>.
/// </summary>
public sealed class TrainingDivergedException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TrainingDivergedException(long step, int epoch, double loss, double learningRate, string? lastGoodCheckpoint, string what = "loss")
        : base($"Training diverged at optimizer step {step} (epoch {epoch}): the {what} is {loss}. " +
               $"The learning rate was {learningRate:E2}; try a lower learning rate (e.g. {learningRate / 10:E1}), more warmup, " +
               "or gradient clipping (MaxGradNorm). The parameters were left as they were after the last good step" +
               (lastGoodCheckpoint is null ? "." : $", saved in '{lastGoodCheckpoint}'."))
    {
        Step = step; Epoch = epoch; LossValue = loss; LearningRate = learningRate; LastGoodCheckpoint = lastGoodCheckpoint;
    }

    /// <summary>The optimizer step (1-based) that produced the non-finite value.</summary>
    public long Step { get; }
    /// <summary>Zero-based epoch.</summary>
    public int Epoch { get; }
    /// <summary>The non-finite value.</summary>
    public double LossValue { get; }
    /// <summary>Learning rate of the failing step.</summary>
    public double LearningRate { get; }
    /// <summary>Checkpoint of the last good state, when checkpoints are written.</summary>
    public string? LastGoodCheckpoint { get; }
}

/// <summary>The GPU (or host) ran out of memory during a training step. Nothing already trained is lost: the parameters are
/// those of the last completed step (and its checkpoint, when checkpoints are written).</summary>
public sealed class OutOfMemoryOnDeviceException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public OutOfMemoryOnDeviceException(long step, int batchSize, int accumulation, string? lastCheckpoint, Exception inner, string? hint = null)
        : base($"Out of memory on the device during optimizer step {step} (batch size {batchSize}, gradient accumulation {accumulation}). " +
               $"Lower the batch size (e.g. {Math.Max(1, batchSize / 2)}) and raise gradient accumulation (e.g. {accumulation * 2}) to keep " +
               "the same effective batch, or lower the maximum sequence length" + (hint is null ? "" : $"; {hint}") +
               ". The parameters are those of the last completed step" +
               (lastCheckpoint is null ? "." : $"; resume from '{lastCheckpoint}'."), inner)
    {
        Step = step; LastCheckpoint = lastCheckpoint;
    }

    /// <summary>The optimizer step (1-based) that ran out of memory.</summary>
    public long Step { get; }
    /// <summary>The last checkpoint, when checkpoints are written.</summary>
    public string? LastCheckpoint { get; }

    /// <summary>True for libtorch's out-of-memory errors ("CUDA out of memory", allocator failures) and .NET's own.</summary>
    public static bool IsDeviceOutOfMemory(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
        {
            if (x is OutOfMemoryOnDeviceException) return false;   // already translated
            if (x is OutOfMemoryException) return true;
            var m = x.Message;
            if (m.Contains("out of memory", StringComparison.OrdinalIgnoreCase) || m.Contains("CUDA error: out of memory", StringComparison.Ordinal)
                || m.Contains("DefaultCPUAllocator: can't allocate memory", StringComparison.Ordinal)) return true;
        }
        return false;
    }
}

/// <summary>Fault injection for tests: simulated device failures (out of memory) inside a training step, reached through every
/// caller of the trainer (ML.NET's Fit, the CLI) on the thread that trains.</summary>
internal static class TrainingFaults
{
    /// <summary>Called before each micro-batch's forward with the 1-based optimizer step being computed; whatever it throws
    /// is handled as if the loss function had thrown it (e.g. libtorch's "CUDA out of memory" <c>ExternalException</c>).</summary>
    [ThreadStatic] internal static Action<long>? BeforeMicroBatch;
}

/// <summary>A checkpoint folder is incomplete, truncated or altered (hash mismatch, unreadable state).</summary>
public sealed class CheckpointCorruptException : IOException
{
    /// <summary>Creates the exception.</summary>
    public CheckpointCorruptException(string checkpoint, string problem, Exception? inner = null)
        : base($"Checkpoint '{checkpoint}' is corrupt or incomplete: {problem}. Delete it and resume from an earlier checkpoint " +
               "(pass the checkpoint root folder to resume from the newest valid one).", inner)
        => Checkpoint = checkpoint;

    /// <summary>The checkpoint folder.</summary>
    public string Checkpoint { get; }
}
