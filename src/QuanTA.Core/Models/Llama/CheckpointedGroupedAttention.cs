using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>
/// Causal grouped-query attention as one checkpointed autograd node: the forward repeats k/v to every query head and runs
/// one <c>scaled_dot_product_attention</c> call, keeping only q and the unrepeated k and v; the backward runs the same
/// forward again with a graph and differentiates it. Without it, autograd keeps the repeated k and v (n_heads/n_kv copies)
/// and the attention output for every layer — most of what a grouped-query layer's attention keeps (TinyLlama's figures:
/// docs/performance.md) — for the price of one more attention forward per layer in the backward pass. The result and the gradients are those of the plain formulation (the same kernels on the same inputs).
/// (TorchSharp's binding has no <c>enable_gqa</c>, which would let one call read the kv heads in place.)
/// Arguments: q (B, n_heads, T, hd), k and v (B, n_kv, T, hd), the group size n_heads/n_kv, the holder of returned gradients.
/// Returns (B, n_heads, T, hd).
/// </summary>
internal sealed class CheckpointedGroupedAttention : autograd.SingleTensorFunction<CheckpointedGroupedAttention>
{
    public override string Name => "QuanTACheckpointedGroupedAttention";

    /// <summary>Attention output (B, n_heads, T, hd), checkpointed when a graph is being recorded.</summary>
    /// <remarks>The gradients a backward hands to libtorch must outlive the call until libtorch has taken its own references
    /// (right after it returns): they wait in <paramref name="returned"/>, which the next backward sharing it (the model's
    /// next layer, run by the same autograd thread) or the model's next forward empties.</remarks>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, int groups, ReturnedGradients returned)
        => CustomFunctionOutput.Apply(() => apply(q, k, v, groups, returned));

    static Tensor Attend(Tensor q, Tensor k, Tensor v, int groups)
        => nn.functional.scaled_dot_product_attention(q, LlamaAttention.RepeatKV(k, groups), LlamaAttention.RepeatKV(v, groups), is_casual: true);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, groups) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (int)vars[3]);
        ctx.save_data("returned", vars[4]);
        using var scope = NewDisposeScope();
        var y = Attend(q, k, v, groups);            // no graph here: apply runs forward with gradients off
        ctx.save_for_backward([q, k, v]);
        ctx.save_data("groups", groups);
        ctx.save_data("needs", new[] { q.requires_grad, k.requires_grad, v.requires_grad });
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var returned = (ReturnedGradients)ctx.get_data("returned");
        returned.Release();                         // the previous node's gradients are in the engine now
        var groups = (int)ctx.get_data("groups");
        var grads = CheckpointedBackward.Gradients(ctx.get_saved_variables(), (bool[])ctx.get_data("needs"),
            qkv => Attend(qkv[0], qkv[1], qkv[2], groups), g, returned);   // ∂L/∂q, ∂L/∂k, ∂L/∂v
        return [.. grads, null!, null!];            // none for the group size and the holder
    }
}
