using System.CommandLine;
using System.Globalization;
using QuanTA.Core.Training;
using QuanTA.MLNet;

namespace QuanTA.Cli.Commands;

/// <summary>
/// <c>quanta finetune</c>'s flags and the library options they set: <see cref="FlagOfProperty"/> is the one map from a
/// <see cref="QuanTAFineTuneOptions"/> field to its flag (options are read through it, and library errors reworded with it);
/// <see cref="FieldsWithoutFlag"/> lists the fields the verb sets otherwise, with the reason.
/// </summary>
public static partial class FineTuneCommand
{
    /// <summary>
    /// The options the parsed flags describe, each flag read through <see cref="FlagOfProperty"/> (so a field without its flag
    /// fails here, and in the tests). The data-dependent fields are set afterwards by the verb: <c>ValidationSet</c> (loaded from
    /// <c>--validation</c>), the conversation column a .jsonl file implies, the progress printer and Ctrl+C's token.
    /// </summary>
    internal static QuanTAFineTuneOptions OptionsFrom(ParseResult r)
    {
        T Get<T>(string property) => r.GetValue<T>(FlagOfProperty[property])!;
        T Enum<T>(string property) where T : struct, System.Enum => EnumFlag.Parse<T>(FlagOfProperty[property], Get<string>(property));
        return new QuanTAFineTuneOptions
        {
            Task = ParseTask(Get<string>(nameof(QuanTAFineTuneOptions.Task))),
            BaseModelPath = Get<string>(nameof(QuanTAFineTuneOptions.BaseModelPath)),
            TextColumnName = Get<string>(nameof(QuanTAFineTuneOptions.TextColumnName)),
            SecondTextColumnName = Get<string?>(nameof(QuanTAFineTuneOptions.SecondTextColumnName)),
            LabelColumnName = Get<string>(nameof(QuanTAFineTuneOptions.LabelColumnName)),
            TargetTextColumnName = Get<string>(nameof(QuanTAFineTuneOptions.TargetTextColumnName)),
            MessagesColumnName = Get<string?>(nameof(QuanTAFineTuneOptions.MessagesColumnName)),
            ChatTemplate = Get<string?>(nameof(QuanTAFineTuneOptions.ChatTemplate)),
            ScoreColumnName = Get<string>(nameof(QuanTAFineTuneOptions.ScoreColumnName)),
            PredictedLabelColumnName = Get<string>(nameof(QuanTAFineTuneOptions.PredictedLabelColumnName)),
            GeneratedTextColumnName = Get<string>(nameof(QuanTAFineTuneOptions.GeneratedTextColumnName)),
            ClassificationMode = Enum<ClassificationMode>(nameof(QuanTAFineTuneOptions.ClassificationMode)),
            Adapter = Enum<AdapterMethod>(nameof(QuanTAFineTuneOptions.Adapter)),
            AxisLayout = Get<string?>(nameof(QuanTAFineTuneOptions.AxisLayout)) is { } l
                ? Integers(FlagOfProperty[nameof(QuanTAFineTuneOptions.AxisLayout)], l, "16,8,8,4") : null,
            AxisCount = Get<int>(nameof(QuanTAFineTuneOptions.AxisCount)),
            Pairs = Get<string?>(nameof(QuanTAFineTuneOptions.Pairs)) is { } p ? ParsePairs(p) : null,
            TensorCount = Get<int?>(nameof(QuanTAFineTuneOptions.TensorCount)),
            Rank = Get<int?>(nameof(QuanTAFineTuneOptions.Rank)),
            TrainingPath = Enum<QuanTA.Core.Training.QuanTATrainingPath>(nameof(QuanTAFineTuneOptions.TrainingPath)),
            GradientCheckpointing = Get<bool>(nameof(QuanTAFineTuneOptions.GradientCheckpointing)),
            InitialAdapterPath = Get<string?>(nameof(QuanTAFineTuneOptions.InitialAdapterPath)),
            BaseQuantization = Enum<QuanTA.Core.Quantization.BaseQuantization>(nameof(QuanTAFineTuneOptions.BaseQuantization)),
            TargetModules = Get<string>(nameof(QuanTAFineTuneOptions.TargetModules))
                .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            Dropout = Get<float>(nameof(QuanTAFineTuneOptions.Dropout)),
            LoRARank = Get<int>(nameof(QuanTAFineTuneOptions.LoRARank)),
            LoRAAlpha = Get<float>(nameof(QuanTAFineTuneOptions.LoRAAlpha)),
            Epochs = Get<int>(nameof(QuanTAFineTuneOptions.Epochs)),
            BatchSize = Get<int>(nameof(QuanTAFineTuneOptions.BatchSize)),
            GradientAccumulationSteps = Get<int>(nameof(QuanTAFineTuneOptions.GradientAccumulationSteps)),
            LearningRate = Get<double>(nameof(QuanTAFineTuneOptions.LearningRate)),
            Schedule = Enum<LearningRateSchedule>(nameof(QuanTAFineTuneOptions.Schedule)),
            WarmupRatio = Get<double>(nameof(QuanTAFineTuneOptions.WarmupRatio)),
            WeightDecay = Get<double>(nameof(QuanTAFineTuneOptions.WeightDecay)),
            MaxGradNorm = Get<double>(nameof(QuanTAFineTuneOptions.MaxGradNorm)),
            MaxSequenceLength = Get<int>(nameof(QuanTAFineTuneOptions.MaxSequenceLength)),
            Truncation = Enum<TruncationPolicy>(nameof(QuanTAFineTuneOptions.Truncation)),
            Seed = Get<int?>(nameof(QuanTAFineTuneOptions.Seed)),
            CheckpointDirectory = Get<string?>(nameof(QuanTAFineTuneOptions.CheckpointDirectory)),
            CheckpointEverySteps = Get<int>(nameof(QuanTAFineTuneOptions.CheckpointEverySteps)),
            KeepLastCheckpoints = Get<int>(nameof(QuanTAFineTuneOptions.KeepLastCheckpoints)),
            ResumeFromCheckpoint = Get<string?>(nameof(QuanTAFineTuneOptions.ResumeFromCheckpoint)),
            EarlyStoppingPatience = Get<int>(nameof(QuanTAFineTuneOptions.EarlyStoppingPatience)),
            EarlyStoppingThreshold = Get<double>(nameof(QuanTAFineTuneOptions.EarlyStoppingThreshold)),
            ValidateEverySteps = Get<int>(nameof(QuanTAFineTuneOptions.ValidateEverySteps)),
            ValidationMetric = Enum<ValidationMetric>(nameof(QuanTAFineTuneOptions.ValidationMetric)),
            RestoreBestAtEnd = Get<bool>(nameof(QuanTAFineTuneOptions.RestoreBestAtEnd)),
            MaxNewTokens = Get<int>(nameof(QuanTAFineTuneOptions.MaxNewTokens)),
            Greedy = Get<bool>(nameof(QuanTAFineTuneOptions.Greedy)),
            Temperature = Get<float>(nameof(QuanTAFineTuneOptions.Temperature)),
            TopP = Get<float>(nameof(QuanTAFineTuneOptions.TopP)),
            RepetitionPenalty = Get<float>(nameof(QuanTAFineTuneOptions.RepetitionPenalty)),
            FrequencyPenalty = Get<float>(nameof(QuanTAFineTuneOptions.FrequencyPenalty)),
            PresencePenalty = Get<float>(nameof(QuanTAFineTuneOptions.PresencePenalty)),
            StopStrings = Get<string[]>(nameof(QuanTAFineTuneOptions.StopStrings)).Select(UnescapeStop).ToArray(),
            InferenceBatchSize = Get<int>(nameof(QuanTAFineTuneOptions.InferenceBatchSize)),
            LossCurvePngPath = Get<string?>(nameof(QuanTAFineTuneOptions.LossCurvePngPath)),
        };
    }

    /// <summary>
    /// <see cref="QuanTAFineTuneOptions"/> fields the verb has no flag for, each with the reason (the option-coverage test
    /// fails for any other field without a flag in <see cref="FlagOfProperty"/>).
    /// </summary>
    internal static readonly IReadOnlyDictionary<string, string> FieldsWithoutFlag = new Dictionary<string, string>
    {
        [nameof(QuanTAFineTuneOptions.Communicator)] = "an in-process object: the verb reads the launcher's environment (torchrun, srun, mpirun) or starts its own ranks with --nproc-per-node",
        [nameof(QuanTAFineTuneOptions.Progress)] = "a callback: the verb prints one progress line per step to stderr",
        [nameof(QuanTAFineTuneOptions.CancellationToken)] = "the verb cancels on Ctrl+C (and saves a checkpoint with --checkpoint-dir)",
    };

    /// <summary>"0:1,2:3" → [(0,1),(2,3)]; the rules on the axes are QuanTAConfig's (checked with the other options).</summary>
    static (int, int)[] ParsePairs(string text)
    {
        var flag = FlagOfProperty[nameof(QuanTAFineTuneOptions.Pairs)];
        return text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(pair =>
        {
            var axes = pair.Split(':', StringSplitOptions.TrimEntries);
            return axes.Length == 2 && int.TryParse(axes[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out var m) &&
                   int.TryParse(axes[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? (m, n)
                : throw new ArgumentException($"{flag} '{text}': '{pair}' is not a pair of axes m:n such as 0:1 (write pairs as 0:1,2:3).");
        }).ToArray();
    }

    static int[] Integers(string flag, string text, string example)
    {
        try { return text.Split(',').Select(s => int.Parse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture)).ToArray(); }
        catch (FormatException) { throw new ArgumentException($"{flag} '{text}' is not a list of integers such as {example}."); }
    }

    /// <summary>A stop string as typed: the two-character escapes \n, \t, \r and \\ become newline, tab, return and a backslash.</summary>
    static string UnescapeStop(string text)
    {
        var result = new System.Text.StringBuilder(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] != '\\' || i + 1 == text.Length) { result.Append(text[i]); continue; }
            switch (text[++i])
            {
                case 'n': result.Append('\n'); break;
                case 't': result.Append('\t'); break;
                case 'r': result.Append('\r'); break;
                case '\\': result.Append('\\'); break;
                default: result.Append('\\').Append(text[i]); break;
            }
        }
        return result.ToString();
    }

    /// <summary>
    /// The one map from <see cref="QuanTAFineTuneOptions"/> fields to the flags above that set them: library errors name the
    /// field (ArgumentException.ParamName and "QuanTAFineTuneOptions.X" in the message); the CLI shows the flag instead.
    /// </summary>
    internal static readonly IReadOnlyDictionary<string, string> FlagOfProperty = new Dictionary<string, string>
    {
        [nameof(QuanTAFineTuneOptions.Task)] = "--task",
        [nameof(QuanTAFineTuneOptions.BaseModelPath)] = "--base-model",
        [nameof(QuanTAFineTuneOptions.MessagesColumnName)] = "--messages-column",
        [nameof(QuanTAFineTuneOptions.ChatTemplate)] = "--chat-template",
        [nameof(QuanTAFineTuneOptions.ValidationSet)] = "--validation",
        [nameof(QuanTAFineTuneOptions.TextColumnName)] = "--text-column",
        [nameof(QuanTAFineTuneOptions.SecondTextColumnName)] = "--second-text-column",
        [nameof(QuanTAFineTuneOptions.LabelColumnName)] = "--label-column",
        [nameof(QuanTAFineTuneOptions.TargetTextColumnName)] = "--target-column",
        [nameof(QuanTAFineTuneOptions.ClassificationMode)] = "--classification-mode",
        [nameof(QuanTAFineTuneOptions.Adapter)] = "--adapter",
        [nameof(QuanTAFineTuneOptions.AxisLayout)] = "--axis-layout",
        [nameof(QuanTAFineTuneOptions.AxisCount)] = "--axis-count",
        [nameof(QuanTAFineTuneOptions.TargetModules)] = "--target-modules",
        [nameof(QuanTAFineTuneOptions.Dropout)] = "--dropout",
        [nameof(QuanTAFineTuneOptions.LoRARank)] = "--lora-rank",
        [nameof(QuanTAFineTuneOptions.LoRAAlpha)] = "--lora-alpha",
        [nameof(QuanTAFineTuneOptions.Epochs)] = "--epochs",
        [nameof(QuanTAFineTuneOptions.BatchSize)] = "--batch-size",
        [nameof(QuanTAFineTuneOptions.GradientAccumulationSteps)] = "--grad-accum",
        [nameof(QuanTAFineTuneOptions.LearningRate)] = "--lr",
        [nameof(QuanTAFineTuneOptions.Schedule)] = "--schedule",
        [nameof(QuanTAFineTuneOptions.WarmupRatio)] = "--warmup-ratio",
        [nameof(QuanTAFineTuneOptions.WeightDecay)] = "--weight-decay",
        [nameof(QuanTAFineTuneOptions.MaxGradNorm)] = "--max-grad-norm",
        [nameof(QuanTAFineTuneOptions.MaxSequenceLength)] = "--max-seq-len",
        [nameof(QuanTAFineTuneOptions.Seed)] = "--seed",
        [nameof(QuanTAFineTuneOptions.LossCurvePngPath)] = "--loss-curve",
        [nameof(QuanTAFineTuneOptions.CheckpointDirectory)] = "--checkpoint-dir",
        [nameof(QuanTAFineTuneOptions.CheckpointEverySteps)] = "--checkpoint-every",
        [nameof(QuanTAFineTuneOptions.KeepLastCheckpoints)] = "--keep-checkpoints",
        [nameof(QuanTAFineTuneOptions.ResumeFromCheckpoint)] = "--resume",
        [nameof(QuanTAFineTuneOptions.EarlyStoppingPatience)] = "--early-stopping-patience",
        [nameof(QuanTAFineTuneOptions.ValidationMetric)] = "--validation-metric",
        [nameof(QuanTAFineTuneOptions.TrainingPath)] = "--training-path",
        [nameof(QuanTAFineTuneOptions.GradientCheckpointing)] = "--gradient-checkpointing",
        [nameof(QuanTAFineTuneOptions.InitialAdapterPath)] = "--init-adapter",
        [nameof(QuanTAFineTuneOptions.BaseQuantization)] = "--quantize",
        [nameof(QuanTAFineTuneOptions.ScoreColumnName)] = "--score-column",
        [nameof(QuanTAFineTuneOptions.PredictedLabelColumnName)] = "--predicted-label-column",
        [nameof(QuanTAFineTuneOptions.GeneratedTextColumnName)] = "--generated-text-column",
        [nameof(QuanTAFineTuneOptions.Pairs)] = "--pairs",
        [nameof(QuanTAFineTuneOptions.TensorCount)] = "--tensor-count",
        [nameof(QuanTAFineTuneOptions.Rank)] = "--rank",
        [nameof(QuanTAFineTuneOptions.Truncation)] = "--truncation",
        [nameof(QuanTAFineTuneOptions.EarlyStoppingThreshold)] = "--early-stopping-threshold",
        [nameof(QuanTAFineTuneOptions.ValidateEverySteps)] = "--validate-every",
        [nameof(QuanTAFineTuneOptions.RestoreBestAtEnd)] = "--restore-best",
        [nameof(QuanTAFineTuneOptions.MaxNewTokens)] = "--max-new-tokens",
        [nameof(QuanTAFineTuneOptions.Greedy)] = "--greedy",
        [nameof(QuanTAFineTuneOptions.Temperature)] = "--temperature",
        [nameof(QuanTAFineTuneOptions.TopP)] = "--top-p",
        [nameof(QuanTAFineTuneOptions.RepetitionPenalty)] = "--repetition-penalty",
        [nameof(QuanTAFineTuneOptions.FrequencyPenalty)] = "--frequency-penalty",
        [nameof(QuanTAFineTuneOptions.PresencePenalty)] = "--presence-penalty",
        [nameof(QuanTAFineTuneOptions.StopStrings)] = "--stop-strings",
        [nameof(QuanTAFineTuneOptions.InferenceBatchSize)] = "--inference-batch-size",
    };

    /// <summary>
    /// Rewords an option error for <c>quanta finetune</c>: <see cref="DescribeWithFlags(Exception, IReadOnlyDictionary{string, string})"/>
    /// with <see cref="FlagOfProperty"/>.
    /// </summary>
    internal static string? DescribeWithFlags(Exception e) => DescribeWithFlags(e, FlagOfProperty);

    /// <summary>
    /// Rewords an option error for the command line: an <see cref="ArgumentException"/> whose ParamName is a key of
    /// <paramref name="flagOfParameter"/> (a <see cref="QuanTAFineTuneOptions"/> field, or a library method's parameter such as a
    /// sweep's <c>maxTrials</c>) gets the flags in place of the names ("QuanTAFineTuneOptions.Epochs: must be positive" →
    /// "--epochs must be positive"); a message that names no key gets its flag in front ("--trials: The trial budget must be at
    /// least 1."). Any other exception keeps its message (null). Every verb that sets library options rewords through this one function.
    /// </summary>
    internal static string? DescribeWithFlags(Exception e, IReadOnlyDictionary<string, string> flagOfParameter)
    {
        if (e is not ArgumentException { ParamName: { } param } a || !flagOfParameter.TryGetValue(param, out var flag)) return null;
        var message = a.Message.Replace($" (Parameter '{param}')", "", StringComparison.Ordinal);   // also inside "…\nActual value was 0."
        var reference = new System.Text.RegularExpressions.Regex(
            @"\b(?:QuanTAFineTuneOptions\.)?(" + string.Join('|', flagOfParameter.Keys.OrderByDescending(k => k.Length)
                .Select(System.Text.RegularExpressions.Regex.Escape)) + @")\b(: )?",
            System.Text.RegularExpressions.RegexOptions.CultureInvariant);
        var reworded = reference.Replace(message, m => flagOfParameter[m.Groups[1].Value] + (m.Groups[2].Success ? " " : ""));
        return reworded.Contains(flag, StringComparison.Ordinal) ? reworded : $"{flag}: {reworded}";
    }

    /// <summary>The command-line spelling of a task (<see cref="ParseTask"/> reads it back).</summary>
    internal static string FormatTask(QuanTATask task) => task == QuanTATask.TextClassification ? "classification" : "generation";

    internal static QuanTATask ParseTask(string s) => s.ToLowerInvariant() switch
    {
        "classification" or "textclassification" => QuanTATask.TextClassification,
        "generation" or "textgeneration" => QuanTATask.TextGeneration,
        _ => throw new ArgumentException($"--task '{s}' is not classification or generation."),
    };
}
