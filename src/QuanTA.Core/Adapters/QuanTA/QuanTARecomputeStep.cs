using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// A chunk of the stacked-recompute path (<see cref="Training.QuanTATrainingPath.StackedRecompute"/>): n consecutive layers
/// of one group. The bank builds the chunk's merged weights once per micro-batch, without a graph; the layers' backward
/// passes collect ∂L/∂ΔW, and the last of them runs the chain again, with a graph, for the chunk's tensor gradients:
/// <code>
///   materialize (no graph):  W_eff[l] = W0[l] + crop(M_T[l] − M_S[l])           (n, out, in)  kept until the chunk's backward
///   layer forward:           y = x W_effᵀ + b                                  saves x
///   layer backward:          ∂L/∂x = g W_eff,   G[l] = gᵀ x                    G: (n, out, in), filled layer by layer
///   last layer of the chunk: ∂L/∂R_B = (∂ crop(M_T) / ∂R_B)ᵀ G                 the chain re-run with a graph, for n layers
///                                                                              (QuanTAChainBlocks.TensorGradients)
/// </code>
/// Kept between forward and backward: W_eff for every layer, freed when its chunk's backward is done (the stacked path also
/// keeps W0 + ΔW, plus the chain's graph and the cached frozen chain; this path keeps neither). The chain's graph exists for one chunk at a time, while that chunk's
/// backward finishes. W0 is added on the layer's first forward (the layer hands it over), so the bank needs no layer.
/// </summary>
internal sealed class QuanTARecomputeChunk : IDisposable
{
    readonly QuanTAChainBlocks.ChainPlan _plan;
    readonly Tensor[] _opsValues;              // the chunk's T block operators (n, K, K), values only: the backward's re-run reads them
    readonly bool[] _merged;                   // W0 added into layer l's slice yet
    readonly bool[] _received;                 // layer l's ∂L/∂ΔW is in G
    Tensor? _weights;                          // (n, out, in): ΔW, then W0 + ΔW once merged
    Tensor? _g;                                // (n, out, in) ∂L/∂ΔW, allocated by the first backward

    /// <param name="plan">The group's chain plan.</param>
    /// <param name="ops">The chunk's T block operators (n, K, K) each, application order (their values are copied out of the graph).</param>
    /// <param name="delta">crop(M_T − M_S) for the chunk's layers, (n, out, in), computed without a graph; the chunk owns it.</param>
    /// <param name="returned">Where returned gradient wrappers wait to be freed.</param>
    public QuanTARecomputeChunk(QuanTAChainBlocks.ChainPlan plan, Tensor[] ops, Tensor delta, ReturnedGradients returned)
    {
        _plan = plan;
        _opsValues = ops.Select(o => o.detach().DetachFromDisposeScope()).ToArray();
        _weights = delta.DetachFromDisposeScope();
        Count = (int)delta.shape[0];
        _merged = new bool[Count];
        _received = new bool[Count];
        Returned = returned;
    }

    /// <summary>Layers in the chunk.</summary>
    public int Count { get; }

    /// <summary>Where returned gradient wrappers wait to be freed.</summary>
    public ReturnedGradients Returned { get; }

    /// <summary>False once the chunk's backward finished or the bank cleared it.</summary>
    public bool IsLive => _weights is { IsInvalid: false };

    /// <summary>True once the chunk's own backward released it (not the bank): a later forward that records a graph in the same
    /// micro-batch must be refused, not sent down the layer's own path (whose gradient the bank's optimizer never sees).</summary>
    public bool ReleasedByBackward { get; private set; }

    /// <summary>Set once <see cref="QuanTABank.CheckBackwardComplete"/> has reported this chunk's incomplete backward, so that
    /// the bank does not report it again.</summary>
    public bool Reported { get; set; }

    /// <summary>How many of the chunk's layers have handed in ∂L/∂ΔW (0 before the backward reaches the chunk).</summary>
    public int Received => _received.Count(r => r);

    /// <summary>W0 + ΔW (out, in) of layer <paramref name="index"/>, a new view the caller disposes; on first use W0 (the
    /// layer's weight, or its quantized form dequantized) is added in place into the chunk's ΔW. A W0 wider than the compute
    /// dtype (an fp32 base trained in bf16) widens the chunk first, as the stacked path's <c>W0 + ΔW</c> promotes.</summary>
    public Tensor MergedWeight(int index, Tensor weight, Quantization.QuantizedWeight? quantized)
    {
        if (!_merged[index])
        {
            using var _ = no_grad();
            using var dequantized = quantized?.Dequantize();
            var w0 = dequantized ?? weight;
            if (Wider(w0.dtype, Weights.dtype) is var wide && wide != Weights.dtype)
            {
                var widened = Weights.to_type(wide).DetachFromDisposeScope();
                _weights!.Dispose();
                _weights = widened;
            }
            using var slice = Weights[index];
            slice.add_(w0);
            _merged[index] = true;
        }
        return Weights[index];
    }

    static ScalarType Wider(ScalarType a, ScalarType b) =>
        a == ScalarType.Float64 || b == ScalarType.Float64 ? ScalarType.Float64
        : a == ScalarType.Float32 || b == ScalarType.Float32 ? ScalarType.Float32 : b;

    /// <summary>W0 + ΔW (out, in) of layer <paramref name="index"/>, merged by its forward (<see cref="MergedWeight"/>); a new
    /// view the caller disposes.</summary>
    public Tensor Merged(int index) => _merged[index] ? Weights[index]
        : throw new InvalidOperationException($"Layer {index} of this stacked-recompute chunk has no merged weight yet (its forward did not run).");

    Tensor Weights => _weights ?? throw new InvalidOperationException("This stacked-recompute chunk was already released (its " +
        "backward ran, or the bank was cleared): call QuanTABank.Materialize before every forward pass that is backpropagated.");

    /// <summary>
    /// Stores layer <paramref name="index"/>'s ∂L/∂ΔW = gᵀx (one GEMM written into the chunk's G). When it is the last of the
    /// chunk, returns ∂L/∂R_B for the chunk's block operators (n, K, K) each — the chain re-run with a graph on the kept
    /// values, differentiated against G — and releases the chunk; else null.
    /// </summary>
    public Tensor[]? AddWeightGradient(int index, Tensor g2, Tensor x2)
    {
        if (_received[index])
            throw new InvalidOperationException("A layer on the stacked-recompute path ran its backward twice for one forward; " +
                "backpropagate each micro-batch once (retain_graph is not supported on this path), or use the stacked path.");
        var w = Weights;
        _g ??= empty(w.shape, dtype: g2.dtype, device: w.device).DetachFromDisposeScope();      // in the output gradient's dtype
        using var gl = _g[index];
        gl.addmm_(g2.t(), x2.to_type(g2.dtype), beta: 0, alpha: 1);                                // G[l] = gᵀ x (beta 0: G is not read)
        _received[index] = true;
        if (Received < Count) return null;
        try
        {
            using var scope = NewDisposeScope();
            var grads = QuanTAChainBlocks.TensorGradients(_plan, _opsValues, _g);                  // of crop(M_T); M_S is constant
            foreach (var t in grads) t.DetachFromDisposeScope();
            return grads;
        }
        finally { Dispose(); ReleasedByBackward = true; }
    }

    /// <summary>Zero gradients for the chunk's block operators, as stride-0 views of one element: what a layer that does not
    /// finish the chunk returns. (An undefined gradient would reach the checkpointed block-operator nodes as undefined, and
    /// TorchSharp's custom-function node cannot zero-fill one once its forward's scope has ended.)</summary>
    public Tensor[] ZeroGradients() => _opsValues.Select(o => zeros(1, dtype: o.dtype, device: o.device).expand(o.shape)).ToArray();

    /// <summary>Frees the chunk's weights, gradient buffer and operator values.</summary>
    public void Dispose()
    {
        _weights?.Dispose(); _weights = null;
        _g?.Dispose(); _g = null;
        foreach (var o in _opsValues) o.Dispose();
    }
}

/// <summary>
/// One layer's step on the stacked-recompute path: y = x W_effᵀ + b with W_eff from its <see cref="QuanTARecomputeChunk"/>,
/// as one autograd node (<see cref="RecomputeLinearFunction"/>) whose inputs are x and the chunk's block operators (so that
/// the chunk's tensor gradients, returned by its last backward, flow on into the bank's stacked T).
/// </summary>
/// <param name="chunk">The chunk holding this layer's merged weight.</param>
/// <param name="index">The layer's place in the chunk.</param>
/// <param name="ops">The chunk's block operators with their graph to the stacked T (or the fresh leaves of a checkpointed
/// recompute).</param>
internal sealed class QuanTARecomputeStep(QuanTARecomputeChunk chunk, int index, Tensor[] ops) : IStepLinear
{
    bool _spent;

    /// <summary>Live while the chunk is; after the chunk's backward released it, still "live" for a forward that records a
    /// graph, so that <see cref="Forward"/> refuses it (as the stacked step does) instead of the layer's own path training
    /// tensors the bank's optimizer never sees. A forward without a graph then takes the layer's own path (the same values up
    /// to rounding).</summary>
    public bool IsLive => chunk.IsLive || (chunk.ReleasedByBackward && is_grad_enabled());

    public IReadOnlyList<Tensor> Inputs => ops;

    public IStepLinear Rebind(IReadOnlyList<Tensor> inputs) => new QuanTARecomputeStep(chunk, index, [.. inputs]);

    internal QuanTARecomputeChunk Chunk => chunk;
    internal int Index => index;

    public Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Quantization.QuantizedWeight? quantized)
    {
        if (weight.requires_grad || bias?.requires_grad == true)
            throw new InvalidOperationException("The stacked-recompute QuanTA path trains only the adapter: the layer's weight and " +
                "bias must stay frozen. Freeze them, or use the stacked path (QuanTATrainingPath.Stacked).");
        using var merged = chunk.MergedWeight(index, weight, quantized);                       // W0 + ΔW (out, in)
        bool opsNeedGrad = ops.Any(o => o.requires_grad);
        if (!is_grad_enabled() || (!x.requires_grad && !opsNeedGrad))
            return nn.functional.linear(x, merged.to_type(x.dtype), bias);                    // no graph: evaluation, or a checkpoint's first pass
        if (_spent)
            throw new InvalidOperationException("This layer already ran its stacked-recompute forward for this micro-batch: call " +
                "QuanTABank.Materialize before every forward pass that is backpropagated (each micro-batch), and Clear() when the step ends.");
        _spent = true;
        var args = new object?[3 + ops.Length];
        args[0] = x; args[1] = bias; args[2] = this;
        for (int i = 0; i < ops.Length; i++) args[3 + i] = ops[i];
        return CustomFunctionOutput.Apply(() => RecomputeLinearFunction.apply(args!));
    }
}

/// <summary>y = x W_effᵀ + b as one autograd node that keeps x (see <see cref="QuanTARecomputeChunk"/>). Arguments: x, b (or
/// null), the layer step, then the chunk's block operators, whose gradient the chunk's last backward returns.</summary>
internal sealed class RecomputeLinearFunction : autograd.SingleTensorFunction<RecomputeLinearFunction>
{
    public override string Name => "QuanTARecomputeLinear";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, b, step) = ((Tensor)vars[0], vars[1] as Tensor, (QuanTARecomputeStep)vars[2]);
        using var scope = NewDisposeScope();
        var y = nn.functional.linear(x, step.Chunk.Merged(step.Index).to_type(x.dtype), b);  // merged by the step before apply
        ctx.save_for_backward([x]);
        ctx.save_data("step", step);
        ctx.save_data("x_needs_grad", x.requires_grad);
        ctx.save_data("ops", vars.Length - 3);
        return CustomFunctionOutput.Keep(y);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        var step = (QuanTARecomputeStep)ctx.get_data("step");
        bool xNeedsGrad = (bool)ctx.get_data("x_needs_grad");
        int opCount = (int)ctx.get_data("ops");
        step.Chunk.Returned.Release();                       // the previous layer's returned gradients are in the engine now
        var saved = ctx.get_saved_variables();
        var result = new List<Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            var x = saved[0];
            var merged = step.Chunk.Merged(step.Index);
            long outF = merged.shape[0], inF = merged.shape[1];
            var g2 = g.reshape(-1, outF);                                                        // (M, out)
            var x2 = x.reshape(-1, inF);                                                         // (M, in)
            Tensor? gx = xNeedsGrad ? g2.mm(merged.to_type(g2.dtype)).reshape(x.shape) : null; // ∂L/∂x = g W_eff (before the chunk may be released)
            var gOps = step.Chunk.AddWeightGradient(step.Index, g2, x2) ?? step.Chunk.ZeroGradients();   // ∂L/∂R_B from the chunk's last layer
            result.Add(gx!); result.Add(null!); result.Add(null!);
            for (int i = 0; i < opCount; i++) result.Add(gOps[i]);
            foreach (var t in result) t?.DetachFromDisposeScope();
        }
        finally
        {
            foreach (var t in saved) t?.Dispose();
            g.Dispose();
        }
        step.Chunk.Returned.Hold(result);
        return result;
    }
}
