using System.Diagnostics;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Training;

/// <summary>
/// A model-agnostic fine-tuning loop in the habits of the Hugging Face Trainer: AdamW over the trainable tensors only, a
/// per-step learning rate (linear / cosine / constant with warmup), gradient accumulation, global-norm clipping, a NaN/inf
/// guard, cancellation within one micro-batch, progress events, validation with early stopping and best-model tracking, and
/// atomic checkpoints from which a resumed run continues bit for bit (CPU, fixed seed; on CUDA the GPU generator's state
/// cannot be saved with TorchSharp 0.107, so dropout masks after a resume differ).
/// <para>Each micro-batch (fetching it from the source included) runs in its own dispose scope, so tensors made by the batch
/// source and the loss function are freed every step. <see cref="IDisposable"/> batches are disposed after use.</para>
/// </summary>
/// <example>
/// <code>
/// AdapterInjector.Inject(model, new QuanTAConfig { Layout = [16, 8, 8, 4] }, TargetModules.Names("q_proj", "v_proj"));
/// using var trainer = Trainer&lt;LmBatch&gt;.ForModule(model, new TrainerOptions { CheckpointDir = "ckpt", CheckpointEverySteps = 500 });
/// var result = trainer.Train(BatchSource.FromList(batches, shuffle: true), b =>
/// {
///     var logits = model.forward(b.InputIds, b.AttentionMask);                 // (B, T, V)
///     var loss = Losses.CausalLM(logits, b.Labels, out var targetTokens);      // labels: Losses.PromptMaskedLabels(...)
///     return new TrainStepResult(loss, targetTokens);
/// }, progress: new Progress&lt;TrainingProgress&gt;(p => Console.WriteLine(p)), cancellationToken: token);
/// // after a crash or Ctrl+C: same options with ResumeFrom = "ckpt" continue where the last checkpoint left off.
/// </code>
/// </example>
/// <typeparam name="TBatch">What the batch source yields and the loss function consumes.</typeparam>
public sealed class Trainer<TBatch> : IDisposable
{
    readonly List<(string name, Parameter parameter)> _params;
    readonly List<(string name, Tensor tensor)> _saved;     // what checkpoints hold: trainable, then state tensors
    readonly nn.Module? _model;
    readonly AdamW _optimizer;
    bool _used, _disposed;

    /// <summary>
    /// Creates a trainer for the given trainable tensors. <paramref name="model"/>, if given, is switched to <c>train()</c> for
    /// training and <c>eval()</c> for validation; otherwise the loss and validation functions handle modes themselves.
    /// <paramref name="stateTensors"/> are tensors that are not trained but belong to the trained state and may differ between
    /// two set-ups of the same run (e.g. QuanTA's frozen copies <c>S_i</c>, made from the random init): checkpoints store them
    /// and resuming restores them, so a resumed run does not depend on how the adapter was re-initialized.
    /// </summary>
    /// <exception cref="ArgumentException">no parameters, a parameter that does not require grad, or a duplicate name.</exception>
    public Trainer(IEnumerable<(string name, Parameter parameter)> trainableParameters, TrainerOptions options, nn.Module? model = null,
                   IEnumerable<(string name, Tensor tensor)>? stateTensors = null)
    {
        ArgumentNullException.ThrowIfNull(trainableParameters);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options.Clone();
        _params = trainableParameters.ToList();
        if (_params.Count == 0)
            throw new ArgumentException("No trainable parameters were given: attach an adapter (or unfreeze something) before training.", nameof(trainableParameters));
        foreach (var (name, p) in _params)
            if (!p.requires_grad)
                throw new ArgumentException($"Parameter '{name}' does not require grad; pass only trainable parameters.", nameof(trainableParameters));
        _saved = _params.Select(p => (p.name, (Tensor)p.parameter)).Concat(stateTensors ?? Enumerable.Empty<(string, Tensor)>()).ToList();
        var dup = _saved.GroupBy(p => p.name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new ArgumentException($"Tensor name '{dup.Key}' appears twice among the trainable and state tensors.", nameof(trainableParameters));
        _model = model;
        // AdamW with one update for all parameters at once (bit-identical to TorchSharp's per-parameter AdamW, see MultiTensorAdamW)
        _optimizer = new MultiTensorAdamW(_params.Select(p => p.parameter), lr: Options.LearningRate, beta1: Options.AdamBeta1,
                                          beta2: Options.AdamBeta2, eps: Options.AdamEpsilon, weight_decay: Options.WeightDecay)
        { Log = m => this.Log?.Invoke(m) };                  // e.g. a group that left the one-update path
    }

    /// <summary>
    /// A trainer over every parameter of <paramref name="model"/> that requires grad (e.g. after adapter injection). The buffers
    /// of every sub-module that owns a trainable parameter (an adapter's frozen copies) become state tensors; the base model's
    /// buffers do not.
    /// </summary>
    public static Trainer<TBatch> ForModule(nn.Module model, TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        var state = new List<(string, Tensor)>();
        foreach (var (prefix, module) in model.named_modules().Prepend(("", model)))
        {
            if (!module.named_parameters(recurse: false).Any(p => p.parameter.requires_grad)) continue;
            foreach (var (name, buffer) in module.named_buffers(recurse: false))
                state.Add((prefix.Length == 0 ? name : prefix + "." + name, buffer));
        }
        return new Trainer<TBatch>(model.named_parameters().Where(p => p.parameter.requires_grad), options, model, state);
    }

    /// <summary>Called once per optimizer step after the micro-batches' backward passes and before clipping and the AdamW
    /// update: the place for data-parallel gradient averaging (<c>DistributedGradientSync.Synchronize</c>).</summary>
    public Action? BeforeOptimizerStep { get; set; }

    /// <summary>
    /// Called once per optimizer step, on every rank, with this rank's mean micro-batch loss and token count; returns what
    /// the step logs and records (data-parallel: the mean loss and the total tokens over ranks, one small all-reduce).
    /// The finiteness check uses the reduced loss, so every rank stops at the same step with the same message (a NaN on one
    /// rank also reaches the others' gradients through the gradient all-reduce).
    /// </summary>
    public Func<double, long, (double Loss, long Tokens)>? ReduceStepStatistics { get; set; }

    /// <summary>The options in use (a copy of those given).</summary>
    public TrainerOptions Options { get; }

    /// <summary>The trainable tensors, in optimizer order.</summary>
    public IReadOnlyList<(string name, Parameter parameter)> Parameters => _params;

    /// <summary>Untrained tensors that checkpoints also hold (see the constructor).</summary>
    public IReadOnlyList<(string name, Tensor tensor)> StateTensors => _saved.Skip(_params.Count).ToList();

    /// <summary>Training history so far (also after an exception or cancellation).</summary>
    public TrainingHistory History { get; private set; } = new();

    /// <summary>The AdamW optimizer (tests inspect its state).</summary>
    internal AdamW Optimizer => _optimizer;

    /// <summary>Informational and warning lines (resume, skipped corrupt checkpoints, early stop); null: silent.</summary>
    public Action<string>? Log { get; set; }

    /// <summary>
    /// Runs training. Call once per trainer.
    /// </summary>
    /// <param name="data">Batches per epoch.</param>
    /// <param name="lossFn">Forward pass of one micro-batch: returns the loss (with graph) and its token count.</param>
    /// <param name="validate">Optional validation returning the task metric (run under no_grad); enables best tracking and early stopping.</param>
    /// <param name="progress">Optional progress sink.</param>
    /// <param name="cancellationToken">Stops within one micro-batch; when a checkpoint folder is set, the last completed step is saved first.</param>
    /// <exception cref="TrainingDivergedException">the loss or gradient norm became NaN/inf.</exception>
    /// <exception cref="OperationCanceledException">cancelled (after saving a checkpoint when configured).</exception>
    public TrainingResult Train(IBatchSource<TBatch> data, Func<TBatch, TrainStepResult> lossFn, Func<double>? validate = null,
                                IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(lossFn);
        if (_used) throw new InvalidOperationException("Train was already called on this trainer; create a new trainer (and resume from a checkpoint to continue).");
        _used = true;
        return new Run(this, data, lossFn, validate, progress, cancellationToken).Execute();
    }

    /// <summary>Frees the optimizer state.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _optimizer.Dispose();
    }

    /// <summary>One call of <see cref="Train"/>: the loop and its mutable state.</summary>
    sealed class Run(Trainer<TBatch> t, IBatchSource<TBatch> data, Func<TBatch, TrainStepResult> lossFn, Func<double>? validate,
                     IProgress<TrainingProgress>? progress, CancellationToken ct)
    {
        readonly TrainerOptions o = t.Options;
        readonly Stopwatch _clock = new();
        long _bpe, _stepsPerEpoch, _totalSteps;
        int _epochs;
        TrainerState _state = new();                 // position, best, history as of the last completed step
        byte[] _rngAtStep = Array.Empty<byte>();     // generator state right after the last completed step
        long _lastSavedStep = -1, _stepsThisRun, _tokensThisRun, _lastLoggedStep;
        string? _lastCheckpoint;
        List<Tensor>? _best;                         // copy of the best parameters (RestoreBestAtEnd)
        double _lastLr, _lastGradNorm;

        public TrainingResult Execute()
        {
            Prepare();
            var stoppedEarly = false;
            t._model?.train();
            for (var epoch = _state.Epoch; epoch < _epochs && _state.Step < _totalSteps && !stoppedEarly; epoch++)
            {
                long b = epoch == _state.Epoch ? _state.BatchInEpoch : 0;
                using (var batches = data.GetBatches(epoch, b).GetEnumerator())
                {
                    while (b < _bpe && _state.Step < _totalSteps && !stoppedEarly)
                    {
                        var group = (int)Math.Min(o.GradientAccumulationSteps, _bpe - b);
                        OptimizerStep(batches, epoch, group);
                        b += group;
                        SetPosition(epoch, b);
                        stoppedEarly = AfterStep(epoch);
                    }
                }
                if (!stoppedEarly && b >= _bpe) stoppedEarly = EndOfEpoch(epoch);
            }
            return Finish(stoppedEarly);
        }

        void Prepare()
        {
            _bpe = data.BatchesPerEpoch ?? CountBatches();
            if (_bpe <= 0) throw new ArgumentException("The batch source yields no batches: the training data is empty.", nameof(data));
            _stepsPerEpoch = (_bpe + o.GradientAccumulationSteps - 1) / o.GradientAccumulationSteps;
            _totalSteps = o.MaxSteps > 0 ? o.MaxSteps : _stepsPerEpoch * o.Epochs;
            _epochs = o.MaxSteps > 0 ? (int)((o.MaxSteps + _stepsPerEpoch - 1) / _stepsPerEpoch) : o.Epochs;
            if (o.CheckpointDir is not null) Checkpoints.CleanTemporary(o.CheckpointDir);
            if (o.ResumeFrom is not null) Resume(o.ResumeFrom);
            else
            {
                torch.random.manual_seed(o.Seed).Dispose();
                _state = new TrainerState
                {
                    Seed = o.Seed, RunFingerprint = o.RunFingerprint, Parameters = Checkpoints.Describe(t._saved),
                    GradientAccumulationSteps = o.GradientAccumulationSteps, BatchesPerEpoch = _bpe,
                };
            }
            _state.TotalSteps = _totalSteps;
            _rngAtStep = Checkpoints.CaptureRng();
            t.History = _state.History;
            _lastLoggedStep = _state.Step;
            _clock.Start();
        }

        long CountBatches()
        {
            t.Log?.Invoke("The batch source does not know its length; counting the batches of one epoch.");
            long n = 0;
            using var e = data.GetBatches(0, 0).GetEnumerator();
            while (true)
            {
                using var scope = NewDisposeScope();   // tensors a source makes while counting are freed too
                if (!e.MoveNext()) return n;
                n++;
                (e.Current as IDisposable)?.Dispose();
            }
        }

        void Resume(string from)
        {
            var checkpoint = from;
            if (!File.Exists(Path.Combine(from, Checkpoints.StateFile)))
            {
                checkpoint = Checkpoints.FindLatestValid(from, e => t.Log?.Invoke($"Skipping checkpoint: {e.Message}"))
                    ?? throw new DirectoryNotFoundException($"ResumeFrom '{from}' is neither a checkpoint folder nor a folder holding a valid checkpoint-N.");
            }
            var peek = Checkpoints.Verify(checkpoint);
            if (peek.RunFingerprint != o.RunFingerprint)
                throw new InvalidOperationException($"Checkpoint '{checkpoint}' belongs to another run (fingerprint '{peek.RunFingerprint}', this run '{o.RunFingerprint}'): " +
                                                    "the base model or adapter configuration differs.");
            if (peek.GradientAccumulationSteps != o.GradientAccumulationSteps || peek.BatchesPerEpoch != _bpe)
                throw new InvalidOperationException($"Checkpoint '{checkpoint}' was saved with {peek.BatchesPerEpoch} batches per epoch and gradient accumulation " +
                                                    $"{peek.GradientAccumulationSteps}; this run has {_bpe} and {o.GradientAccumulationSteps}. Resume needs the same data and batching.");
            _state = Checkpoints.Load(checkpoint, t._saved, t._optimizer);
            // TorchSharp 0.107 cannot read or set a CUDA generator's state: re-seed it per position (deterministic, but
            // GPU dropout masks differ from an uninterrupted run; on CPU the resume is bit-exact).
            if (torch.cuda.is_available()) torch.cuda.manual_seed_all(o.Seed + _state.Step);
            _lastSavedStep = _state.Step;
            _lastCheckpoint = checkpoint;
            if (o.RestoreBestAtEnd && _state.BestCheckpoint is not null && o.CheckpointDir is not null)
            {
                var bestDir = Path.Combine(o.CheckpointDir, _state.BestCheckpoint);
                if (Directory.Exists(bestDir)) _best = LoadBestSnapshot(bestDir);
            }
            t.Log?.Invoke($"Resumed from '{checkpoint}' at step {_state.Step} (epoch {_state.Epoch}, batch {_state.BatchInEpoch}).");
        }

        List<Tensor> LoadBestSnapshot(string dir)
        {
            var current = Snapshot();
            Checkpoints.LoadTensors(dir, t._saved);
            var best = Snapshot();
            Restore(current);
            foreach (var c in current) c.Dispose();
            return best;
        }

        void OptimizerStep(IEnumerator<TBatch> batches, int epoch, int group)
        {
            var lr = LearningRates.At(o, _state.Step, _totalSteps);
            foreach (var pg in t._optimizer.ParamGroups) pg.LearningRate = lr;
            long tokens = 0;
            // The micro-batch losses stay on the device; the host reads them once per step, together with the gradient norm
            // (one synchronization per optimizer step instead of one per micro-batch plus one for clipping).
            using var stepScope = NewDisposeScope();
            Tensor? lossSum = null;                                             // Σ micro-batch losses, fp64, on the loss's device
            for (var i = 0; i < group; i++)
            {
                if (ct.IsCancellationRequested) Cancel(epoch);
                using var scope = NewDisposeScope();
                if (!batches.MoveNext())
                    throw new InvalidOperationException($"The batch source ended early in epoch {epoch}: it announced {_bpe} batches per epoch.");
                var batch = batches.Current;
                try
                {
                    TrainStepResult r;
                    TrainingFaults.BeforeMicroBatch?.Invoke(_state.Step + 1);   // tests: a simulated device fault (e.g. OOM)
                    try { r = lossFn(batch); }
                    catch (OperationCanceledException) when (ct.IsCancellationRequested) { Cancel(epoch); throw; }
                    if (r.Loss is null || r.Loss.numel() != 1)
                        throw new InvalidOperationException("The loss function must return a scalar loss tensor.");
                    var loss = r.Loss.detach().to_type(ScalarType.Float64).reshape(1);
                    if (lossSum is null) lossSum = loss.clone().MoveToOuterDisposeScope();
                    else lossSum.add_(loss);
                    r.Loss.div(group).backward();    // mean over the micro-batches of this step
                    tokens += r.TokenCount;
                }
                catch (Exception e) when (OutOfMemoryOnDeviceException.IsDeviceOutOfMemory(e)) { OutOfMemory(epoch, e); throw; }
                finally { (batch as IDisposable)?.Dispose(); }
            }
            t.BeforeOptimizerStep?.Invoke();   // e.g. data-parallel gradient averaging, before clipping
            var (sum, norm) = ReadLossAndGradNorm(lossSum!);
            double stepLoss = sum / group;
            if (t.ReduceStepStatistics is { } reduce) (stepLoss, tokens) = reduce(stepLoss, tokens);   // e.g. mean over ranks
            // A non-finite value stops here, before the update: the parameters stay as after the last good step (with data
            // parallelism every rank stops at the same step, since the reduced loss and the averaged gradients are shared).
            if (!double.IsFinite(stepLoss)) Diverged(epoch, stepLoss, lr, "loss");
            if (!double.IsFinite(norm)) Diverged(epoch, norm, lr, "gradient norm");
            ClipGradients(norm);
            CrashTestPoints.Reached("step:" + (_state.Step + 1).ToString(System.Globalization.CultureInfo.InvariantCulture));   // crash tests: die mid-step
            t._optimizer.step();
            ZeroGrad();
            _state.Step++;
            _stepsThisRun++;
            _tokensThisRun += tokens;
            _lastLr = lr; _lastGradNorm = norm;
            _state.History.Steps.Add(new TrainingStepRecord(_state.Step, epoch, stepLoss, lr, norm, tokens));
            _rngAtStep = Checkpoints.CaptureRng();
        }

        /// <summary>The step's loss sum and the global gradient L2 norm ‖g‖ = ‖(‖g_p‖)_p‖ (fp64), in one host read.</summary>
        (double LossSum, double GradNorm) ReadLossAndGradNorm(Tensor lossSum)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var norms = t._params.Select(p => p.parameter.grad).Where(g => g is not null)
                .Select(g => g!.to_type(ScalarType.Float64).norm().to(lossSum.device).reshape(1)).ToArray();
            var norm = norms.Length == 0 ? zeros(1, dtype: ScalarType.Float64, device: lossSum.device) : cat(norms).norm().reshape(1);
            var both = cat([lossSum, norm]).cpu().data<double>().ToArray();   // the one synchronization of the step
            return (both[0], both[1]);
        }

        /// <summary>Scales every gradient by min(1, MaxGradNorm / (‖g‖ + 1e-6)), as torch.nn.utils.clip_grad_norm_ does (off when
        /// MaxGradNorm ≤ 0).</summary>
        void ClipGradients(double norm)
        {
            if (o.MaxGradNorm <= 0) return;
            double coef = o.MaxGradNorm / (norm + 1e-6);
            if (coef >= 1) return;
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            foreach (var (_, p) in t._params)
                if (p.grad is Tensor g) g.mul_(coef);
        }

        /// <summary>optimizer.zero_grad() inside a scope: TorchSharp's leaves one undisposed wrapper per parameter and call.</summary>
        void ZeroGrad()
        {
            using var scope = NewDisposeScope();
            t._optimizer.zero_grad();
        }

        void SetPosition(int epoch, long batch) { _state.Epoch = epoch; _state.BatchInEpoch = batch; }

        /// <summary>Logging, validation, checkpointing after a step; true to stop early.</summary>
        bool AfterStep(int epoch)
        {
            if (_state.Step % o.LogEveryNSteps == 0 || _state.Step == _totalSteps) ReportSteps(epoch);
            var stop = false;
            if (validate is not null && o.ValidateEverySteps > 0 && _state.Step % o.ValidateEverySteps == 0) stop = Validate(epoch);
            if (o.CheckpointDir is not null && o.CheckpointEverySteps > 0 && _state.Step % o.CheckpointEverySteps == 0) Save(epoch);
            return stop;
        }

        bool EndOfEpoch(int epoch)
        {
            var stop = false;
            if (validate is not null && o.ValidateEverySteps == 0) stop = Validate(epoch);
            SetPosition(epoch + 1, 0);
            _rngAtStep = Checkpoints.CaptureRng();
            if (o.CheckpointDir is not null && o.CheckpointEachEpoch) Save(epoch, force: true);
            progress?.Report(Event(TrainingEventKind.EpochEnd, epoch));
            return stop;
        }

        bool Validate(int epoch)
        {
            double metric;
            t._model?.eval();
            try
            {
                using var scope = NewDisposeScope();
                using var _ = no_grad();
                metric = validate!();
            }
            finally { t._model?.train(); }
            _rngAtStep = Checkpoints.CaptureRng();
            _state.History.Validations.Add(new ValidationRecord(_state.Step, epoch, metric));
            progress?.Report(Event(TrainingEventKind.Validation, epoch) with { ValidationMetric = metric });
            var improved = _state.BestMetric is not double best ||
                           (o.GreaterIsBetter ? metric > best + o.EarlyStoppingThreshold : metric < best - o.EarlyStoppingThreshold);
            if (improved && double.IsFinite(metric))
            {
                _state.BestMetric = metric; _state.BestStep = _state.Step; _state.ValidationsWithoutImprovement = 0;
                if (o.RestoreBestAtEnd) { DisposeBest(); _best = Snapshot(); }
                if (o.CheckpointDir is not null)
                {
                    _state.BestCheckpoint = Checkpoints.FolderName(_state.Step);
                    Save(epoch, force: true);
                }
                return false;
            }
            _state.ValidationsWithoutImprovement++;
            if (o.EarlyStoppingPatience > 0 && _state.ValidationsWithoutImprovement >= o.EarlyStoppingPatience)
            {
                t.Log?.Invoke($"Early stopping at step {_state.Step}: no improvement in {o.EarlyStoppingPatience} validations (best {_state.BestMetric:G6} at step {_state.BestStep}).");
                return true;
            }
            return false;
        }

        void Save(int epoch, bool force = false)
        {
            if (!force && _lastSavedStep == _state.Step) return;
            _lastCheckpoint = Checkpoints.Save(o.CheckpointDir!, _state, t._saved, t._optimizer, _rngAtStep);
            _lastSavedStep = _state.Step;
            var best = _state.BestCheckpoint is null ? null : Path.Combine(o.CheckpointDir!, _state.BestCheckpoint);
            Checkpoints.Prune(o.CheckpointDir!, o.KeepLastCheckpoints, best);
            progress?.Report(Event(TrainingEventKind.Checkpoint, epoch) with { CheckpointPath = _lastCheckpoint });
        }

        /// <summary>Saves the last completed step (parameters are untouched by the partial step) and throws.</summary>
        void Cancel(int epoch)
        {
            ZeroGrad();
            string? saved = null;
            if (o.CheckpointDir is not null)
            {
                if (_lastSavedStep != _state.Step) Save(epoch);
                saved = _lastCheckpoint;
            }
            throw new OperationCanceledException(
                $"Training was cancelled after step {_state.Step} of {_totalSteps}" + (saved is null ? "." : $"; resume from '{saved}'."), ct);
        }

        /// <summary>The device ran out of memory inside a step: the step is abandoned (its gradients dropped), the parameters
        /// are those of the last completed step (saved when checkpoints are on), and the error says what to change.</summary>
        void OutOfMemory(int epoch, Exception e)
        {
            ZeroGrad();
            if (o.CheckpointDir is not null && _lastSavedStep != _state.Step) Save(epoch);
            throw new OutOfMemoryOnDeviceException(_state.Step + 1, o.BatchSize, o.GradientAccumulationSteps,
                o.CheckpointDir is null ? null : _lastCheckpoint, e, o.OutOfMemoryHint);
        }

        void Diverged(int epoch, double value, double lr, string what)
        {
            ZeroGrad();
            if (o.CheckpointDir is not null && _lastSavedStep != _state.Step) Save(epoch);
            throw new TrainingDivergedException(_state.Step + 1, epoch, value, lr, o.CheckpointDir is null ? null : _lastCheckpoint, what);
        }

        void ReportSteps(int epoch)
        {
            var window = _state.History.Steps.Where(s => s.Step > _lastLoggedStep).Select(s => s.Loss).ToList();
            _lastLoggedStep = _state.Step;
            progress?.Report(Event(TrainingEventKind.Step, epoch) with { Loss = window.Count > 0 ? window.Average() : double.NaN });
        }

        TrainingProgress Event(TrainingEventKind kind, int epoch)
        {
            var elapsed = _clock.Elapsed;
            var perStep = _stepsThisRun > 0 ? elapsed.TotalSeconds / _stepsThisRun : 0;
            return new TrainingProgress
            {
                Kind = kind, Epoch = epoch, Step = _state.Step, TotalSteps = _totalSteps, Loss = double.NaN,
                LearningRate = _lastLr, GradNorm = _lastGradNorm,
                TokensPerSecond = elapsed.TotalSeconds > 0 ? _tokensThisRun / elapsed.TotalSeconds : 0,
                Elapsed = elapsed,
                EstimatedRemaining = TimeSpan.FromSeconds(perStep * Math.Max(0, _totalSteps - _state.Step)),
            };
        }

        List<Tensor> Snapshot()
        {
            using var _ = no_grad();
            return t._params.Select(p => p.parameter.detach().clone().DetachFromDisposeScope()).ToList();
        }

        void Restore(List<Tensor> snapshot)
        {
            using var _ = no_grad();
            for (var i = 0; i < snapshot.Count; i++) t._params[i].parameter.copy_(snapshot[i]);
        }

        void DisposeBest()
        {
            if (_best is null) return;
            foreach (var b in _best) b.Dispose();
            _best = null;
        }

        TrainingResult Finish(bool stoppedEarly)
        {
            if (o.CheckpointDir is not null && _lastSavedStep != _state.Step) Save(_state.Epoch);
            if (o.RestoreBestAtEnd && _best is not null)
            {
                Restore(_best);
                t.Log?.Invoke($"Restored the best parameters (metric {_state.BestMetric:G6} at step {_state.BestStep}).");
            }
            DisposeBest();
            return new TrainingResult
            {
                Steps = _state.Step, EpochsRun = Math.Min(_epochs, _state.Epoch + (_state.BatchInEpoch > 0 ? 1 : 0)),
                StoppedEarly = stoppedEarly, BestMetric = _state.BestMetric, BestStep = _state.BestStep,
                BestCheckpoint = _state.BestCheckpoint is null || o.CheckpointDir is null ? null : Path.Combine(o.CheckpointDir, _state.BestCheckpoint),
                LastCheckpoint = _lastCheckpoint, History = _state.History,
            };
        }
    }
}
