using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Training;

/// <summary>
/// TorchSharp's AdamW with its update applied to all parameters of a group at once, as PyTorch's <c>foreach</c> AdamW does.
/// TorchSharp's <see cref="AdamW.step"/> runs about eight small ops per parameter; an adapter has many small parameters
/// (LoRA r8 on q and v of LLaMA-7B: 128 tensors), so the update cost is kernel launches, not arithmetic. Here each group of
/// parameters with one dtype and device keeps its moments in two flat buffers, and a step is
/// <code>
///   G = cat(grad_p)                      P = cat(p)                              (one copy each)
///   P ← P · (1 − lr·λ)                   M ← β1·M + (1 − β1)·G                   V ← β2·V + (1 − β2)·G²
///   P ← P − lr/(1 − β1ᵗ) · M / (√V / √(1 − β2ᵗ) + ε)                            p ← P[slice of p]  (one copy each)
/// </code>
/// — the same ops in the same order as <see cref="AdamW.step"/>, elementwise, so every value is bit-identical to it. The
/// per-parameter state tensors (<see cref="AdamW.State"/>: step, exp_avg, exp_avg_sq) are views of the flat buffers, so
/// <c>save_state_dict</c> / <c>load_state_dict</c> (which read into them in place) keep the format of <see cref="AdamW"/>.
/// A step where some parameter has no gradient, or options this path does not cover (amsgrad, maximize), or per-parameter
/// step counts that differ, runs <see cref="AdamW.step"/> itself on the same state tensors (the same result); once step
/// counts have diverged that way every later step does, which <see cref="Log"/> reports once.
/// </summary>
public sealed class MultiTensorAdamW : AdamW
{
    sealed record Flat(Parameter[] Parameters, State[] States, long[] Offsets, Tensor Avg, Tensor AvgSq);

    readonly Dictionary<TorchSharp.Modules.ParamGroup, List<Flat>> _flat = [];

    /// <summary>Where the one-time notice goes when the optimizer leaves the one-update path (null: silent). The
    /// <see cref="Trainer{TBatch}"/> routes it to its own log.</summary>
    public Action<string>? Log { get; set; }

    /// <summary>Creates the optimizer over <paramref name="parameters"/> (one group), with <see cref="AdamW"/>'s arguments.</summary>
    public MultiTensorAdamW(IEnumerable<Parameter> parameters, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
        double eps = 1e-8, double weight_decay = 0)
        : base(parameters, lr, beta1, beta2, eps, weight_decay)
    {
        foreach (var group in _parameter_groups) _flat[group] = Flatten(group);
    }

    List<Flat> Flatten(TorchSharp.Modules.ParamGroup group)
    {
        var result = new List<Flat>();
        foreach (var same in group.Parameters.GroupBy(p => (p.dtype, p.device_type, p.device_index)))
        {
            var ps = same.ToArray();
            var states = ps.Select(p => (State)_state[p.Handle]).ToArray();
            var offsets = new long[ps.Length + 1];
            for (int i = 0; i < ps.Length; i++) offsets[i + 1] = offsets[i] + ps[i].numel();
            // owned by the optimizer, not by a dispose scope the caller may have open
            var avg = zeros(offsets[^1], dtype: ps[0].dtype, device: ps[0].device).DetachFromDisposeScope();
            var avgSq = zeros(offsets[^1], dtype: ps[0].dtype, device: ps[0].device).DetachFromDisposeScope();
            for (int i = 0; i < ps.Length; i++)
            {
                states[i].exp_avg.Dispose(); states[i].exp_avg = View(avg, offsets, i, ps[i].shape);
                states[i].exp_avg_sq.Dispose(); states[i].exp_avg_sq = View(avgSq, offsets, i, ps[i].shape);
            }
            result.Add(new Flat(ps, states, offsets, avg, avgSq));
        }
        return result;
    }

    /// <inheritdoc/>
    public override Tensor step(Func<Tensor>? closure = null)
    {
        bool fused = _parameter_groups.All(g => (Options)g.Options is { amsgrad: not true, maximize: not true } && _flat[g].All(Ready));
        if (!fused)
        {
            ReportDivergedStepsOnce();
            return base.step(closure);                                             // per parameter, on the same state tensors
        }
        Tensor? loss = null;
        if (closure is not null) using (enable_grad()) loss = closure();
        foreach (var group in _parameter_groups)
            foreach (var f in _flat[group]) FusedStep(f, (Options)group.Options);
        return loss!;
    }

    // Every parameter has a gradient and all share one step count.
    static bool Ready(Flat f)
    {
        using var scope = NewDisposeScope();                                            // the grad wrappers
        return f.Parameters.All(p => p.grad is not null) && f.States.All(st => st.step == f.States[0].step);
    }

    void FusedStep(Flat f, Options o)
    {
        long step = f.States[0].step + 1;
        double lr = o.LearningRate!.Value, beta1 = o.beta1!.Value, beta2 = o.beta2!.Value, eps = o.eps!.Value, wd = o.weight_decay!.Value;
        double bias1 = 1 - Math.Pow(beta1, step), bias2 = 1 - Math.Pow(beta2, step);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var g = cat(f.Parameters.Select(p => p.grad!.reshape(-1)).ToArray());                    // (N)
        var p = cat(f.Parameters.Select(q => q.detach().reshape(-1)).ToArray());                 // (N)
        p.mul_(1 - lr * wd);
        f.Avg.mul_(beta1).add_(g, alpha: 1 - beta1);
        f.AvgSq.mul_(beta2).addcmul_(g, g, value: 1 - beta2);
        var denom = (f.AvgSq.sqrt() / Math.Sqrt(bias2)).add_(eps);
        p.addcdiv_(f.Avg, denom, value: -(lr / bias1));
        for (int i = 0; i < f.Parameters.Length; i++)
            f.Parameters[i].copy_(p.narrow(0, f.Offsets[i], f.Offsets[i + 1] - f.Offsets[i]).view(f.Parameters[i].shape));
        foreach (var s in f.States) s.step = step;
    }

    bool _reported;

    void ReportDivergedStepsOnce()
    {
        if (_reported) return;
        var diverged = _flat.Values.SelectMany(l => l).FirstOrDefault(f => f.States.Select(st => st.step).Distinct().Count() > 1);
        if (diverged is null) return;                                                   // a missing gradient this step only
        _reported = true;
        Log?.Invoke($"MultiTensorAdamW: {diverged.States.Count(st => st.step != diverged.States.Max(x => x.step))} of {diverged.Parameters.Length} " +
            "parameters of a group got no gradient at some step, so their step counts differ; the optimizer now updates " +
            "parameter by parameter (the same result as AdamW, more kernel launches). A trainable parameter that never " +
            "gets a gradient is usually a sign that it is not used by the loss.");
    }

    /// <summary>Loads another optimizer's state (from <c>state_dict()</c>) by copying its values into this optimizer's
    /// tensors: TorchSharp's version makes the states share the other optimizer's tensors (and disposes the flat views).</summary>
    public override void load_state_dict(StateDictionary source)
    {
        var sd = state_dict();
        if (source.Options.Count != sd.Options.Count) throw new ArgumentException("Invalid optimizer state -- different number of parameter groups.");
        if (source.State.Count != sd.State.Count) throw new ArgumentException("Invalid optimizer state -- different number of states.");
        for (int i = 0; i < source.Options.Count; i++)
            if (!ReferenceEquals(sd.Options[i], source.Options[i])) sd.Options[i].LoadStateDict(source.Options[i]);
        using var _ = no_grad();
        for (int i = 0; i < source.State.Count; i++)
        {
            if (ReferenceEquals(sd.State[i], source.State[i])) continue;
            if (sd.State[i] is not State to || source.State[i] is not State from)
                throw new ArgumentException($"Invalid optimizer state -- entry {i} is not an AdamW state.");
            to.step = from.step;
            to.exp_avg.copy_(from.exp_avg);
            to.exp_avg_sq.copy_(from.exp_avg_sq);
        }
    }

    static Tensor View(Tensor flat, long[] offsets, int i, long[] shape)
    {
        using var slice = flat.narrow(0, offsets[i], offsets[i + 1] - offsets[i]);
        return slice.view(shape).DetachFromDisposeScope();                               // owned by the state, as AdamW's are
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);                           // disposes the state views
        if (disposing)
            foreach (var f in _flat.Values.SelectMany(l => l)) { f.Avg.Dispose(); f.AvgSq.Dispose(); }
    }
}
