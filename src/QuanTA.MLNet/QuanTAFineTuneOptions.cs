using Microsoft.ML;
using QuanTA.Core.Adapters;
using QuanTA.Core.Training;

using QuanTA.Core.Quantization;

namespace QuanTA.MLNet;

/// <summary>What the fine-tuned model is for.</summary>
public enum QuanTATask
{
    /// <summary>Text (or text pair) → one of the label column's classes; outputs <c>Score</c> and <c>PredictedLabel</c>.</summary>
    TextClassification,
    /// <summary>Prompt → target text (loss on target tokens only); outputs a generated-text column.</summary>
    TextGeneration,
}

/// <summary>Which adapter is trained on the frozen base model.</summary>
public enum AdapterMethod
{
    /// <summary>QuanTA: one small tensor per pair of axes of the layer's feature space (full-rank update). The paper's method.</summary>
    QuanTA,
    /// <summary>LoRA: the low-rank baseline ΔW = (α/r)·B·A.</summary>
    LoRA,
}

/// <summary>What to do with a text longer than <see cref="QuanTAFineTuneOptions.MaxSequenceLength"/> tokens.</summary>
public enum TruncationPolicy
{
    /// <summary>Cut it to the maximum length (the prompt is cut from the left for generation) and log one warning with the count.</summary>
    TruncateWithWarning,
    /// <summary>Throw an exception naming the row.</summary>
    Error,
}

/// <summary>How a classification is computed from the base model.</summary>
public enum ClassificationMode
{
    /// <summary>The base is a <c>…ForSequenceClassification</c> checkpoint: its <c>score</c> head gives one logit per class
    /// (trained together with the adapter, as PEFT does for sequence classification).</summary>
    Head,
    /// <summary>The base is a causal LM: each class is scored by the mean log-probability of its name (the label's key value,
    /// after a space) following the text, as the paper does on commonsense tasks; training is causal-LM loss on the correct
    /// name's tokens. <c>Score</c> is the softmax of those mean log-probabilities.</summary>
    Verbalizer,
}

/// <summary>What validation during <c>Fit</c> measures.</summary>
public enum ValidationMetric
{
    /// <summary>Mean training loss on the validation set (cross-entropy; lower is better).</summary>
    Loss,
    /// <summary>Fraction of validation rows whose predicted class is the label (classification only; higher is better).</summary>
    Accuracy,
}

/// <summary>One progress report from <c>Fit</c> (also logged through ML.NET's channels).</summary>
/// <param name="Epoch">0-based epoch.</param>
/// <param name="Step">Optimizer steps done so far (1-based).</param>
/// <param name="TotalSteps">Optimizer steps planned.</param>
/// <param name="Loss">Mean training loss over the step's micro-batches.</param>
/// <param name="LearningRate">Learning rate used for this step.</param>
/// <param name="TokensPerSecond">Throughput over the step (non-pad tokens).</param>
/// <param name="ValidationLoss">Set when a validation ran (the <see cref="QuanTAFineTuneOptions.ValidationMetric"/>: loss or accuracy).</param>
public sealed record QuanTAProgress(int Epoch, int Step, int TotalSteps, double Loss, double LearningRate, double TokensPerSecond,
    double? ValidationLoss = null);

/// <summary>
/// All options of <c>mlContext.Transforms.QuanTAFineTune(...)</c>. Plain public fields with defaults (ML.NET's TorchSharp
/// trainer style); defaults come from the QuanTA paper where it has one (DROP recipe: q/v projections, lr 1e-4, 3 epochs,
/// linear decay, no warm-up, gradient clipping 1.0). This class is where the product's defaults live: the catalog methods and
/// the <c>quanta</c> CLI read theirs from a fresh instance, and the training-loop fields start from a fresh
/// <see cref="TrainerOptions"/>, the adapter fields from fresh <see cref="QuanTAConfig"/> / <see cref="LoRAConfig"/> (a test
/// compares all of them). <see cref="Validate"/> checks everything in one place (the adapter rules are the Core configs' own).
/// </summary>
public sealed class QuanTAFineTuneOptions
{
    static readonly TrainerOptions LoopDefaults = new();
    static readonly QuanTAConfig QuanTADefaults = new();
    static readonly LoRAConfig LoRADefaults = new();

    // ---- task and base model ----

    /// <summary>Classification or generation. Default <see cref="QuanTATask.TextClassification"/>.</summary>
    public QuanTATask Task = QuanTATask.TextClassification;

    /// <summary>Folder of a Hugging Face LLaMA-family checkpoint (config.json, model.safetensors, tokenizer.json). Required.
    /// Classification needs a <c>…ForSequenceClassification</c> checkpoint with one output per class.</summary>
    public string BaseModelPath = "";

    // ---- columns ----

    /// <summary>Input text column (the prompt for generation). Default "Text".</summary>
    public string TextColumnName = "Text";

    /// <summary>Optional second text column (sentence pair); joined to the first with a newline. Default null.</summary>
    public string? SecondTextColumnName;

    /// <summary>Label column for classification; must be a key type (use <c>MapValueToKey</c> upstream). Default "Label".</summary>
    public string LabelColumnName = "Label";

    /// <summary>Target text column for generation (the answer the model learns to produce). Default "Target".</summary>
    public string TargetTextColumnName = "Target";

    /// <summary>Conversation column for chat fine-tuning (generation only): each row is a JSON array of
    /// <c>{"role", "content"}</c> messages, as <c>mlContext.Data.LoadFromChatJsonl</c> writes in its <c>Messages</c> column.
    /// When set, each row is rendered with <see cref="ChatTemplate"/>, the loss falls on every assistant turn (its content and
    /// the template's end-of-turn text), and <see cref="TextColumnName"/> / <see cref="TargetTextColumnName"/> are not read;
    /// at inference the generated text answers the conversation up to its last assistant turn. Over-long conversations follow
    /// <see cref="Truncation"/>: the oldest exchanges are dropped (the system prompt is kept), or the row is refused.
    /// Default null (prompt/target columns).</summary>
    public string? MessagesColumnName;

    /// <summary>The chat template for <see cref="MessagesColumnName"/> rows and for <c>QuanTAChatClient</c>: null (default) takes
    /// the base model's own <c>chat_template</c> (<c>chat_template.jinja</c> or <c>tokenizer_config.json</c>); otherwise a built-in
    /// name (<c>llama2</c>, <c>llama3</c>, <c>mistral</c>, <c>chatml</c>, <c>qwen2</c>), a path to a <c>.jinja</c> file, or the
    /// template text itself.</summary>
    public string? ChatTemplate;

    /// <summary>The column the model reads its input from: <see cref="MessagesColumnName"/> when set, else <see cref="TextColumnName"/>.</summary>
    internal string InputColumnName => MessagesColumnName ?? TextColumnName;

    /// <summary>True when rows are conversations rendered with a chat template.</summary>
    internal bool IsChat => MessagesColumnName is not null;

    /// <summary>Output score column for classification (float vector, one softmax probability per class). Default "Score".</summary>
    public string ScoreColumnName = "Score";

    /// <summary>Output predicted-label column for classification (key type, same key values as the label). Default "PredictedLabel".</summary>
    public string PredictedLabelColumnName = "PredictedLabel";

    /// <summary>Output column for generation. Default "GeneratedText".</summary>
    public string GeneratedTextColumnName = "GeneratedText";

    // ---- adapter ----

    /// <summary>Adapter method. Default <see cref="AdapterMethod.QuanTA"/>.</summary>
    public AdapterMethod Adapter = AdapterMethod.QuanTA;

    /// <summary>QuanTA axis layout (local dimensions whose product covers the layer width, e.g. [16,8,8,4] for 4096).
    /// Null (default) derives <c>[ceil(max(in,out)^(1/N))] * N</c> per layer with N = <see cref="AxisCount"/>.</summary>
    public int[]? AxisLayout;

    /// <summary>Number of axes N when <see cref="AxisLayout"/> is derived. Default 4 (the paper's).</summary>
    public int AxisCount = QuanTADefaults.AxisCount;

    /// <summary>QuanTA: the pairs of axes that get a tensor, in application order (0-based axis indices). Null (default) = all
    /// N(N−1)/2 pairs in the official order.</summary>
    public (int, int)[]? Pairs;

    /// <summary>QuanTA: number of tensors (the first K pairs of the official order, cycling for deeper chains). Null (default) = all
    /// N(N−1)/2 pairs. Ignored when <see cref="Pairs"/> is set.</summary>
    public int? TensorCount;

    /// <summary>QuanTA: per-tensor rank (each tensor factored as k×r · r×k). Null (default) = full-rank tensors (the paper's).</summary>
    public int? Rank;

    /// <summary>Modules to adapt: name suffixes (e.g. "q_proj"), one "regex:PATTERN" (whole-name match), or "all-linear".
    /// Default q_proj, v_proj (the paper's).</summary>
    public string[] TargetModules = ["q_proj", "v_proj"];

    /// <summary>Dropout on the adapter input. Default 0 (the paper's).</summary>
    public float Dropout = (float)QuanTADefaults.Dropout;

    /// <summary>LoRA rank r. Default 8.</summary>
    public int LoRARank = LoRADefaults.Rank;

    /// <summary>LoRA scaling α (ΔW = α/r · B·A). Default 16 (α = 2r for the default rank; PEFT's and
    /// <see cref="LoRAConfig.Alpha"/>'s default is 8, the published LoRA baselines here use 2r).</summary>
    public float LoRAAlpha = 16;

    /// <summary>
    /// How the frozen base's decoder linear weights (attention and MLP projections) are stored: <see cref="BaseQuantization.None"/>
    /// (default: the compute dtype, fp32 on CPU and bf16 on CUDA), <see cref="BaseQuantization.Int8"/> (per-row absmax, about half
    /// of bf16) or <see cref="BaseQuantization.NF4"/> (QLoRA's 4-bit NormalFloat with double quantization, about a quarter of
    /// bf16). Weights are quantized tensor by tensor while the checkpoint is read; embeddings, norms and the LM/classification
    /// head stay in the compute dtype; the adapter and its optimizer state are unchanged. A quantized base is never merged:
    /// predictions run the adapter beside it. A folder already saved by bitsandbytes in 4 bits (<c>…-bnb-4bit</c>) keeps its
    /// NF4 weights bit for bit with <see cref="BaseQuantization.NF4"/> and is dequantized with None. Saved models record the
    /// choice and quantize the same way when loaded. CLI: <c>--quantize none|int8|nf4</c>. See docs/quantization.md.
    /// </summary>
    public BaseQuantization BaseQuantization = BaseQuantization.None;

    // ---- training ----

    /// <summary>Passes over the training data. Default 3 (the paper's).</summary>
    public int Epochs = LoopDefaults.Epochs;

    /// <summary>Rows per micro-batch. Default 4.</summary>
    public int BatchSize = LoopDefaults.BatchSize;

    /// <summary>Micro-batches per optimizer step (effective batch = BatchSize × this). Default 1.</summary>
    public int GradientAccumulationSteps = LoopDefaults.GradientAccumulationSteps;

    /// <summary>Peak learning rate of AdamW. Default 1e-4 (the paper's DROP setting).</summary>
    public double LearningRate = LoopDefaults.LearningRate;

    /// <summary>Schedule after warm-up (QuanTA.Core.Training.LearningRateSchedule). Default linear decay (the paper's).</summary>
    public LearningRateSchedule Schedule = LoopDefaults.Schedule;

    /// <summary>Fraction of steps with linear warm-up from 0. Default 0 (the paper's).</summary>
    public double WarmupRatio = LoopDefaults.WarmupRatio;

    /// <summary>AdamW weight decay. Default 0.</summary>
    public double WeightDecay = LoopDefaults.WeightDecay;

    /// <summary>Gradient-norm clipping threshold; 0 disables. Default 1.0 (the paper's).</summary>
    public double MaxGradNorm = LoopDefaults.MaxGradNorm;

    /// <summary>
    /// How each training step computes the QuanTA layers (<see cref="QuanTA.Core.Training.QuanTATrainingPath"/>); every path
    /// gives the same loss and gradients, they trade speed for memory:
    /// <see cref="QuanTA.Core.Training.QuanTATrainingPath.PerLayer"/> (each adapter on its own, the reference),
    /// <see cref="QuanTA.Core.Training.QuanTATrainingPath.Stacked"/> (one batched chain for all layers, one GEMM with W0 + ΔW per
    /// layer; fastest on a GPU, keeps W0 + ΔW and the chain's graph per layer for the backward),
    /// <see cref="QuanTA.Core.Training.QuanTATrainingPath.StackedRecompute"/> (the batched chain without a graph; keeps only
    /// W0 + ΔW per layer and re-runs the chain in the backward, a few layers at a time),
    /// <see cref="QuanTA.Core.Training.QuanTATrainingPath.Layerwise"/> (W0 + ΔW built inside each layer's forward and again in
    /// its backward; nothing weight-sized kept) and
    /// <see cref="QuanTA.Core.Training.QuanTATrainingPath.LayerwiseUncached"/> (also the frozen chain rebuilt; smallest peak).
    /// Default <see cref="QuanTA.Core.Training.QuanTATrainingPath.Auto"/>: PerLayer on the CPU; on a GPU the first of Stacked,
    /// StackedRecompute and Layerwise whose estimated extra memory is at most half of the GPU memory free after the model is
    /// loaded. The path and its
    /// reason are logged once per fit. Adapters with dropout or a per-tensor <see cref="Rank"/> always run per layer.
    /// </summary>
    public QuanTATrainingPath TrainingPath = QuanTATrainingPath.Auto;

    /// <summary>
    /// Activation (gradient) checkpointing of the decoder layers during training, as transformers'
    /// <c>gradient_checkpointing_enable()</c>: each layer keeps only its input between forward and backward and runs again in
    /// the backward, trading one more forward per step for most of the activation memory. Same loss and gradients on every
    /// adapter and training path (tested); dropout masks are replayed. Default false.
    /// </summary>
    public bool GradientCheckpointing;

    /// <summary>
    /// A PEFT adapter folder (adapter_config.json + adapter_model.safetensors: written by <c>quanta export --format peft</c>
    /// or, for LoRA, by PEFT's <c>save_pretrained</c>) whose values the adapters start from instead of their fresh
    /// initialization — to continue training an exported adapter, as PEFT's <c>PeftModel.from_pretrained(…, is_trainable=True)</c>.
    /// The adapter options still decide the architecture: the folder must adapt the same layers (<see cref="TargetModules"/>)
    /// with the same method and shapes (and LoRA alpha), else the fit stops before training naming what differs. A classifier
    /// head saved beside it (modules_to_save) is copied too. Default null (fresh adapters).
    /// </summary>
    public string? InitialAdapterPath;

    /// <summary>
    /// Data-parallel training: this process's communicator (ranks, all-reduce). Null (default): read the launcher's environment
    /// (<c>RANK</c>, <c>WORLD_SIZE</c>, <c>LOCAL_RANK</c>, <c>MASTER_ADDR</c>, <c>MASTER_PORT</c>, as torchrun / srun / mpirun set
    /// them); one process when <c>WORLD_SIZE</c> is unset or 1. With several ranks each reads its own shard of the rows
    /// (row striding over one seeded order, the remainder dropped so every rank takes the same number of steps), the
    /// adapter gradients are averaged over the ranks every step (NCCL on CUDA: rank r trains on cuda:LOCAL_RANK), and only
    /// rank 0 writes checkpoints. <see cref="BatchSize"/> is per rank.
    /// </summary>
    public QuanTA.Core.Distributed.ICommunicator? Communicator;

    /// <summary>Maximum tokens per row (prompt + target for generation). Default 256.</summary>
    public int MaxSequenceLength = 256;

    /// <summary>What to do with over-long rows. Default truncate with a warning.</summary>
    public TruncationPolicy Truncation = TruncationPolicy.TruncateWithWarning;

    /// <summary>Random seed for adapter initialisation, dropout and shuffling; null (default) takes the MLContext's seed, or
    /// <see cref="TrainerOptions.DefaultSeed"/> when it has none.</summary>
    public int? Seed;

    /// <summary>Optional validation data (same columns); its <see cref="ValidationMetric"/> is logged after each epoch (or every
    /// <see cref="ValidateEverySteps"/> steps) and drives early stopping.</summary>
    public IDataView? ValidationSet;

    // ---- checkpoints, resume, validation, early stopping ----

    /// <summary>Folder for training checkpoints (<c>checkpoint-000042/</c>: adapter tensors, AdamW state, schedule position, RNG
    /// state, data position; written atomically). Null (default): no checkpoints. A Fit that is cancelled or diverges saves its
    /// last completed step here first.</summary>
    public string? CheckpointDirectory;

    /// <summary>Save a checkpoint every N optimizer steps (0: only at each epoch end, on cancellation and on divergence).
    /// Default 0. Needs <see cref="CheckpointDirectory"/>.</summary>
    public int CheckpointEverySteps = (int)LoopDefaults.CheckpointEverySteps;

    /// <summary>Keep only the newest K checkpoints (the best validated one is kept too); 0 keeps all. Default 3.</summary>
    public int KeepLastCheckpoints = LoopDefaults.KeepLastCheckpoints;

    /// <summary>Resume training from a checkpoint: a <c>checkpoint-N</c> folder, a folder of checkpoints (its newest valid one is
    /// taken, corrupt ones are skipped), or <c>"latest"</c> for the newest valid checkpoint in <see cref="CheckpointDirectory"/>
    /// (when that folder holds no checkpoint yet, "latest" starts from the beginning, so a restart loop can always pass it).
    /// The resumed Fit must use the same base model, adapter options, data and batching (checked; a mismatch is an error).
    /// On CPU with a fixed seed the result is bit-identical to an uninterrupted Fit. Null (default): start fresh.</summary>
    public string? ResumeFromCheckpoint;

    /// <summary>Stop training after this many validations in a row without improvement (needs <see cref="ValidationSet"/>);
    /// 0 (default) turns early stopping off.</summary>
    public int EarlyStoppingPatience = LoopDefaults.EarlyStoppingPatience;

    /// <summary>Smallest change of the validation metric that counts as an improvement. Default 0.</summary>
    public double EarlyStoppingThreshold = LoopDefaults.EarlyStoppingThreshold;

    /// <summary>Validate every N optimizer steps; 0 (default) validates at the end of each epoch.</summary>
    public int ValidateEverySteps = (int)LoopDefaults.ValidateEverySteps;

    /// <summary>What validation measures (and early stopping watches). Default <see cref="MLNet.ValidationMetric.Loss"/>;
    /// <see cref="MLNet.ValidationMetric.Accuracy"/> is for classification only.</summary>
    public ValidationMetric ValidationMetric = ValidationMetric.Loss;

    /// <summary>At the end of Fit, put back the adapter of the best validation (HF <c>load_best_model_at_end</c>). Default false
    /// (the last step's adapter is kept).</summary>
    public bool RestoreBestAtEnd = LoopDefaults.RestoreBestAtEnd;

    /// <summary>How classification is computed. Default <see cref="MLNet.ClassificationMode.Head"/>.</summary>
    public ClassificationMode ClassificationMode = ClassificationMode.Head;

    // ---- generation ----

    /// <summary>Maximum tokens generated per row. Default 50 (the paper's DROP setting).</summary>
    public int MaxNewTokens = 50;

    /// <summary>Greedy decoding (default true); false samples with <see cref="Temperature"/> and <see cref="TopP"/>.</summary>
    public bool Greedy = true;

    /// <summary>Sampling temperature (when not greedy). Default 0.7.</summary>
    public float Temperature = 0.7f;

    /// <summary>Nucleus sampling threshold (when not greedy). Default 0.9.</summary>
    public float TopP = 0.9f;

    /// <summary>transformers' <c>repetition_penalty</c> when a generation model is applied: a token already in the prompt or the
    /// output has its logit divided by this (multiplied when negative). &gt; 1 discourages repetition; default 1 = off.</summary>
    public float RepetitionPenalty = 1f;

    /// <summary>OpenAI's <c>frequency_penalty</c> when a generation model is applied: subtracted once per time a token was
    /// generated. In [−2, 2]; default 0 = off.</summary>
    public float FrequencyPenalty;

    /// <summary>OpenAI's <c>presence_penalty</c> when a generation model is applied: subtracted from every token generated at
    /// least once. In [−2, 2]; default 0 = off.</summary>
    public float PresencePenalty;

    /// <summary>Generation stops at the first of these strings (not included in the output). Default a newline (the paper's).</summary>
    public string[] StopStrings = ["\n"];

    /// <summary>Rows per inference batch in <c>Transform</c>. Default 16.</summary>
    public int InferenceBatchSize = 16;

    // ---- reporting ----

    /// <summary>When set, the training-loss curve is written here as a PNG after <c>Fit</c>.</summary>
    public string? LossCurvePngPath;

    /// <summary>Optional callback receiving one report per optimizer step.</summary>
    public IProgress<QuanTAProgress>? Progress;

    /// <summary>Cancels <c>Fit</c> between micro-batches.</summary>
    public CancellationToken CancellationToken;

    /// <summary>Checks every option and throws an <see cref="ArgumentException"/> naming the first bad one and what is expected.</summary>
    public void Validate()
    {
        static void Check(bool ok, string name, string message)
        {
            if (!ok) throw new ArgumentException($"QuanTAFineTuneOptions.{name}: {message}", name);
        }
        Check(!string.IsNullOrWhiteSpace(BaseModelPath), nameof(BaseModelPath), "the base model folder is required.");
        Check(!string.IsNullOrWhiteSpace(TextColumnName), nameof(TextColumnName), "a text column name is required.");
        Check(MessagesColumnName is null || (MessagesColumnName.Trim().Length > 0 && Task == QuanTATask.TextGeneration), nameof(MessagesColumnName),
            "a conversation column needs Task = TextGeneration and a non-empty name (CLI: --task generation with a .jsonl --train file).");
        Check(MessagesColumnName is null || SecondTextColumnName is null, nameof(SecondTextColumnName), "cannot be combined with MessagesColumnName.");
        if (Task == QuanTATask.TextClassification)
        {
            Check(!string.IsNullOrWhiteSpace(LabelColumnName), nameof(LabelColumnName), "a label column is required for classification.");
            Check(!string.IsNullOrWhiteSpace(ScoreColumnName), nameof(ScoreColumnName), "an output column name is required.");
            Check(!string.IsNullOrWhiteSpace(PredictedLabelColumnName), nameof(PredictedLabelColumnName), "an output column name is required.");
            Check(ScoreColumnName != PredictedLabelColumnName, nameof(PredictedLabelColumnName), "must differ from ScoreColumnName.");
        }
        else
        {
            Check(!string.IsNullOrWhiteSpace(TargetTextColumnName), nameof(TargetTextColumnName), "a target text column is required for generation.");
            Check(!string.IsNullOrWhiteSpace(GeneratedTextColumnName), nameof(GeneratedTextColumnName), "an output column name is required.");
            Check(MaxNewTokens > 0, nameof(MaxNewTokens), $"must be positive (got {MaxNewTokens}).");
            Check(Greedy || Temperature > 0, nameof(Temperature), $"must be positive when sampling (got {Temperature}).");
            Check(Greedy || TopP is > 0 and <= 1, nameof(TopP), $"must be in (0, 1] (got {TopP}).");
            Check(RepetitionPenalty > 0 && float.IsFinite(RepetitionPenalty), nameof(RepetitionPenalty), $"must be positive (1 = off; got {RepetitionPenalty}).");
            Check(FrequencyPenalty is >= -2 and <= 2, nameof(FrequencyPenalty), $"must be in [-2, 2] (0 = off; got {FrequencyPenalty}).");
            Check(PresencePenalty is >= -2 and <= 2, nameof(PresencePenalty), $"must be in [-2, 2] (0 = off; got {PresencePenalty}).");
        }
        // The adapter rules live in the Core configs (one place); their errors come back under this class's field names.
        CheckAdapterConfig(new QuanTAConfig
        {
            Layout = AxisLayout, AxisCount = AxisCount, Pairs = Pairs?.Select(p => new AxisPair(p.Item1, p.Item2)).ToArray(),
            TensorCount = TensorCount, Rank = Rank, Dropout = Dropout,
        }, QuanTAFieldOf);
        CheckAdapterConfig(new LoRAConfig { Rank = LoRARank, Alpha = LoRAAlpha, Dropout = Dropout }, LoRAFieldOf);
        Check(TargetModules is { Length: > 0 } && TargetModules.All(t => !string.IsNullOrWhiteSpace(t)), nameof(TargetModules),
            "give at least one module name suffix (e.g. \"q_proj\"), a \"regex:\" pattern or \"all-linear\".");
        Check(Epochs > 0, nameof(Epochs), $"must be positive (got {Epochs}).");
        Check(BatchSize > 0, nameof(BatchSize), $"must be positive (got {BatchSize}).");
        Check(GradientAccumulationSteps > 0, nameof(GradientAccumulationSteps), $"must be positive (got {GradientAccumulationSteps}).");
        Check(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), $"must be a positive number (got {LearningRate}).");
        Check(WarmupRatio is >= 0 and < 1, nameof(WarmupRatio), $"must be in [0, 1) (got {WarmupRatio}).");
        Check(WeightDecay >= 0, nameof(WeightDecay), $"must be ≥ 0 (got {WeightDecay}).");
        Check(MaxGradNorm >= 0, nameof(MaxGradNorm), $"must be ≥ 0, 0 disables clipping (got {MaxGradNorm}).");
        Check(MaxSequenceLength >= 2, nameof(MaxSequenceLength), $"must be at least 2 (got {MaxSequenceLength}).");
        Check(CheckpointEverySteps >= 0, nameof(CheckpointEverySteps), $"must be ≥ 0, 0 = only at epoch ends (got {CheckpointEverySteps}).");
        Check(CheckpointEverySteps == 0 || CheckpointDirectory is not null, nameof(CheckpointEverySteps), "needs CheckpointDirectory.");
        Check(KeepLastCheckpoints >= 0, nameof(KeepLastCheckpoints), $"must be ≥ 0, 0 keeps all (got {KeepLastCheckpoints}).");
        Check(ResumeFromCheckpoint is null || !string.IsNullOrWhiteSpace(ResumeFromCheckpoint), nameof(ResumeFromCheckpoint),
            "give a checkpoint folder, a folder of checkpoints or \"latest\".");
        Check(ResumeFromCheckpoint != "latest" || CheckpointDirectory is not null, nameof(ResumeFromCheckpoint),
            "\"latest\" needs CheckpointDirectory (the folder to take the newest checkpoint from).");
        Check(EarlyStoppingPatience >= 0, nameof(EarlyStoppingPatience), $"must be ≥ 0, 0 = off (got {EarlyStoppingPatience}).");
        Check(EarlyStoppingPatience == 0 || ValidationSet is not null, nameof(EarlyStoppingPatience), "needs a ValidationSet to watch.");
        Check(EarlyStoppingThreshold >= 0 && double.IsFinite(EarlyStoppingThreshold), nameof(EarlyStoppingThreshold), $"must be ≥ 0 (got {EarlyStoppingThreshold}).");
        Check(ValidateEverySteps >= 0, nameof(ValidateEverySteps), $"must be ≥ 0, 0 = each epoch end (got {ValidateEverySteps}).");
        Check(ValidationMetric != ValidationMetric.Accuracy || Task == QuanTATask.TextClassification, nameof(ValidationMetric),
            "Accuracy is for classification; use Loss for generation.");
        Check(InferenceBatchSize > 0, nameof(InferenceBatchSize), $"must be positive (got {InferenceBatchSize}).");
    }

    static readonly Dictionary<string, string> QuanTAFieldOf = new()
    {
        [nameof(QuanTAConfig.Layout)] = nameof(AxisLayout), [nameof(QuanTAConfig.AxisCount)] = nameof(AxisCount),
        [nameof(QuanTAConfig.Pairs)] = nameof(Pairs), [nameof(QuanTAConfig.TensorCount)] = nameof(TensorCount),
        [nameof(QuanTAConfig.Rank)] = nameof(Rank), [nameof(QuanTAConfig.Dropout)] = nameof(Dropout),
    };

    static readonly Dictionary<string, string> LoRAFieldOf = new()
    {
        [nameof(LoRAConfig.Rank)] = nameof(LoRARank), [nameof(LoRAConfig.Alpha)] = nameof(LoRAAlpha), [nameof(LoRAConfig.Dropout)] = nameof(Dropout),
    };

    /// <summary>Runs a Core adapter config's <c>Validate</c> and re-raises its error ("QuanTAConfig.Rank: must be …", ParamName
    /// Rank) as this class's ("QuanTAFineTuneOptions.Rank: must be …", ParamName Rank), so the CLI can name the flag.</summary>
    static void CheckAdapterConfig(IAdapterConfig config, IReadOnlyDictionary<string, string> fieldOf)
    {
        try { config.Validate(); }
        catch (ArgumentException e) when (e.ParamName is { } p && fieldOf.TryGetValue(p, out var field))
        {
            var message = e.Message;
            var suffix = $" (Parameter '{p}')";
            if (message.EndsWith(suffix, StringComparison.Ordinal)) message = message[..^suffix.Length];
            var prefix = $"{config.GetType().Name}.{p}: ";
            if (message.StartsWith(prefix, StringComparison.Ordinal)) message = message[prefix.Length..];
            throw new ArgumentException($"QuanTAFineTuneOptions.{field}: {message}", field, e);
        }
    }

    /// <summary>A shallow copy (the catalog keeps its own so later edits by the caller do not change a running Fit).</summary>
    public QuanTAFineTuneOptions Clone() => (QuanTAFineTuneOptions)MemberwiseClone();
}
