using QuanTA.Core.Distributed;
using QuanTA.Core.Runtime;
using System.CommandLine;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Training;
using QuanTA.MLNet;

namespace QuanTA.Cli.Commands;

/// <summary>
/// <c>quanta finetune</c>: fine-tune a QuanTA (or LoRA) adapter on a TSV/CSV file and save an ML.NET model .zip — the same
/// pipeline as the library's <c>mlContext.Transforms.QuanTAFineTune(...)</c> (classification: MapValueToKey → QuanTA →
/// MapKeyToValue).
/// </summary>
public static partial class FineTuneCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var d = new QuanTAFineTuneOptions();   // every default below is read from here (OptionDefaultsTests compares them)
        var task = new Option<string>("--task") { Description = "classification or generation.", DefaultValueFactory = _ => FormatTask(d.Task) };
        var baseModel = new Option<string>("--base-model") { Description = "Hugging Face model folder (…ForSequenceClassification for classification).", Required = true };
        var train = new Option<string>("--train") { Description = "Training data: .tsv or .csv with a header row, or (generation) chat / instruction data as .jsonl: {\"messages\": [...]}, {\"prompt\", \"completion\"} or Alpaca {\"instruction\", \"input\", \"output\"}.", Required = true };
        var dataFormat = new Option<string>("--data-format") { Description = "Layout of a .jsonl file: auto (from the first line), messages, prompt-completion or alpaca.", DefaultValueFactory = _ => "auto" };
        var asChat = new Option<bool>("--as-chat") { Description = "Train prompt-completion / Alpaca .jsonl rows as conversations (user → assistant) through the chat template instead of as plain prompt + completion text." };
        var messagesCol = new Option<string?>("--messages-column") { Description = "Conversation column (JSON array of {role, content}) of a .tsv/.csv file; a messages .jsonl file sets it by itself." };
        var chatTemplate = new Option<string?>("--chat-template") { Description = "Chat template for conversations: a built-in name (llama2, llama3, mistral, chatml, qwen2), a .jinja file or the template text (default: the base model's chat_template)." };
        var validation = new Option<string?>("--validation") { Description = "Optional validation data (same columns)." };
        var output = new Option<string>("--output") { Description = "Where to write the ML.NET model (.zip).", Required = true };
        var textCol = new Option<string>("--text-column") { Description = "Text (prompt) column.", DefaultValueFactory = _ => d.TextColumnName };
        var text2Col = new Option<string?>("--second-text-column") { Description = "Optional second text column (sentence pairs)." };
        var labelCol = new Option<string>("--label-column") { Description = "Label column (classification).", DefaultValueFactory = _ => d.LabelColumnName };
        var targetCol = new Option<string>("--target-column") { Description = "Target text column (generation).", DefaultValueFactory = _ => d.TargetTextColumnName };
        var scoreCol = new Option<string>("--score-column") { Description = "Output column of class probabilities (classification).", DefaultValueFactory = _ => d.ScoreColumnName };
        var predictedCol = new Option<string>("--predicted-label-column") { Description = "Output column of the predicted label (classification).", DefaultValueFactory = _ => d.PredictedLabelColumnName };
        var generatedCol = new Option<string>("--generated-text-column") { Description = "Output column of the generated text (generation).", DefaultValueFactory = _ => d.GeneratedTextColumnName };
        var mode = new Option<string>("--classification-mode") { Description = "head (a …ForSequenceClassification base) or verbalizer (a causal LM scores each label name).", DefaultValueFactory = _ => EnumFlag.Format(d.ClassificationMode) };
        var adapter = new Option<string>("--adapter") { Description = "quanta or lora.", DefaultValueFactory = _ => EnumFlag.Format(d.Adapter) };
        var layout = new Option<string?>("--axis-layout") { Description = "QuanTA axis layout, e.g. 16,8,8,4 (default: derived per layer)." };
        var axisCount = new Option<int>("--axis-count") { Description = "Axes when the layout is derived.", DefaultValueFactory = _ => d.AxisCount };
        var pairs = new Option<string?>("--pairs") { Description = "QuanTA: the axis pairs that get a tensor, in application order, as m:n (0-based, m < n), e.g. 0:1,2:3,0:3 (default: all N(N−1)/2 pairs in the official order)." };
        var tensorCount = new Option<int?>("--tensor-count") { Description = "QuanTA: number of tensors, the first K pairs of the official order (default: all N(N−1)/2; ignored with --pairs)." };
        var rank = new Option<int?>("--rank") { Description = "QuanTA: per-tensor rank r, each tensor a k×r · r×k product (default: full-rank tensors, the paper's)." };
        var targets = new Option<string>("--target-modules") { Description = "Comma-separated module suffixes (e.g. q_proj,v_proj), regex:<pattern> (or re:<pattern>; whole-name match) or all-linear.", DefaultValueFactory = _ => string.Join(',', d.TargetModules) };
        var dropout = new Option<float>("--dropout") { Description = "Adapter input dropout.", DefaultValueFactory = _ => d.Dropout };
        var loraRank = new Option<int>("--lora-rank") { Description = "LoRA rank.", DefaultValueFactory = _ => d.LoRARank };
        var loraAlpha = new Option<float>("--lora-alpha") { Description = "LoRA alpha.", DefaultValueFactory = _ => d.LoRAAlpha };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the data.", DefaultValueFactory = _ => d.Epochs };
        var batch = new Option<int>("--batch-size") { Description = "Rows per micro-batch.", DefaultValueFactory = _ => d.BatchSize };
        var accum = new Option<int>("--grad-accum") { Description = "Micro-batches per optimizer step.", DefaultValueFactory = _ => d.GradientAccumulationSteps };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => d.LearningRate };
        var schedule = new Option<string>("--schedule") { Description = $"{EnumFlag.Choices<LearningRateSchedule>()}.", DefaultValueFactory = _ => EnumFlag.Format(d.Schedule) };
        var warmup = new Option<double>("--warmup-ratio") { Description = "Warm-up fraction of the steps.", DefaultValueFactory = _ => d.WarmupRatio };
        var decay = new Option<double>("--weight-decay") { Description = "AdamW weight decay.", DefaultValueFactory = _ => d.WeightDecay };
        var clip = new Option<double>("--max-grad-norm") { Description = "Gradient clipping (0 = off).", DefaultValueFactory = _ => d.MaxGradNorm };
        var maxLen = new Option<int>("--max-seq-len") { Description = "Tokens per row.", DefaultValueFactory = _ => d.MaxSequenceLength };
        var truncation = new Option<string>("--truncation") { Description = $"Rows longer than --max-seq-len: {EnumFlag.Choices<TruncationPolicy>()} (fail naming the row).", DefaultValueFactory = _ => EnumFlag.Format(d.Truncation) };
        var seed = new Option<int?>("--seed") { Description = $"Random seed (default {TrainerOptions.DefaultSeed})." };
        var lossCurve = new Option<string?>("--loss-curve") { Description = "Write the training-loss curve to this PNG." };
        var export = new Option<string?>("--export-adapter") { Description = "Also export the adapter as safetensors + JSON here." };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var ckptDir = new Option<string?>("--checkpoint-dir") { Description = "Write checkpoints here (each epoch, every --checkpoint-every steps, and on Ctrl+C)." };
        var ckptEvery = new Option<int>("--checkpoint-every") { Description = "Checkpoint every N optimizer steps (0 = each epoch end only).", DefaultValueFactory = _ => d.CheckpointEverySteps };
        var keepCkpt = new Option<int>("--keep-checkpoints") { Description = "Keep the newest K checkpoints (0 = all).", DefaultValueFactory = _ => d.KeepLastCheckpoints };
        var resume = new Option<string?>("--resume") { Description = "Resume from a checkpoint folder, a folder of checkpoints, or 'latest' (newest valid one in --checkpoint-dir; none yet: start from the beginning)." };
        var patience = new Option<int>("--early-stopping-patience") { Description = "Stop after N validations without improvement (needs --validation; 0 = off).", DefaultValueFactory = _ => d.EarlyStoppingPatience };
        var threshold = new Option<double>("--early-stopping-threshold") { Description = "Smallest change of the validation metric that counts as an improvement.", DefaultValueFactory = _ => d.EarlyStoppingThreshold };
        var validateEvery = new Option<int>("--validate-every") { Description = "Validate every N optimizer steps (0 = at each epoch end).", DefaultValueFactory = _ => d.ValidateEverySteps };
        var valMetric = new Option<string>("--validation-metric") { Description = "loss or accuracy (classification).", DefaultValueFactory = _ => EnumFlag.Format(d.ValidationMetric) };
        var restoreBest = new Option<bool>("--restore-best") { Description = "At the end, put back the adapter of the best validation (true or false).", DefaultValueFactory = _ => d.RestoreBestAtEnd };
        var trainingPath = new Option<string>("--training-path") { Description = "How QuanTA layers are computed in training: auto, per-layer (each adapter on its own), stacked (one batched chain for all layers, W0 + ΔW and the chain's graph kept per layer for the backward; fastest on a GPU), stacked-recompute (the batched chain without a graph, only W0 + ΔW kept per layer, the chain re-run in the backward a few layers at a time), layerwise (W0 + ΔW rebuilt per layer in the backward; nothing weight-sized kept) or layerwise-uncached (layerwise, and the frozen chain rebuilt too): same results, less memory and fewer tokens/s from stacked down (figures: docs/training-paths.md). auto: per-layer on the CPU; on a GPU the first of stacked, stacked-recompute and layerwise whose extra memory fits in half of the free GPU memory. The choice is logged.", DefaultValueFactory = _ => EnumFlag.Format(d.TrainingPath) };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Generation: most tokens generated per row when the model is applied.", DefaultValueFactory = _ => d.MaxNewTokens };
        var greedy = new Option<bool>("--greedy") { Description = "Generation: greedy decoding (true) or sampling with --temperature and --top-p (false).", DefaultValueFactory = _ => d.Greedy };
        var temperature = new Option<float>("--temperature") { Description = "Generation: sampling temperature (with --greedy false).", DefaultValueFactory = _ => d.Temperature };
        var topP = new Option<float>("--top-p") { Description = "Generation: nucleus sampling threshold (with --greedy false).", DefaultValueFactory = _ => d.TopP };
        var repetitionPenalty = new Option<float>("--repetition-penalty") { Description = "Generation: transformers' repetition_penalty when the model is applied (> 1 discourages repeats; 1 = off).", DefaultValueFactory = _ => d.RepetitionPenalty };
        var frequencyPenalty = new Option<float>("--frequency-penalty") { Description = "Generation: OpenAI's frequency_penalty when the model is applied, in [-2, 2] (0 = off).", DefaultValueFactory = _ => d.FrequencyPenalty };
        var presencePenalty = new Option<float>("--presence-penalty") { Description = "Generation: OpenAI's presence_penalty when the model is applied, in [-2, 2] (0 = off).", DefaultValueFactory = _ => d.PresencePenalty };
        var stopStrings = new Option<string[]>("--stop-strings") { Description = @"Generation: stop at this string (repeatable; \n, \t and \\ are read as escapes; default \n).", DefaultValueFactory = _ => d.StopStrings };
        var initAdapter = new Option<string?>("--init-adapter") { Description = "Start the adapters from a PEFT adapter folder (quanta export --format peft, or PEFT's save_pretrained for LoRA) instead of a fresh initialization; the adapter flags must describe the same adapter (checked before training)." };
        var gradientCheckpointing = new Option<bool>("--gradient-checkpointing") { Description = "Activation checkpointing of the decoder layers while training (as transformers' gradient_checkpointing_enable()): each layer keeps only its input and runs again in the backward pass; less memory, one more forward per step, same results.", DefaultValueFactory = _ => d.GradientCheckpointing };
        var quantize = new Option<string>("--quantize") { Description = "Store the frozen base's decoder linear weights as none (compute dtype), int8 (per-row absmax) or nf4 (QLoRA's 4-bit NormalFloat, double-quantized; about a quarter of bf16). Embeddings, norms and the head stay unquantized; a bitsandbytes -bnb-4bit folder keeps its NF4 weights with nf4.", DefaultValueFactory = _ => EnumFlag.Format(d.BaseQuantization) };
        var inferenceBatch = new Option<int>("--inference-batch-size") { Description = "Rows per batch when the model is applied.", DefaultValueFactory = _ => d.InferenceBatchSize };
        var nproc = new Option<int>("--nproc-per-node") { Description = "Data-parallel: start N local ranks (one per GPU, NCCL), like torchrun. Under torchrun/srun/mpirun leave it out: RANK/WORLD_SIZE/… are read from the environment. QUANTA_DIST_TIMEOUT_S bounds every wait (default 600); collectives are queued and a watchdog ends a stuck rank (QUANTA_NCCL_BLOCKING_WAIT=1: each collective waits and throws on a timeout instead).", DefaultValueFactory = _ => 1 };
        var cmd = new Command("finetune", "Fine-tune a QuanTA/LoRA adapter on TSV/CSV data and save an ML.NET model .zip.")
        {
            task, baseModel, train, dataFormat, asChat, messagesCol, chatTemplate, validation, output, textCol, text2Col, labelCol, targetCol,
            scoreCol, predictedCol, generatedCol, mode, adapter, layout, axisCount, pairs, tensorCount, rank, targets, dropout,
            loraRank, loraAlpha, epochs, batch, accum, lr, schedule, warmup, decay, clip, maxLen, truncation, seed, lossCurve, export, device,
            ckptDir, ckptEvery, keepCkpt, resume, patience, threshold, validateEvery, valMetric, restoreBest, trainingPath,
            maxNew, greedy, temperature, topP, repetitionPenalty, frequencyPenalty, presencePenalty, stopStrings, inferenceBatch, quantize, gradientCheckpointing, initAdapter, nproc,
        };
        cmd.SetAction(r => CliRun.Run(describe: DescribeWithFlags, body: () =>
        {
            // --nproc-per-node N (outside a launcher): start N ranks of this same command with the torchrun environment.
            if (r.GetValue(nproc) > 1 && ProcessGroupOptions.FromEnvironment().WorldSize == 1)
                return LaunchRanks(r.GetValue(nproc));
            // Ctrl+C: finish the current micro-batch, save the last completed step (with --checkpoint-dir) and stop.
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                if (cts.IsCancellationRequested) return;                  // a second Ctrl+C kills the process
                e.Cancel = true;
                Console.Error.WriteLine("Ctrl+C: stopping after the current step" + (r.GetValue(ckptDir) is null ? " (no --checkpoint-dir: nothing will be saved)…" : " and saving a checkpoint…"));
                cts.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            try { return Fit(r, cts.Token); }
            catch (OperationCanceledException e) when (cts.IsCancellationRequested)
            {
                Console.Error.WriteLine($"cancelled: {e.Message}");
                if (r.GetValue(ckptDir) is { } dir)
                    Console.Error.WriteLine($"To continue, run the same command with --resume latest (or --resume {Quote(Path.GetFullPath(dir))}).");
                return 130;
            }
            finally { Console.CancelKeyPress -= onCancel; }
        }));
        return cmd;

        int Fit(ParseResult r, CancellationToken token)
        {
            // Before any training: a model that cannot be saved would lose the whole run.
            CheckOutputsWritable(r.GetValue(output)!, r.GetValue(export), r.GetValue(lossCurve));
            var o = OptionsFrom(r);
            o.CancellationToken = token;
            o.Progress = new SyncProgress(p => Console.Error.WriteLine(
                $"epoch {p.Epoch + 1} step {p.Step}/{p.TotalSteps} loss {p.Loss:F4} lr {p.LearningRate:G3} tokens/s {p.TokensPerSecond:F0}" +
                (p.ValidationLoss is double v ? $" validation {r.GetValue(valMetric)} {v:F4}" : "")));
            var ml = CliRun.Context(r.GetValue(device)!, r.GetValue(seed) ?? TrainerOptions.DefaultSeed);
            var beforeData = o.Clone();                                   // the options as the flags set them, before a file's layout adds to them
            var data = TextData.Load(ml, r.GetValue(train)!, o, r.GetValue(dataFormat)!, r.GetValue(asChat));
            CheckData(data, "--train", r.GetValue(train)!, o, isTraining: true);
            if (r.GetValue(validation) is { } vPath)
            {
                var vo = beforeData.Clone();
                o.ValidationSet = TextData.Load(ml, vPath, vo, r.GetValue(dataFormat)!, r.GetValue(asChat));
                CheckData(o.ValidationSet, "--validation", vPath, vo, isTraining: false);
                if (vo.MessagesColumnName != o.MessagesColumnName)
                    throw new ArgumentException($"--validation '{vPath}' is read {(vo.MessagesColumnName is null ? "as prompt + completion" : "as conversations")} but " +
                        $"--train as {(o.MessagesColumnName is null ? "prompt + completion" : "conversations")}: give both files the same layout (or pass --as-chat).");
            }
            if (o.ValidationSet is not null && o.Task == QuanTATask.TextClassification)   // same key dictionary as the training data
            {
                var toKey = ml.Transforms.Conversion.MapValueToKey(o.LabelColumnName).Fit(data);
                CheckValidationLabels(o.ValidationSet, r.GetValue(validation)!, o.LabelColumnName, KeyNames(toKey, data.Schema, o.LabelColumnName));
                // rows whose label the training data never had map to the missing key: they leave the validation set (warned above)
                o.ValidationSet = ml.Data.FilterRowsByMissingValues(toKey.Transform(o.ValidationSet), o.LabelColumnName);
            }
            var estimator = Pipeline(ml, o);
            using var model = new DisposableChain(estimator.Fit(data));
            if (ProcessGroupOptions.FromEnvironment().Rank != 0) return 0;   // data parallel: rank 0 alone writes the model
            ml.Model.SaveAtomically(model.Chain, data.Schema, r.GetValue(output)!);   // temp file + rename: the old zip survives a failure
            if (r.GetValue(export) is { } exportPath) model.QuanTA.ExportAdapter(exportPath);
            Console.Error.WriteLine($"saved {r.GetValue(output)} ({model.QuanTA.TrainableParameterCount:N0} trainable parameters, " +
                $"final training loss {model.QuanTA.TrainingLosses.LastOrDefault():F4})");
            return 0;
        }
    }

    /// <summary>
    /// Checks a loaded data file before anything is fitted: every column the flags name must be in it (else the message lists
    /// the file's columns and the flag to change), it must have rows, and training data for classification at least 2 classes.
    /// </summary>
    static void CheckData(IDataView data, string fileFlag, string path, QuanTAFineTuneOptions o, bool isTraining)
    {
        var columns = data.Schema.Where(c => !c.IsHidden).Select(c => c.Name).ToList();
        var needed = new List<(string Column, string Property, string Role)>
        {
            o.MessagesColumnName is { } mc ? (mc, nameof(o.MessagesColumnName), "conversation") : (o.TextColumnName, nameof(o.TextColumnName), "text"),
        };
        if (o.SecondTextColumnName is { } t2) needed.Add((t2, nameof(o.SecondTextColumnName), "second text"));
        if (o.Task == QuanTATask.TextClassification) needed.Add((o.LabelColumnName, nameof(o.LabelColumnName), "label"));
        else if (o.MessagesColumnName is null) needed.Add((o.TargetTextColumnName, nameof(o.TargetTextColumnName), "target text"));
        var missing = needed.Where(n => !columns.Contains(n.Column)).ToList();
        if (missing.Count > 0)
        {
            var list = string.Join(", ", columns.Select(c => $"'{c}'"));
            var what = string.Join("; ", missing.Select(m => $"no {m.Role} column '{m.Column}' (set by {FlagOfProperty[m.Property]})"));
            throw new InvalidDataException($"{fileFlag} '{path}' has {what}. Its columns (from its first line, read as the header row) are: {list}. " +
                $"Pass {string.Join(" / ", missing.Select(m => FlagOfProperty[m.Property] + " <column>"))} naming one of them" +
                (missing.Count == needed.Count ? ", or, if the file has no header row, add one." : "."));
        }
        long rows = 0;
        var labels = new SortedSet<string>(StringComparer.Ordinal);
        bool countLabels = isTraining && o.Task == QuanTATask.TextClassification && data.Schema[o.LabelColumnName].Type is TextDataViewType;
        var labelColumn = data.Schema[countLabels ? o.LabelColumnName : columns[0]];
        using (var cursor = data.GetRowCursor(countLabels ? [labelColumn] : []))
        {
            var get = countLabels ? cursor.GetGetter<ReadOnlyMemory<char>>(labelColumn) : null;
            ReadOnlyMemory<char> value = default;
            while (cursor.MoveNext())
            {
                rows++;
                if (get is null) continue;
                get(ref value);
                if (labels.Count < 2 && value.Length > 0) labels.Add(value.ToString());
            }
        }
        if (rows == 0)
            throw new InvalidDataException($"{fileFlag} '{path}' has no data rows (only a header row?): there is nothing to " +
                $"{(isTraining ? "train" : "validate")} on. Add rows to the file.");
        if (countLabels && labels.Count < 2)
            throw new InvalidDataException($"{fileFlag} '{path}' has {(labels.Count == 0 ? "no labels" : $"one class ('{labels.Min}')")} in its label column " +
                $"'{o.LabelColumnName}' ({rows} row{(rows == 1 ? "" : "s")}): classification needs at least 2 classes. Add rows of another class, " +
                $"or pass {FlagOfProperty[nameof(o.LabelColumnName)]} naming the column that holds the labels.");
    }

    /// <summary>
    /// Validation rows whose label the training data does not have (MapValueToKey maps them to missing, so they cannot be scored):
    /// a warning on stderr with the file, the count and the labels when some rows have one (those rows are left out of validation);
    /// an error when no row has a known label, since validation loss and accuracy would then be measured on nothing.
    /// </summary>
    static void CheckValidationLabels(IDataView validation, string path, string labelColumn, IReadOnlyList<string> trainedLabels)
    {
        var census = LabelCensus.Take(validation, labelColumn, trainedLabels, path, "--validation");
        if (census.UnseenRows == 0) return;
        var labels = $"labels never seen in the training data ({LabelCensus.List(census.UnseenLabels)}; --train has {LabelCensus.List(trainedLabels)})";
        if (census.UnseenRows == census.Rows)
            throw new InvalidDataException($"--validation '{path}': none of its {census.Rows} row{(census.Rows == 1 ? "" : "s")} has a known label: all have " +
                $"{labels}, so validation loss and accuracy would be measured on no rows. Give --validation rows of the training classes " +
                $"(column '{labelColumn}', set by {FlagOfProperty[nameof(QuanTAFineTuneOptions.LabelColumnName)]}), or leave --validation out.");
        Console.Error.WriteLine($"warning: --validation '{path}': {census.UnseenRows} of {census.Rows} rows have {labels}; they are left out of " +
            "validation loss and accuracy. Add rows of those classes to --train, or remove them from --validation.");
    }

    /// <summary>The labels a fitted MapValueToKey knows for <paramref name="column"/>, in key order.</summary>
    static IReadOnlyList<string> KeyNames(ITransformer toKey, DataViewSchema input, string column)
    {
        VBuffer<ReadOnlyMemory<char>> names = default;
        toKey.GetOutputSchema(input)[column].GetKeyValues(ref names);
        return names.DenseValues().Select(n => n.ToString()).ToList();
    }

    /// <summary>Re-runs this command as N local ranks (without --nproc-per-node), prefixing each rank's output.</summary>
    static int LaunchRanks(int n)
    {
        var args = Environment.GetCommandLineArgs().Skip(1).ToList();
        int i = args.FindIndex(a => a == "--nproc-per-node" || a.StartsWith("--nproc-per-node=", StringComparison.Ordinal));
        if (i >= 0) args.RemoveRange(i, args[i].Contains('=') ? 1 : Math.Min(2, args.Count - i));
        var (exe, prefix) = LocalLauncher.SelfCommand();
        var result = LocalLauncher.Run(exe, [.. prefix, .. args], new LaunchOptions
        {
            NprocPerNode = n,
            OnLine = (rank, line, isError) => (isError ? Console.Error : Console.Out).WriteLine($"[rank {rank}] {line}"),
        });
        if (result.Succeeded) return 0;
        Console.Error.WriteLine($"rank {result.FirstFailedRank} failed (exit codes: {string.Join(", ", result.ExitCodes)}).");
        return 1;
    }

    /// <summary>
    /// Fails before training when a file the run ends by writing cannot be written: <c>--output</c>'s folder must exist and
    /// accept a new file; <c>--export-adapter</c> and <c>--loss-curve</c> folders are created (as the writers would) and probed.
    /// </summary>
    static void CheckOutputsWritable(string output, string? exportAdapter, string? lossCurve)
    {
        AtomicFile.EnsureWritable(output, "--output");
        foreach (var (path, flag) in new[] { (exportAdapter, "--export-adapter"), (lossCurve, "--loss-curve") })
        {
            if (path is null) continue;
            var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
            try { Directory.CreateDirectory(folder); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new IOException($"{flag} '{path}': cannot create the folder '{folder}' ({e.Message}). Choose another {flag}.", e);
            }
            AtomicFile.EnsureWritable(path, flag);
        }
    }

    static string Quote(string path) => path.Contains(' ', StringComparison.Ordinal) ? $"\"{path}\"" : path;

    /// <summary>The estimator chain the verb fits: classification maps the label to a key and the prediction back.</summary>
    public static IEstimator<ITransformer> Pipeline(MLContext ml, QuanTAFineTuneOptions o) => o.Task == QuanTATask.TextClassification
        ? ml.Transforms.Conversion.MapValueToKey(o.LabelColumnName)
            .Append(ml.Transforms.QuanTAFineTune(o))
            .Append(ml.Transforms.Conversion.MapKeyToValue(o.PredictedLabelColumnName))
        : ml.Transforms.QuanTAFineTune(o);

    /// <summary>Reports on the training thread, so lines print in order (Progress&lt;T&gt; posts to the thread pool).</summary>
    sealed class SyncProgress(Action<QuanTAProgress> report) : IProgress<QuanTAProgress>
    {
        public void Report(QuanTAProgress value) => report(value);
    }

    /// <summary>Owns a fitted chain and disposes its QuanTA transformer.</summary>
    sealed class DisposableChain(ITransformer chain) : IDisposable
    {
        public ITransformer Chain => chain;
        public QuanTAFineTuneTransformer QuanTA => TextData.FindQuanTA(chain);
        public void Dispose() => QuanTA.Dispose();
    }
}
