using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// A block operator R_B = O_Bᵀ (L, K, K) built from its pairs' tensors as one autograd node that saves only those tensors
/// (activation checkpointing for the chain's small side). Built pair by pair, autograd would keep every intermediate
/// (L, K, K) product — 3 × 128 MiB for LLaMA-7B's K = 1024 block over 64 layers, held from the step's start to its end;
/// here the backward rebuilds them (a few small batched einsums per step) and hands the pair tensors their gradients.
/// Arguments: the block's description (<see cref="Spec"/>), then its pair tensors (L, d_m, d_n, d_m, d_n) in chain order.
/// </summary>
internal sealed class BlockOperatorFunction : autograd.SingleTensorFunction<BlockOperatorFunction>
{
    /// <summary>What <see cref="QuanTAChainBlocks.BlockTransposed"/> needs besides the tensors, and where returned gradient
    /// wrappers wait until libtorch has taken them.</summary>
    internal sealed record Spec(AxisLayout Layout, int[] Axes, int[] PairIndices, ScalarType DType, Device Device, ReturnedGradients Returned);

    public override string Name => "QuanTABlockOperator";

    /// <summary>R_B (L, K, K) from the block's pair tensors (indexed like the layout's pairs), checkpointed.</summary>
    public static Tensor Apply(Spec spec, Tensor[] tensors)
    {
        var args = new object[1 + spec.PairIndices.Length];
        args[0] = spec;
        for (int i = 0; i < spec.PairIndices.Length; i++) args[1 + i] = tensors[spec.PairIndices[i]];
        return CustomFunctionOutput.Apply(() => apply(args));
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var spec = (Spec)vars[0];
        var pairs = vars.Skip(1).Cast<Tensor>().ToArray();
        var y = Build(spec, pairs);                                  // runs without a graph (apply turns it off)
        ctx.save_for_backward([.. pairs]);
        ctx.save_data("spec", spec);
        ctx.save_data("needs", pairs.Select(t => t.requires_grad).ToArray());
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var spec = (Spec)ctx.get_data("spec");
        var grads = CheckpointedBackward.Gradients(ctx.get_saved_variables(), (bool[])ctx.get_data("needs"),
            pairs => Build(spec, pairs), g, spec.Returned);         // the pair-by-pair products again: ∂L/∂T per pair
        return [null!, .. grads];                                    // no gradient for the spec
    }

    static Tensor Build(Spec spec, Tensor[] pairs)
    {
        using var scope = NewDisposeScope();
        var byIndex = new Tensor[spec.Layout.TensorCount];
        for (int i = 0; i < spec.PairIndices.Length; i++) byIndex[spec.PairIndices[i]] = pairs[i];
        long L = pairs[0].shape[0];
        return QuanTAChainBlocks.BlockTransposed(spec.Layout, spec.Axes, spec.PairIndices, byIndex, L, spec.DType, spec.Device).MoveToOuterDisposeScope();
    }
}
