namespace QuanTA.Core.Training;

/// <summary>Shape of the learning-rate curve after warmup (formulas as in Hugging Face <c>transformers.get_scheduler</c>).</summary>
public enum LearningRateSchedule
{
    /// <summary>Linear warmup from 0, then linear decay to 0 at the last step (HF <c>linear</c>, the HF Trainer default).</summary>
    Linear,
    /// <summary>Linear warmup from 0, then half a cosine wave down to 0 (HF <c>cosine</c>).</summary>
    Cosine,
    /// <summary>Linear warmup from 0, then constant (HF <c>constant_with_warmup</c>; without warmup: <c>constant</c>).</summary>
    Constant,
}

/// <summary>
/// Options of the model-agnostic fine-tuning loop (<see cref="Trainer{TBatch}"/>). Names and defaults follow the Hugging Face
/// Trainer where it has one; the learning rate is the QuanTA paper's (DROP / commonsense recipes, 1e-4). These are the one
/// source of the training-loop defaults: <c>QuanTAFineTuneOptions</c> (and through it the ML.NET catalog and the CLI) takes its
/// epochs, batch, learning rate, schedule, clipping, checkpoint and early-stopping defaults from a fresh instance of this class.
/// Validated in one place, <see cref="Validate"/>, which the trainer calls.
/// </summary>
public sealed class TrainerOptions
{
    /// <summary>Passes over the training data. Default 3 (HF Trainer default; the paper trains 1–3 epochs).</summary>
    public int Epochs { get; set; } = 3;

    /// <summary>When &gt; 0, stop after this many optimizer steps (overrides <see cref="Epochs"/> for the schedule length). Default 0 (off).</summary>
    public long MaxSteps { get; set; }

    /// <summary>
    /// Examples per micro-batch, for the code that builds batches (<see cref="BatchSource"/>, the ML.NET estimator); the trainer itself
    /// receives ready batches. Default 4 (the paper's DROP recipe uses an effective batch of 4).
    /// </summary>
    public int BatchSize { get; set; } = 4;

    /// <summary>Micro-batches whose gradients are summed before one optimizer step; each micro-batch loss is scaled by 1/accum. Default 1.</summary>
    public int GradientAccumulationSteps { get; set; } = 1;

    /// <summary>Peak learning rate of AdamW. Default 1e-4 (QuanTA paper, DROP).</summary>
    public double LearningRate { get; set; } = 1e-4;

    /// <summary>Learning-rate curve after warmup. Default <see cref="LearningRateSchedule.Linear"/>.</summary>
    public LearningRateSchedule Schedule { get; set; } = LearningRateSchedule.Linear;

    /// <summary>Fraction of the total optimizer steps used for linear warmup (ignored when <see cref="WarmupSteps"/> &gt; 0). Default 0.</summary>
    public double WarmupRatio { get; set; }

    /// <summary>Optimizer steps of linear warmup; takes precedence over <see cref="WarmupRatio"/>. Default 0.</summary>
    public long WarmupSteps { get; set; }

    /// <summary>AdamW decoupled weight decay. Default 0 (HF default).</summary>
    public double WeightDecay { get; set; }

    /// <summary>Global L2 norm the gradients are clipped to before each step (<c>clip_grad_norm_</c>); 0 turns clipping off. Default 1.0 (HF default).</summary>
    public double MaxGradNorm { get; set; } = 1.0;

    /// <summary>AdamW β1. Default 0.9.</summary>
    public double AdamBeta1 { get; set; } = 0.9;

    /// <summary>AdamW β2. Default 0.999.</summary>
    public double AdamBeta2 { get; set; } = 0.999;

    /// <summary>AdamW ε. Default 1e-8.</summary>
    public double AdamEpsilon { get; set; } = 1e-8;

    /// <summary>The seed used when none is given: here, by <c>QuanTAFineTuneOptions</c> (when the MLContext has none either)
    /// and by the <c>quanta</c> CLI. 1, as the ML.NET samples seed their MLContext.</summary>
    public const int DefaultSeed = 1;

    /// <summary>Seed of libtorch's CPU generator (dropout, initialisation done after training starts) and of <see cref="BatchSource"/> shuffling. Default <see cref="DefaultSeed"/>.</summary>
    public long Seed { get; set; } = DefaultSeed;

    /// <summary>A progress event is raised every N optimizer steps (and at the last one); its loss is the mean over those steps. Default 10.</summary>
    public int LogEveryNSteps { get; set; } = 10;

    /// <summary>Folder for checkpoints (<c>checkpoint-000123/</c> sub-folders). Null: no checkpoints. Default null.</summary>
    public string? CheckpointDir { get; set; }

    /// <summary>Save a checkpoint every N optimizer steps (0: only at each epoch end and on cancellation/divergence). Default 0.</summary>
    public long CheckpointEverySteps { get; set; }

    /// <summary>Also save a checkpoint at the end of each epoch (when <see cref="CheckpointDir"/> is set). Default true.</summary>
    public bool CheckpointEachEpoch { get; set; } = true;

    /// <summary>Keep only the newest K checkpoints (the best one, when validating, is always kept too). 0 keeps all. Default 3.</summary>
    public int KeepLastCheckpoints { get; set; } = 3;

    /// <summary>
    /// Resume from a checkpoint: a <c>checkpoint-N</c> folder, or a checkpoint root folder (its newest valid checkpoint is taken).
    /// Null: start fresh. Default null.
    /// </summary>
    public string? ResumeFrom { get; set; }

    /// <summary>
    /// Free text identifying what is being trained (e.g. base-model hash + adapter config). Stored in checkpoints; resuming from a
    /// checkpoint with a different fingerprint is an error (base model / adapter mismatch). Default null (not checked).
    /// </summary>
    public string? RunFingerprint { get; set; }

    /// <summary>One more suggestion for the out-of-memory error, from the caller that knows the model (e.g. a lower-memory
    /// adapter path); appended to <see cref="OutOfMemoryOnDeviceException"/>'s message. Default null.</summary>
    public string? OutOfMemoryHint { get; set; }

    /// <summary>Run the validation function every N optimizer steps; 0: at the end of each epoch. Default 0.</summary>
    public long ValidateEverySteps { get; set; }

    /// <summary>True when a larger validation metric is better (accuracy); false for losses/perplexity. Default false.</summary>
    public bool GreaterIsBetter { get; set; }

    /// <summary>Stop after this many validations without improvement; 0 turns early stopping off. Default 0.</summary>
    public int EarlyStoppingPatience { get; set; }

    /// <summary>Minimum change of the metric that counts as an improvement. Default 0.</summary>
    public double EarlyStoppingThreshold { get; set; }

    /// <summary>At the end, copy the best validated parameters back into the model (HF <c>load_best_model_at_end</c>). Default false,
    /// as in HF: the last step's parameters are kept.</summary>
    public bool RestoreBestAtEnd { get; set; }

    /// <summary>Checks every option; throws <see cref="ArgumentOutOfRangeException"/> naming the option, its value and what is allowed.</summary>
    public void Validate()
    {
        static void Check(bool ok, string name, object value, string expected)
        {
            if (!ok) throw new ArgumentOutOfRangeException(name, value, $"TrainerOptions.{name} = {value} is invalid: expected {expected}.");
        }
        Check(Epochs >= 1 || MaxSteps > 0, nameof(Epochs), Epochs, ">= 1 (or MaxSteps > 0)");
        Check(MaxSteps >= 0, nameof(MaxSteps), MaxSteps, ">= 0 (0 = off)");
        Check(BatchSize >= 1, nameof(BatchSize), BatchSize, ">= 1");
        Check(GradientAccumulationSteps >= 1, nameof(GradientAccumulationSteps), GradientAccumulationSteps, ">= 1");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), LearningRate, "a finite value > 0");
        Check(Enum.IsDefined(Schedule), nameof(Schedule), Schedule, "Linear, Cosine or Constant");
        Check(WarmupRatio is >= 0 and < 1, nameof(WarmupRatio), WarmupRatio, "0 <= ratio < 1");
        Check(WarmupSteps >= 0, nameof(WarmupSteps), WarmupSteps, ">= 0");
        Check(WeightDecay >= 0 && double.IsFinite(WeightDecay), nameof(WeightDecay), WeightDecay, ">= 0");
        Check(MaxGradNorm >= 0 && double.IsFinite(MaxGradNorm), nameof(MaxGradNorm), MaxGradNorm, ">= 0 (0 = no clipping)");
        Check(AdamBeta1 is >= 0 and < 1, nameof(AdamBeta1), AdamBeta1, "0 <= beta1 < 1");
        Check(AdamBeta2 is >= 0 and < 1, nameof(AdamBeta2), AdamBeta2, "0 <= beta2 < 1");
        Check(AdamEpsilon >= 0, nameof(AdamEpsilon), AdamEpsilon, ">= 0");
        Check(LogEveryNSteps >= 1, nameof(LogEveryNSteps), LogEveryNSteps, ">= 1");
        Check(CheckpointEverySteps >= 0, nameof(CheckpointEverySteps), CheckpointEverySteps, ">= 0");
        Check(KeepLastCheckpoints >= 0, nameof(KeepLastCheckpoints), KeepLastCheckpoints, ">= 0 (0 = keep all)");
        Check(ValidateEverySteps >= 0, nameof(ValidateEverySteps), ValidateEverySteps, ">= 0");
        Check(EarlyStoppingPatience >= 0, nameof(EarlyStoppingPatience), EarlyStoppingPatience, ">= 0 (0 = off)");
        Check(EarlyStoppingThreshold >= 0, nameof(EarlyStoppingThreshold), EarlyStoppingThreshold, ">= 0");
    }

    /// <summary>A shallow copy (options are plain values).</summary>
    public TrainerOptions Clone() => (TrainerOptions)MemberwiseClone();
}
