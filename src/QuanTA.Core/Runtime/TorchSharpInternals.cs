using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Runtime;

/// <summary>
/// The one place that reaches into TorchSharp's non-public members (TorchSharp 0.107). Everything here degrades to a
/// no-op when a member is missing (the caller only loses a memory saving), and <see cref="SelfTest"/> says which member
/// is gone so a TorchSharp upgrade is noticed by the unit tests rather than by a GPU that runs out of memory.
/// </summary>
internal static class TorchSharpInternals
{
    const BindingFlags Private = BindingFlags.NonPublic | BindingFlags.Instance;

    // autograd.AutogradContext._node: the Node<T> that owns the context.
    static readonly FieldInfo? ContextNode = typeof(autograd.AutogradContext).GetField("_node", Private);

    /// <summary>
    /// A custom autograd function's node keeps <c>empty_like(output)</c> for each output until the graph is freed, to
    /// zero-fill an output gradient that never arrives (TorchSharp's <c>Node&lt;T&gt;._outputCache</c>); that is one
    /// activation-sized buffer per call. After <c>apply</c> returned, this swaps those buffers for empty tensors of the
    /// same dtype and device. Call it only for a function whose forward set <c>ctx.set_materialize_grads(false)</c>, whose
    /// backward then receives an undefined gradient instead of zeros. Returns false (and changes nothing) when TorchSharp's
    /// members are not where this version expects them.
    /// </summary>
    public static bool ReleaseOutputCache(autograd.AutogradContext ctx)
    {
        var node = ContextNode?.GetValue(ctx);
        if (node?.GetType().GetField("_outputCache", Private)?.GetValue(node) is not List<Tensor> cache) return false;
        for (int i = 0; i < cache.Count; i++)
        {
            if (cache[i] is not { } held || held.IsInvalid || held.numel() == 0) continue;
            cache[i] = empty(0, dtype: held.dtype, device: held.device).DetachFromDisposeScope();   // freed with the node
            held.Dispose();
        }
        return true;
    }

    /// <summary>Elements the node behind <paramref name="ctx"/> holds in its output cache; −1 when it cannot be read.</summary>
    public static long CachedOutputElements(autograd.AutogradContext ctx)
    {
        var node = ContextNode?.GetValue(ctx);
        if (node?.GetType().GetField("_outputCache", Private)?.GetValue(node) is not List<Tensor> cache) return -1;
        return cache.Where(t => t is not null && !t.IsInvalid).Sum(t => t.numel());
    }

    /// <summary>Null when every member used here exists in the loaded TorchSharp; otherwise which one is missing.</summary>
    public static string? SelfTest()
    {
        if (ContextNode is null) return $"TorchSharp {typeof(autograd.AutogradContext).Assembly.GetName().Version}: autograd.AutogradContext._node not found.";
        var nodeType = typeof(autograd.AutogradContext).Assembly.GetTypes().FirstOrDefault(t => t.IsGenericTypeDefinition && t.FullName?.StartsWith("TorchSharp.torch+autograd+Node`1", StringComparison.Ordinal) == true);
        if (nodeType?.GetField("_outputCache", Private) is not { } f || f.FieldType != typeof(List<Tensor>))
            return $"TorchSharp {typeof(autograd.AutogradContext).Assembly.GetName().Version}: autograd.Node<T>._outputCache (List<Tensor>) not found.";
        return null;
    }
}
