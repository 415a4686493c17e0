using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Runtime;

/// <summary>
/// Gradients handed back to libtorch from a custom backward must stay alive until the engine has taken its own reference
/// (right after the backward returns); their .NET wrappers are kept here, per thread, and freed at the next backward call
/// on the same autograd thread (<see cref="Release"/>) or when no backward runs any more (<see cref="ReleaseAll"/>: the
/// next forward, the step's end), instead of waiting for the garbage collector. Per thread, because a graph spread over
/// several devices runs its nodes on one autograd thread per device.
/// </summary>
internal sealed class ReturnedGradients
{
    readonly Dictionary<int, List<Tensor>> _pending = [];

    /// <summary>Keeps <paramref name="tensors"/> (nulls skipped) until this thread's next <see cref="Release"/>.</summary>
    public void Hold(IEnumerable<Tensor?> tensors)
    {
        lock (_pending)
        {
            int id = Environment.CurrentManagedThreadId;
            if (!_pending.TryGetValue(id, out var list)) _pending[id] = list = [];
            list.AddRange(tensors.Where(t => t is not null)!);
        }
    }

    /// <summary>Frees what this thread's earlier backward calls returned (libtorch has taken them by now).</summary>
    public void Release()
    {
        lock (_pending)
            if (_pending.Remove(Environment.CurrentManagedThreadId, out var list)) foreach (var t in list) t.Dispose();
    }

    /// <summary>Frees everything held, from every thread: call it only while no backward pass is running.</summary>
    public void ReleaseAll()
    {
        lock (_pending)
        {
            foreach (var t in _pending.Values.SelectMany(l => l)) t.Dispose();
            _pending.Clear();
        }
    }

    /// <summary>Number of gradients held (all threads).</summary>
    public int PendingCount { get { lock (_pending) return _pending.Values.Sum(l => l.Count); } }
}

/// <summary>
/// TorchSharp's <c>Function.apply</c> returns a new wrapper of the output, so the wrapper made inside <c>forward</c> would be
/// left to the garbage collector: <c>forward</c> hands it to <see cref="Keep"/> and <see cref="Apply"/> frees it as soon as
/// <c>apply</c> returns (<c>forward</c> runs inside <c>apply</c>, on the caller's thread). <c>apply</c> also takes the tensors
/// given to <c>save_for_backward</c> only after <c>forward</c> has returned: an intermediate saved there must outlive the
/// forward's dispose scope, which <see cref="KeepUntilSaved"/> does.
/// </summary>
internal static class CustomFunctionOutput
{
    [ThreadStatic] static List<Tensor>? t_pending;

    /// <summary>In <c>forward</c>: takes <paramref name="y"/> out of the dispose scope until <see cref="Apply"/> frees it.</summary>
    public static Tensor Keep(Tensor y) => KeepUntilSaved(y);

    /// <summary>In <c>forward</c>: keeps an intermediate given to <c>save_for_backward</c> alive until <c>apply</c> has saved it
    /// (the saved variable holds its own reference); <see cref="Apply"/> frees the wrapper.</summary>
    public static Tensor KeepUntilSaved(Tensor t)
    {
        (t_pending ??= []).Add(t.DetachFromDisposeScope());
        return t;
    }

    /// <summary>Runs a function's <c>apply</c> and frees the wrappers its <c>forward</c> kept (only those: an <c>Apply</c> nested
    /// inside another function's <c>forward</c> leaves the outer one's alone).</summary>
    public static Tensor Apply(Func<Tensor> apply)
    {
        int mark = t_pending?.Count ?? 0;
        try { return apply(); }
        finally
        {
            if (t_pending is { } list && list.Count > mark)
            {
                for (int i = mark; i < list.Count; i++) list[i].Dispose();
                list.RemoveRange(mark, list.Count - mark);
            }
        }
    }
}

/// <summary>The backward of a checkpointed autograd node (activation checkpointing): the forward ran without a graph and
/// saved only its tensor inputs; the backward runs the same function again with a graph and differentiates it.</summary>
internal static class CheckpointedBackward
{
    /// <summary>
    /// ∂L/∂input for each saved input that needed a gradient (null for the others), from <paramref name="f"/> re-run on fresh
    /// leaves and the output gradient <paramref name="g"/>. Frees the unpacked saved tensors and <paramref name="g"/>;
    /// the returned tensors are out of every dispose scope and go to <paramref name="returned"/> too (the caller hands
    /// them to libtorch).
    /// </summary>
    public static List<Tensor> Gradients(IList<Tensor> saved, bool[] needs, Func<Tensor[], Tensor> f, Tensor g, ReturnedGradients returned)
    {
        var result = new List<Tensor>();
        bool done = false;
        try
        {
            using var scope = NewDisposeScope();
            var leaves = saved.Select((t, i) => t.detach().requires_grad_(needs[i])).ToArray();
            Tensor y;
            using (enable_grad()) y = f(leaves);
            var wanted = leaves.Where((_, i) => needs[i]).ToArray();
            var grads = wanted.Length > 0 ? autograd.grad([y], wanted, [g]) : [];
            int j = 0;
            for (int i = 0; i < leaves.Length; i++) result.Add(needs[i] ? grads[j++] : null!);
            foreach (var t in result) t?.DetachFromDisposeScope();
            done = true;
        }
        finally
        {
            foreach (var t in saved) t?.Dispose();
            g.Dispose();
            if (!done) foreach (var t in result) t?.Dispose();
        }
        returned.Hold(result);
        return result;
    }
}
