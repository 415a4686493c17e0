using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using QuanTA.MLNet.AutoML;

namespace QuanTA.MLNet
{
    /// <summary>The entry point of QuanTA sweeps on an <see cref="MLContext"/> (AutoML's <c>mlContext.Auto()</c> counterpart).</summary>
    public static class QuanTASweepCatalog
    {
        /// <summary>A sweep over QuanTA layouts / LoRA ranks and training settings, starting from <paramref name="baseOptions"/>
        /// (base model, columns, batch size, … — everything not searched).</summary>
        public static QuanTASweepExperiment QuanTASweep(this MLContext mlContext, QuanTAFineTuneOptions baseOptions) => new(mlContext, baseOptions);
    }
}

namespace QuanTA.MLNet.AutoML
{
    /// <summary>
    /// An AutoML-style experiment over QuanTA options: <c>SetData → SetMetric → SetBudget → SetConstraint → Run</c>. The search space
    /// (<see cref="QuanTASearchSpace"/>, generated from the model's hidden size) is sampled with a fixed seed; asynchronous successive
    /// halving (<see cref="SuccessiveHalvingTuner"/>) spends the budget with epochs as the resource; configurations over the
    /// trainable-parameter constraint are rejected before training (counted from config.json, <see cref="ModelShape"/>). Each trial
    /// is isolated: an exception (bad layout, out of memory, divergence to NaN) is recorded and the sweep goes on. With an output
    /// folder, <c>trials.json</c> and <c>leaderboard.csv</c> are rewritten after every trial and <c>pareto.png</c> at the end; running
    /// again on the same folder resumes: trials found there are taken as they are, not trained again. With
    /// <see cref="SetWorkers"/>, trials run side by side in independent child processes (one per GPU, or N on one device).
    /// </summary>
    public sealed class QuanTASweepExperiment
    {
        readonly MLContext _ml;
        readonly QuanTAFineTuneOptions _baseOptions;
        IDataView? _train, _validation;
        SweepMetric _metric = SweepMetric.ValidationLoss;
        (string Name, Func<ITransformer, IDataView, double> Evaluate, bool GreaterIsBetter)? _custom;
        int _maxTrials = 20;
        TimeSpan _maxTime = TimeSpan.FromHours(1);
        double? _maxFraction;
        long? _maxTrainable;
        int _seed = 1, _eta = 3;
        SearchSpace? _space;
        ModelShape? _shape;
        string? _output;
        bool _resume = true;
        ISweepTrialRunner? _runner;
        SweepWorkerOptions? _workers;

        /// <summary>Creates an experiment; <paramref name="baseOptions"/> supplies everything the search does not set.</summary>
        public QuanTASweepExperiment(MLContext mlContext, QuanTAFineTuneOptions baseOptions)
        {
            ArgumentNullException.ThrowIfNull(mlContext);
            ArgumentNullException.ThrowIfNull(baseOptions);
            _ml = mlContext;
            _baseOptions = baseOptions.Clone();
        }

        /// <summary>Raised after every trial (run or reused), on the thread that called <see cref="Run"/>.</summary>
        public event Action<SweepTrialResult>? TrialCompleted;

        /// <summary>Raised by <see cref="Run"/> before any trial for each adapter whose whole search space is rejected (over the
        /// constraint or unbuildable on the model), with the reason and what to change; also written as a warning to the
        /// <see cref="MLContext"/>'s log and kept in <see cref="QuanTASweepResult.Warnings"/>.</summary>
        public event Action<string>? SearchSpaceWarning;

        /// <summary>Training and validation data (same columns; the label as text for classification — it is mapped to a key
        /// inside). Without validation data, 20 % of <paramref name="train"/> is held out (seeded).</summary>
        public QuanTASweepExperiment SetData(IDataView train, IDataView? validation = null)
        {
            ArgumentNullException.ThrowIfNull(train);
            if (validation is null)
            {
                var split = _ml.Data.TrainTestSplit(train, 0.2, seed: _seed);
                (_train, _validation) = (split.TrainSet, split.TestSet);
            }
            else (_train, _validation) = (train, validation);
            return this;
        }

        /// <summary>The metric to optimize (default <see cref="SweepMetric.ValidationLoss"/>).</summary>
        public QuanTASweepExperiment SetMetric(SweepMetric metric) { _metric = metric; _custom = null; return this; }

        /// <summary>A custom metric: <paramref name="evaluate"/> gets the fitted model (key mapping + QuanTA) and the raw validation data.</summary>
        public QuanTASweepExperiment SetMetric(string name, Func<ITransformer, IDataView, double> evaluate, bool greaterIsBetter)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(name);
            ArgumentNullException.ThrowIfNull(evaluate);
            _custom = (name, evaluate, greaterIsBetter);
            return this;
        }

        /// <summary>Stops after <paramref name="maxTrials"/> trials (promotions count; default 20) or when <paramref name="maxTime"/>
        /// has passed (default 1 h; a trial still running then is cancelled and recorded as such).</summary>
        public QuanTASweepExperiment SetBudget(int maxTrials, TimeSpan? maxTime = null)
        {
            if (maxTrials < 1) throw new ArgumentOutOfRangeException(nameof(maxTrials), maxTrials, "The trial budget must be at least 1.");
            if (maxTime is { } t && t <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(maxTime), t, "The time budget must be positive.");
            _maxTrials = maxTrials;
            if (maxTime is { } tt) _maxTime = tt;
            return this;
        }

        /// <summary>Only configurations with at most this share of trainable parameters (e.g. 0.001 = 0.1 %) and/or this many
        /// trainable parameters are trained; others are rejected before training.</summary>
        public QuanTASweepExperiment SetConstraint(double? maxTrainableFraction = null, long? maxTrainableParameters = null)
        {
            if (maxTrainableFraction is { } f && f is not (> 0 and <= 1))
                throw new ArgumentOutOfRangeException(nameof(maxTrainableFraction), f, "Expected a fraction in (0, 1], e.g. 0.001 for 0.1 %.");
            if (maxTrainableParameters is { } p && p < 1)
                throw new ArgumentOutOfRangeException(nameof(maxTrainableParameters), p, "Expected a positive parameter count.");
            (_maxFraction, _maxTrainable) = (maxTrainableFraction, maxTrainableParameters);
            return this;
        }

        /// <summary>Seed of the sampler (and of each trial's adapter initialisation unless the base options set one). Default 1.</summary>
        public QuanTASweepExperiment SetSeed(int seed) { _seed = seed; return this; }

        /// <summary>Successive halving's reduction factor η (default 3).</summary>
        public QuanTASweepExperiment SetReductionFactor(int eta)
        {
            if (eta < 2) throw new ArgumentOutOfRangeException(nameof(eta), eta, "η must be at least 2.");
            _eta = eta;
            return this;
        }

        /// <summary>A custom search space over <see cref="QuanTASweepParameters"/> (default: <see cref="QuanTASearchSpace.Create(ModelShape, IReadOnlyList{int}, int)"/>
        /// for the base model's layers). Its "Epochs" range is the successive-halving resource.</summary>
        public QuanTASweepExperiment SetSearchSpace(SearchSpace space)
        {
            ArgumentNullException.ThrowIfNull(space);
            if (space.Type != typeof(QuanTASweepParameters))
                throw new ArgumentException($"The search space must be read from {nameof(QuanTASweepParameters)} (got {space.Type.Name}).", nameof(space));
            _space = space;
            return this;
        }

        /// <summary>The model's layers for parameter counting (default: read from the base model's config.json).</summary>
        public QuanTASweepExperiment SetModelShape(ModelShape shape) { _shape = shape ?? throw new ArgumentNullException(nameof(shape)); return this; }

        /// <summary>Folder for trials.json, leaderboard.csv and pareto.png; with <paramref name="resume"/> (default) trials already
        /// recorded there are reused, not trained again.</summary>
        public QuanTASweepExperiment SetOutputFolder(string folder, bool resume = true)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(folder);
            (_output, _resume) = (folder, resume);
            return this;
        }

        /// <summary>Replaces the trial runner (default: ML.NET fit + evaluation), e.g. for custom training or tests.</summary>
        public QuanTASweepExperiment SetTrialRunner(ISweepTrialRunner runner) { _runner = runner ?? throw new ArgumentNullException(nameof(runner)); return this; }

        /// <summary>Runs trials in independent child processes, several side by side (one per GPU, or N on the same device), instead
        /// of one at a time in this process; the scheduler (successive halving, budgets, trials.json, leaderboard) stays here. Needs
        /// the default trial runner and a built-in metric (a delegate cannot cross a process boundary). See <see cref="SweepWorkerOptions"/>.</summary>
        public QuanTASweepExperiment SetWorkers(SweepWorkerOptions workers)
        {
            ArgumentNullException.ThrowIfNull(workers);
            workers.Validate();
            _workers = workers;
            return this;
        }

        /// <summary>Runs the sweep until a budget is spent, the space is used up or <paramref name="cancellationToken"/> fires.
        /// With <see cref="SetWorkers"/>, a trial is started whenever a worker is free; configuration numbers, trial ids and the
        /// configurations drawn are deterministic, but which promotions are offered depends on which trials had finished when a
        /// worker freed up, so a parallel sweep's trial list can differ from a sequential one (each trial's metric does not).</summary>
        public QuanTASweepResult Run(CancellationToken cancellationToken = default)
        {
            bool trainsHead = _baseOptions.Task == QuanTATask.TextClassification && _baseOptions.ClassificationMode == ClassificationMode.Head;
            var shape = _shape ?? ModelShape.FromConfig(_baseOptions.BaseModelPath, trainsHead);
            var space = _space ?? QuanTASearchSpace.Create(shape);
            if (_runner is null && _train is null) throw new InvalidOperationException("Call SetData(train, validation) before Run().");
            var (metricName, greater) = _custom is { } c ? (c.Name, c.GreaterIsBetter)
                : (_metric.ToString(), _metric is SweepMetric.MacroAccuracy or SweepMetric.MicroAccuracy);
            var (minEpochs, maxEpochs) = EpochRange(space);
            var tuner = new SuccessiveHalvingTuner(minEpochs, maxEpochs, _eta, greater);
            var baseOptions = _baseOptions.Clone();
            baseOptions.Seed ??= _seed;
            baseOptions.Validate();
            var constraint = new SweepConstraint(_maxFraction, _maxTrainable);
            var (warnings, blocked) = CheckSearchSpace(space, shape, trainsHead, baseOptions, constraint);

            var previous = new Dictionary<(string, int), SweepTrialResult>();
            if (_output is not null && _resume)
                foreach (var t in SweepResultFiles.ReadTrials(_output).Where(t => t.Status != SweepTrialStatus.Cancelled))
                    previous.TryAdd((t.Description, t.Epochs), t);

            var random = new Random(_seed);
            var configs = new List<(QuanTASweepParameters P, IReadOnlyDictionary<string, object> Raw, ParameterCount Count)>();
            var seen = new HashSet<string>();
            var trials = new List<SweepTrialResult>();
            var jobs = new Dictionary<int, SweepJob>();
            var rejected = new List<SweepRejection>();
            int reused = 0, started = 0;
            string? stop = null;
            var clock = Stopwatch.StartNew();
            TimeSpan TimeLeft() => _maxTime - clock.Elapsed;
            QuanTASweepResult Result(string why) => new()
            {
                MetricName = metricName, GreaterIsBetter = greater, Trials = trials.OrderBy(t => t.Id).ToArray(), Rejected = rejected.ToArray(),
                Warnings = warnings, ReusedTrials = reused, StopReason = why, OutputFolder = _output,
            };
            void Complete(SweepTrialResult result)
            {
                trials.Add(result);
                if (result.Status == SweepTrialStatus.Cancelled)
                {
                    tuner.Withdraw(jobs[result.Id]);
                    stop ??= cancellationToken.IsCancellationRequested ? "cancelled" : "time budget";
                }
                else tuner.Report(jobs[result.Id], result.Status == SweepTrialStatus.Succeeded ? result.Metric : null);
                if (_output is not null) SweepResultFiles.Write(_output, Result(stop ?? "running"));
                TrialCompleted?.Invoke(result);
            }

            using var executor = CreateExecutor(TimeLeft, cancellationToken);
            while (true)
            {
                // start trials while a worker is free (one at a time without workers: the trial runs inside Start)
                while (stop is null && executor.Running < executor.Capacity)
                {
                    if (cancellationToken.IsCancellationRequested) stop = "cancelled";
                    else if (started >= _maxTrials) stop = "trial budget";
                    else if (clock.Elapsed >= _maxTime) stop = "time budget";
                    if (stop is not null) break;
                    if (tuner.Next() is not { } job) { if (executor.Running == 0) stop = "search space exhausted"; break; }
                    if (job.IsNew && !Draw(space, shape, trainsHead, baseOptions, constraint, blocked, random, seen, configs, rejected)) { tuner.MarkExhausted(); continue; }

                    var (p, raw, count) = configs[job.ConfigId];
                    string description = p.Describe();
                    var result = new SweepTrialResult
                    {
                        Id = started++, ConfigId = job.ConfigId, Rung = job.Rung, Epochs = job.Epochs, Adapter = p.Adapter, Description = description,
                        Parameters = raw.ToDictionary(kv => kv.Key, kv => Convert.ToString(kv.Value, CultureInfo.InvariantCulture) ?? ""),
                        TrainableParameters = count.Trainable, TrainablePercent = 100 * count.TrainableFraction,
                    };
                    jobs[result.Id] = job;
                    if (previous.TryGetValue((description, job.Epochs), out var old))
                    {
                        reused++;
                        Complete(result with { Metric = old.Metric, Status = old.Status, Error = old.Error, Seconds = old.Seconds });
                        continue;
                    }
                    executor.Start(new SweepTrial(result.Id, job.ConfigId, job.Rung, p, p.ApplyTo(baseOptions, job.Epochs), count), result);
                }
                if (executor.Running == 0) break;
                foreach (var done in executor.WaitAny()) Complete(done);
            }

            var final = Result(stop ?? "search space exhausted");
            if (_output is not null)
            {
                SweepResultFiles.Write(_output, final);
                if (final.Leaderboard.Count > 0) SweepPlot.SavePng(Path.Combine(_output, SweepResultFiles.PlotFileName), final);
            }
            return final;
        }

        /// <summary>In-process (the runner, one trial at a time) or child processes (<see cref="SetWorkers"/>).</summary>
        ITrialExecutor CreateExecutor(Func<TimeSpan> timeLeft, CancellationToken cancellationToken)
        {
            if (_workers is null)
                return new InProcessTrialExecutor(_runner ?? new MlNetTrialRunner(_ml, _train!, _validation!, _metric, _custom?.Evaluate), timeLeft, cancellationToken);
            if (_runner is not null) throw new InvalidOperationException("SetWorkers runs the built-in trial runner in child processes; it cannot be combined with SetTrialRunner.");
            if (_custom is not null) throw new InvalidOperationException($"SetWorkers cannot run the custom metric '{_custom.Value.Name}' in child processes; use a built-in SweepMetric.");
            return new ProcessTrialExecutor(_ml, _workers, _train!, _validation!, _metric, _output, timeLeft, cancellationToken);
        }

        /// <summary>Checks which adapters of <paramref name="space"/> can run at all (<see cref="SweepSpaceCheck"/>): warns about each
        /// one that cannot (before any trial), returns the warnings and those adapters, and throws when no adapter can run.</summary>
        (IReadOnlyList<string> Warnings, IReadOnlySet<string> Blocked) CheckSearchSpace(SearchSpace space, ModelShape shape, bool trainsHead,
            QuanTAFineTuneOptions baseOptions, SweepConstraint constraint)
        {
            var checks = SweepSpaceCheck.Run(space, shape, trainsHead, baseOptions, constraint);
            var blocked = checks.Where(c => c.Runnable == 0).ToList();
            var warnings = blocked.Select(c => c.Warning(constraint)!).ToArray();
            if (blocked.Count == checks.Count)
                throw new InvalidOperationException("The sweep cannot run any configuration of its search space. " + string.Join(" ", warnings));
            using (var channel = ((IHostEnvironment)_ml).Start("QuanTA sweep"))
                foreach (var w in warnings) channel.Warning(MessageSensitivity.None, w);
            foreach (var w in warnings) SearchSpaceWarning?.Invoke(w);
            return (warnings, blocked.Select(c => c.Adapter).ToHashSet());
        }

        /// <summary>Draws configurations until one is new, fits the model and meets the constraint (gives up after 200 draws in a row);
        /// draws of a <paramref name="blocked"/> adapter (one whose whole space is rejected, already warned about) are skipped.</summary>
        bool Draw(SearchSpace space, ModelShape shape, bool trainsHead, QuanTAFineTuneOptions baseOptions, SweepConstraint constraint,
            IReadOnlySet<string> blocked, Random random, HashSet<string> seen,
            List<(QuanTASweepParameters, IReadOnlyDictionary<string, object>, ParameterCount)> configs, List<SweepRejection> rejected)
        {
            for (int attempt = 0; attempt < 200; attempt++)
            {
                var raw = space.Sample(random);
                var p = space.ToObject<QuanTASweepParameters>(raw);
                var description = p.Describe();
                if (!seen.Add(description) || blocked.Contains(p.Adapter)) continue;
                ParameterCount count;
                try { count = shape.Count(p.ApplyTo(baseOptions, 1), trainsHead); }
                catch (ArgumentException e) { rejected.Add(new SweepRejection(description, e.Message)); continue; }
                if (constraint.Violation(count) is { } violation) { rejected.Add(new SweepRejection(description, violation)); continue; }
                configs.Add((p, raw, count));
                return true;
            }
            return false;
        }

        static (int Min, int Max) EpochRange(SearchSpace space) => space["Epochs"] switch
        {
            RangeOption r => ((int)r.Min, (int)r.Max),
            ChoiceOption c => (c.Candidates.Cast<int>().Min(), c.Candidates.Cast<int>().Max()),
            var o => throw new ArgumentException($"The Epochs parameter must be a range or a choice (got {o.GetType().Name})."),
        };
    }
}
