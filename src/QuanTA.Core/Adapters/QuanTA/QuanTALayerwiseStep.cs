using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Core.Adapters;

/// <summary>
/// The layerwise path's step (<see cref="QuanTATrainingPath.Layerwise"/>, <see cref="QuanTATrainingPath.LayerwiseUncached"/>). Per step, the bank
/// computes only the small block operators R_B (K×K per layer, <see cref="QuanTAChainBlocks"/>); each adapted layer then
/// builds its merged weight inside its own forward, as one autograd node:
/// <code>
///   forward:   ΔW = crop(M_T) − crop(M_S),  M_T = ∏_B R_B (applied to the identity)     (out, in), transient
///              y  = x (W0 + ΔW)ᵀ + b                                                    saves x, W0 and R_B
///   backward:  ∂L/∂x  = g (W0 + ΔW)                                                     ΔW rebuilt
///              ∂L/∂R_B from the tokens, h_tᵀ g_t along the chain                       (QuanTAChainBlocks.TokenGradients)
///           or ∂L/∂ΔW = gᵀ x,   ∂L/∂R_B = (∂ΔW/∂R_B)ᵀ ∂L/∂ΔW                         chain rebuilt with a graph
/// </code>
/// ∂L/∂R_B takes whichever route needs fewer multiply-adds for the layer's shape and token count (the token route for
/// square layers with about as many tokens as D, e.g. LLaMA q/v; the ΔW route for narrow outputs such as GQA's v_proj,
/// where the chain runs on only `out` basis vectors). The token route works in the input's dtype and needs a few transient
/// (tokens, D) tensors while the layer's backward runs. The gradients w.r.t. R_B flow on through the ordinary graph into
/// the stacked T tensors.
/// <para>
/// Nothing weight-sized is kept between forward and backward: W0 + ΔW is built again in the backward when the input needs a
/// gradient, so the chain runs twice per step, for a peak memory close to the frozen model's (figures in
/// docs/performance.md). (TorchSharp's custom-function node also makes an empty tensor shaped like its output, to zero-fill a
/// gradient that never arrives; it is made in the caller's dispose scope, so it is freed when the calling module's forward
/// ends, not kept until the backward.)
/// </para>
/// </summary>
/// <param name="plan">The layer shape's chain plan.</param>
/// <param name="ops">This layer's block operators (K, K), application order, differentiable w.r.t. the stacked T.</param>
/// <param name="minusFrozenRaw">−(the S chain on the basis vectors), (basis, D), when cached (Layerwise); else null.</param>
/// <param name="frozenOps">The S chain's block operators (no gradient) when <paramref name="minusFrozenRaw"/> is null (LayerwiseUncached).</param>
/// <param name="returned">Where returned gradient wrappers wait to be freed.</param>
internal sealed class QuanTALayerwiseStep(QuanTAChainBlocks.ChainPlan plan, Tensor[] ops, Tensor? minusFrozenRaw, Tensor[]? frozenOps, ReturnedGradients returned)
    : IStepLinear
{
    public bool IsLive => !ops[0].IsInvalid && (minusFrozenRaw is null || !minusFrozenRaw.IsInvalid);

    public IReadOnlyList<Tensor> Inputs => ops;

    public IStepLinear Rebind(IReadOnlyList<Tensor> inputs) => new QuanTALayerwiseStep(plan, [.. inputs], minusFrozenRaw, frozenOps, returned);

    public Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Quantization.QuantizedWeight? quantized)
    {
        if (weight.requires_grad || bias?.requires_grad == true)
            throw new InvalidOperationException("The layerwise QuanTA path trains only the adapter: the layer's weight and bias " +
                "must stay frozen. Freeze them, or use the stacked path (QuanTATrainingPath.Stacked).");
        var args = new object?[5 + ops.Length];
        args[0] = x; args[1] = weight; args[2] = bias; args[3] = this; args[4] = quantized;
        for (int i = 0; i < ops.Length; i++) args[5 + i] = ops[i];
        return CustomFunctionOutput.Apply(() => MergedLinearFunction.apply(args!));
    }

    /// <summary>ΔW (out, in) from block operators (K, K) each: the engine (<see cref="QuanTAChainBlocks.Delta"/>) with L = 1.</summary>
    internal Tensor Delta(Tensor[] blockOps) => QuanTAChainBlocks.Delta(plan, blockOps.Select(o => o.unsqueeze(0)).ToArray(),   // (1, K, K)
        () => MinusFrozenRaw().unsqueeze(0)).squeeze(0);                                                                      // (out, in)

    Tensor MinusFrozenRaw()
    {
        if (minusFrozenRaw is not null) return minusFrozenRaw;
        using var _ = no_grad();
        return QuanTAChainBlocks.NegatedRaw(plan, frozenOps!.Select(o => o.unsqueeze(0)).ToArray()).squeeze(0);   // (basis, D)
    }

    internal QuanTAChainBlocks.ChainPlan Plan => plan;
    internal ReturnedGradients Returned => returned;
}

/// <summary>y = x (W0 + ΔW(R))ᵀ + b as one autograd node that keeps x, W0 and R_B for its backward (see
/// <see cref="QuanTALayerwiseStep"/>). Arguments: x, W0, b (or null), the layer step, the quantized W0 (or null: then W0 is the
/// dense argument; else it is dequantized in the forward and again in the backward, never kept), then the block operators R_B.</summary>
internal sealed class MergedLinearFunction : autograd.SingleTensorFunction<MergedLinearFunction>
{
    public override string Name => "QuanTAMergedLinear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, w, b, step, q) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor, (QuanTALayerwiseStep)vars[3], vars[4] as Quantization.QuantizedWeight);
        var ops = vars.Skip(5).Cast<Tensor>().ToArray();
        using var scope = NewDisposeScope();
        var w0 = q?.Dequantize() ?? w;                                                 // a quantized W0 is dequantized, transient
        var merged = w0 + step.Delta(ops).to_type(w0.dtype);                           // W0 + ΔW (out, in)
        var y = nn.functional.linear(x, merged, b);                                   // (…, out): one GEMM
        ctx.save_for_backward([x, w, .. ops]);                                         // x, W0 (the backward builds W0 + ΔW again), R_B
        ctx.save_data("step", step);
        ctx.save_data("x_needs_grad", x.requires_grad);
        ctx.save_data("quantized", q!);
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var step = (QuanTALayerwiseStep)ctx.get_data("step");
        bool xNeedsGrad = (bool)ctx.get_data("x_needs_grad");
        var q = ctx.get_data("quantized") as Quantization.QuantizedWeight;
        step.Returned.Release();                              // the previous layer's returned gradients are in the engine now
        var saved = ctx.get_saved_variables();
        var result = new List<Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            var (x, w) = (saved[0], saved[1]);
            var ops = saved.Skip(2).ToArray();                                                   // R_B (K, K)
            var g2 = g.reshape(-1, step.Plan.Out);                                               // (M, out)
            var x2 = x.reshape(-1, step.Plan.In);                                                // (M, in)
            Tensor? gx = null;
            Tensor[] gOps;
            Tensor? delta = null;                                                                // ΔW, when the route builds it
            if (QuanTAChainBlocks.TokenGradientsCheaper(step.Plan, x2.shape[0], rebuildsDelta: xNeedsGrad))
            {
                using var _ = no_grad();
                gOps = QuanTAChainBlocks.TokenGradients(step.Plan, ops, x2, g2);                 // ∂L/∂R_B from the tokens
            }
            else
            {
                var leaves = ops.Select(o => o.detach().requires_grad_(true)).ToArray();         // fresh leaves
                using (enable_grad()) delta = step.Delta(leaves);                                // (out, in), graph to the leaves
                Tensor gDelta;
                using (no_grad()) gDelta = g2.t().mm(x2).to_type(delta.dtype);                   // (out, in) = gᵀ x
                gOps = autograd.grad([delta], leaves, [gDelta]).ToArray();                       // ∂L/∂R_B through the chain
            }
            if (xNeedsGrad)
            {
                using var _ = no_grad();
                var w0 = q?.Dequantize() ?? w;                                                   // quantized W0: rebuilt, transient
                var merged = w0 + (delta ?? step.Delta(ops)).detach().to_type(w0.dtype);
                gx = g2.mm(merged).reshape(x.shape);                                             // (M, in) = g (W0 + ΔW)
            }
            result.Add(gx!); result.Add(null!); result.Add(null!); result.Add(null!); result.Add(null!);
            result.AddRange(gOps);
            foreach (var t in result) t?.DetachFromDisposeScope();
        }
        finally
        {
            foreach (var t in saved) t?.Dispose();
            g.Dispose();
        }
        step.Returned.Hold(result);
        return result;
    }
}
