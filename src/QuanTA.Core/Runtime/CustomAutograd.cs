using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Runtime;

/// <summary>
/// Gradients handed back to libtorch from a custom backward must stay alive until the engine has taken its own reference
/// (right after the backward returns); their .NET wrappers are kept here and freed at the next backward call sharing the
/// holder, or when the step ends, instead of waiting for the garbage collector.
/// </summary>
internal sealed class ReturnedGradients
{
    readonly List<Tensor> _pending = [];

    public void Hold(IEnumerable<Tensor?> tensors)
    {
        lock (_pending) _pending.AddRange(tensors.Where(t => t is not null)!);
    }

    public void Release()
    {
        lock (_pending)
        {
            foreach (var t in _pending) t.Dispose();
            _pending.Clear();
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
        }
        finally
        {
            foreach (var t in saved) t?.Dispose();
            g.Dispose();
        }
        returned.Hold(result);
        return result;
    }
}
