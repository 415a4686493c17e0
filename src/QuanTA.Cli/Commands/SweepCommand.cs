using System.CommandLine;
using System.Globalization;
using System.Reflection;
using QuanTA.Core.Distributed;
using QuanTA.Core.Training;
using QuanTA.MLNet;
using QuanTA.MLNet.AutoML;

namespace QuanTA.Cli.Commands;

/// <summary>
/// <c>quanta sweep</c>: an AutoML-style search over QuanTA layouts / LoRA ranks, target modules, learning rate and epochs
/// (successive halving, fixed seed) on TSV/CSV data — the library's <c>mlContext.QuanTASweep(...)</c>. Writes trials.json,
/// leaderboard.csv and pareto.png to the output folder, prints the leaderboard and the Pareto front; running it again on the
/// same folder resumes the sweep. <c>--gpus 0,1,…</c> / <c>--workers N</c> run trials side by side, each in its own child
/// process (<c>quanta sweep-trial</c>, hidden), so a failing trial costs only itself.
/// </summary>
public static class SweepCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var d = new QuanTAFineTuneOptions();   // shared flags take their defaults from here, as finetune's do
        var task = new Option<string>("--task") { Description = "classification or generation.", DefaultValueFactory = _ => FineTuneCommand.FormatTask(d.Task) };
        var baseModel = new Option<string>("--base-model") { Description = "Hugging Face model folder (…ForSequenceClassification for classification).", Required = true };
        var train = new Option<string>("--train") { Description = "Training data: .tsv or .csv with a header row.", Required = true };
        var validation = new Option<string?>("--validation") { Description = "Validation data (same columns); default: 20 % of --train held out." };
        var output = new Option<string>("--output") { Description = "Folder for trials.json, leaderboard.csv, pareto.png (resumed when it has trials.json).", Required = true };
        var textCol = new Option<string>("--text-column") { Description = "Text (prompt) column.", DefaultValueFactory = _ => d.TextColumnName };
        var text2Col = new Option<string?>("--second-text-column") { Description = "Optional second text column." };
        var labelCol = new Option<string>("--label-column") { Description = "Label column (classification).", DefaultValueFactory = _ => d.LabelColumnName };
        var targetCol = new Option<string>("--target-column") { Description = "Target text column (generation).", DefaultValueFactory = _ => d.TargetTextColumnName };
        var metric = new Option<string>("--metric") { Description = "validation-loss, macro-accuracy, micro-accuracy or log-loss.", DefaultValueFactory = _ => "validation-loss" };
        var trials = new Option<int>("--trials") { Description = "Trial budget (successive-halving promotions count).", DefaultValueFactory = _ => 20 };
        var minutes = new Option<double>("--time-minutes") { Description = "Time budget in minutes.", DefaultValueFactory = _ => 60 };
        var maxPercent = new Option<double?>("--max-trainable-percent") { Description = "Constraint: at most this % of parameters trainable (e.g. 0.1)." };
        var maxParams = new Option<long?>("--max-trainable") { Description = "Constraint: at most this many trainable parameters." };
        var adapters = new Option<string>("--adapters") { Description = "Adapters to search: quanta, lora or quanta,lora.", DefaultValueFactory = _ => "quanta,lora" };
        var axisCounts = new Option<string>("--axis-counts") { Description = "Axis counts N whose layouts are searched: factorizations of the widest targeted layer, and one derived per layer shape.", DefaultValueFactory = _ => "2,3,4" };
        var targets = new Option<string?>("--target-modules") { Description = "Target-module choices separated by '|', e.g. \"q_proj,v_proj|all-linear\" (default: the search space's)." };
        var epochs = new Option<string>("--epochs") { Description = "Epoch range min-max (the successive-halving resource).", DefaultValueFactory = _ => "1-9" };
        var lr = new Option<string>("--lr-range") { Description = "Learning-rate range min,max (log scale).", DefaultValueFactory = _ => "1e-4,3e-2" };
        var eta = new Option<int>("--eta") { Description = "Successive-halving reduction factor.", DefaultValueFactory = _ => 3 };
        var batch = new Option<int>("--batch-size") { Description = "Rows per micro-batch.", DefaultValueFactory = _ => d.BatchSize };
        var maxLen = new Option<int>("--max-seq-len") { Description = "Tokens per row.", DefaultValueFactory = _ => d.MaxSequenceLength };
        var seed = new Option<int>("--seed") { Description = "Seed of the sampler and of every trial.", DefaultValueFactory = _ => d.Seed ?? TrainerOptions.DefaultSeed };
        var noResume = new Option<bool>("--no-resume") { Description = "Ignore trials already in the output folder." };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var gpus = new Option<string?>("--gpus") { Description = "Run trials side by side, one child process per GPU id, e.g. 0,1 (each sees only its GPU, as cuda:0; overrides --device)." };
        var quantize = new Option<string>("--quantize") { Description = "Frozen base storage for every trial: none, int8 or nf4 (see 'quanta finetune --help').", DefaultValueFactory = _ => EnumFlag.Format(d.BaseQuantization) };
        var workers = new Option<int?>("--workers") { Description = "Run N trials side by side on --device, each in its own child process." };

        var cmd = new Command("sweep", "Search QuanTA layouts / LoRA ranks and training settings (successive halving); writes a leaderboard.")
        {
            task, baseModel, train, validation, output, textCol, text2Col, labelCol, targetCol, metric, trials, minutes, maxPercent, maxParams,
            adapters, axisCounts, targets, epochs, lr, eta, batch, maxLen, seed, noResume, device, gpus, workers, quantize,
        };
        cmd.SetAction(r => CliRun.Run(describe: e => FineTuneCommand.DescribeWithFlags(e, FlagOfParameter), body: () =>
        {
            var parallel = Workers(r.GetValue(gpus), r.GetValue(workers));
            var o = new QuanTAFineTuneOptions
            {
                Task = FineTuneCommand.ParseTask(r.GetValue(task)!), BaseModelPath = r.GetValue(baseModel)!,
                TextColumnName = r.GetValue(textCol)!, SecondTextColumnName = r.GetValue(text2Col),
                LabelColumnName = r.GetValue(labelCol)!, TargetTextColumnName = r.GetValue(targetCol)!,
                BatchSize = r.GetValue(batch), MaxSequenceLength = r.GetValue(maxLen), Seed = r.GetValue(seed),
                BaseQuantization = EnumFlag.Parse<QuanTA.Core.Quantization.BaseQuantization>("--quantize", r.GetValue(quantize)!),
            };
            var shape = ModelShape.FromConfig(o.BaseModelPath, o.Task == QuanTATask.TextClassification);
            var space = QuanTASearchSpace.Create(shape, Ints(r.GetValue(axisCounts)!, "--axis-counts"));
            var methods = r.GetValue(adapters)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(a => a.ToLowerInvariant() switch
                {
                    "quanta" => "QuanTA", "lora" => "LoRA",
                    _ => throw new ArgumentException($"--adapters '{a}' is not quanta or lora."),
                }).Distinct().Cast<object>().ToArray();
            space.With("Adapter", new ChoiceOption(methods));
            if (r.GetValue(targets) is { } t)
                space.With("TargetModules", new ChoiceOption(t.Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Cast<object>().ToArray()));
            var e = Ints(r.GetValue(epochs)!.Replace('-', ','), "--epochs");
            if (e.Length != 2 || e[0] < 1 || e[1] < e[0]) throw new ArgumentException($"--epochs '{r.GetValue(epochs)}' is not a range such as 1-9.");
            space.With("Epochs", new RangeOption(e[0], e[1], null, false, typeof(int)));
            var l = r.GetValue(lr)!.Split(',').Select(s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : double.NaN).ToArray();
            if (l.Length != 2 || !(l[0] > 0 && l[1] >= l[0] && double.IsFinite(l[1])))
                throw new ArgumentException($"--lr-range '{r.GetValue(lr)}' is not min,max with 0 < min ≤ max, such as 1e-4,3e-2.");
            space.With("LearningRate", new RangeOption(l[0], l[1], null, true, typeof(double)));

            var ml = CliRun.Context(r.GetValue(device)!, r.GetValue(seed));
            var data = TextData.Load(ml, r.GetValue(train)!);
            var valid = r.GetValue(validation) is { } vPath ? TextData.Load(ml, vPath) : null;
            var experiment = ml.QuanTASweep(o).SetSeed(r.GetValue(seed)).SetData(data, valid).SetSearchSpace(space).SetModelShape(shape)
                .SetMetric(r.GetValue(metric)!.ToLowerInvariant() switch
                {
                    "validation-loss" => SweepMetric.ValidationLoss, "macro-accuracy" => SweepMetric.MacroAccuracy,
                    "micro-accuracy" => SweepMetric.MicroAccuracy, "log-loss" => SweepMetric.LogLoss,
                    var m => throw new ArgumentException($"--metric '{m}' is not validation-loss, macro-accuracy, micro-accuracy or log-loss."),
                })
                .SetBudget(r.GetValue(trials), TimeSpan.FromMinutes(r.GetValue(minutes)))
                .SetConstraint(MaxTrainableFraction(r.GetValue(maxPercent)), r.GetValue(maxParams))
                .SetReductionFactor(r.GetValue(eta))
                .SetOutputFolder(r.GetValue(output)!, resume: !r.GetValue(noResume));
            if (parallel is not null) experiment.SetWorkers(parallel);
            // an adapter whose whole space is rejected is named before the first trial, not only in the closing line's count
            experiment.SearchSpaceWarning += w => Console.Error.WriteLine($"warning: {w}");
            experiment.TrialCompleted += x => Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"trial {x.Id} ({x.Epochs} epochs) {x.Status} {(x.Metric is double m ? m.ToString("F4", CultureInfo.InvariantCulture) : x.Error)} " +
                $"{x.TrainableParameters:N0} params {x.Seconds:F1}s{(x.Worker is int w ? $" [worker {w} pid {x.ProcessId}]" : "")}  {x.Description}"));
            // Ctrl+C: stop the sweep, kill running trial processes (recorded as cancelled, re-run on resume), write the results.
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                if (cts.IsCancellationRequested) return;                  // a second Ctrl+C kills the process
                e.Cancel = true;
                Console.Error.WriteLine("Ctrl+C: stopping the sweep…");
                cts.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            QuanTASweepResult result;
            try { result = experiment.Run(cts.Token); }
            finally { Console.CancelKeyPress -= onCancel; }
            Console.WriteLine($"stopped: {result.StopReason}; {result.Trials.Count} trials ({result.ReusedTrials} reused), " +
                $"{result.Leaderboard.Count} succeeded, {result.Rejected.Count} configurations rejected" +
                (result.Warnings.Count > 0 ? $"; {result.Warnings.Count} adapter(s) skipped entirely (see the warning above)" : ""));
            Console.Write(result.FormatLeaderboard());
            Console.WriteLine("Pareto front (trainable parameters → metric):");
            foreach (var p in result.ParetoFront)
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {p.TrainableParameters,10:N0}  {p.Metric,10:F4}  {p.Description} ({p.Epochs} epochs)"));
            Console.WriteLine($"results: {Path.GetFullPath(r.GetValue(output)!)}");
            return result.Leaderboard.Count > 0 ? 0 : 1;
        }));
        return cmd;
    }

    /// <summary>The hidden child verb of parallel sweeps: <c>quanta sweep-trial --spec trial-NNN/spec.json</c> runs one trial.</summary>
    public static Command CreateTrialRunner()
    {
        var spec = new Option<string>("--spec") { Description = "Trial spec written by the parent sweep.", Required = true };
        var cmd = new Command(SweepTrialWorker.Verb, "Run one sweep trial in this process (started by 'quanta sweep --workers/--gpus').") { spec };
        cmd.Hidden = true;
        cmd.SetAction(r => CliRun.Run(() => SweepTrialWorker.Run(r.GetValue(spec)!)));
        return cmd;
    }

    /// <summary>
    /// The parameters of the library calls the flags above feed (the sweep's base <see cref="QuanTAFineTuneOptions"/> fields, and
    /// the experiment's and search space's method parameters) → the flag: option errors are reworded through
    /// <see cref="FineTuneCommand.DescribeWithFlags(Exception, IReadOnlyDictionary{string, string})"/>, as finetune's are. The
    /// shared fields take finetune's flag names from <see cref="FineTuneCommand.FlagOfProperty"/>.
    /// </summary>
    internal static readonly IReadOnlyDictionary<string, string> FlagOfParameter = new[]
    {
        nameof(QuanTAFineTuneOptions.Task), nameof(QuanTAFineTuneOptions.BaseModelPath), nameof(QuanTAFineTuneOptions.TextColumnName),
        nameof(QuanTAFineTuneOptions.SecondTextColumnName), nameof(QuanTAFineTuneOptions.LabelColumnName), nameof(QuanTAFineTuneOptions.TargetTextColumnName),
        nameof(QuanTAFineTuneOptions.BatchSize), nameof(QuanTAFineTuneOptions.MaxSequenceLength), nameof(QuanTAFineTuneOptions.Seed),
        nameof(QuanTAFineTuneOptions.BaseQuantization),
    }.Select(p => KeyValuePair.Create(p, FineTuneCommand.FlagOfProperty[p])).Concat(new Dictionary<string, string>
    {
        // searched fields: the flag that sets their range or choices
        [nameof(QuanTAFineTuneOptions.Epochs)] = "--epochs", [nameof(QuanTAFineTuneOptions.LearningRate)] = "--lr-range",
        [nameof(QuanTAFineTuneOptions.TargetModules)] = "--target-modules", [nameof(QuanTAFineTuneOptions.Adapter)] = "--adapters",
        // QuanTASweepExperiment.SetBudget / SetConstraint / SetReductionFactor, SuccessiveHalvingTuner, QuanTASearchSpace
        ["maxTrials"] = "--trials", ["maxTime"] = "--time-minutes", ["maxTrainableParameters"] = "--max-trainable",
        ["eta"] = "--eta", ["minEpochs"] = "--epochs", ["maxEpochs"] = "--epochs", ["axisCount"] = "--axis-counts",
    }).ToDictionary();

    /// <summary>--max-trainable-percent as the fraction the library takes (checked here: the library's message speaks of fractions).</summary>
    static double? MaxTrainableFraction(double? percent) => percent is not { } p ? null
        : p is > 0 and <= 100 ? p / 100
        : throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
            $"--max-trainable-percent {p} is not a percentage in (0, 100], e.g. 0.1 for at most 0.1 % of the parameters trainable."));

    /// <summary>--gpus 0,1 → one worker per GPU; --workers N → N workers on --device; neither → in-process trials (null).</summary>
    static SweepWorkerOptions? Workers(string? gpus, int? workers)
    {
        if (gpus is not null && workers is not null) throw new ArgumentException("Give --gpus or --workers, not both (--gpus 0,1 already means two workers).");
        if (workers is < 1) throw new ArgumentException($"--workers {workers} must be at least 1.");
        if (gpus is null && workers is null) return null;
        var o = new SweepWorkerOptions { Command = TrialCommand() };
        if (gpus is null) return o with { Workers = workers!.Value };
        var ids = Ints(gpus, "--gpus");
        if (ids.Length == 0 || ids.Any(i => i < 0) || ids.Distinct().Count() != ids.Length)
            throw new ArgumentException($"--gpus '{gpus}' is not a list of distinct GPU ids such as 0,1.");
        return o with { GpuIds = ids };
    }

    /// <summary>How to start this tool for a trial: itself when it is the running program, else (hosted in-process, e.g. by
    /// tests) its assembly under the dotnet muxer.</summary>
    static (string, IReadOnlyList<string>) TrialCommand()
    {
        var self = typeof(SweepCommand).Assembly;
        if (Assembly.GetEntryAssembly() == self) return LocalLauncher.SelfCommand();
        var host = Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        return (host, [self.Location]);
    }

    static int[] Ints(string text, string option)
    {
        try { return text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray(); }
        catch (FormatException) { throw new ArgumentException($"{option} '{text}' is not a comma-separated list of integers."); }
    }
}
