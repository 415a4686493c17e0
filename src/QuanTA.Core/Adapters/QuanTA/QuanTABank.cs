using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// The fast training path for QuanTA: materializes ΔW for ALL adapted layers of a model at once, per step. Layers whose
/// adapters share a layout, pair chain and in/out size form a group; their tensors are stacked and the engine
/// (<see cref="QuanTAChainBlocks.Delta"/>, the same function as <see cref="QuanTAAdapter.DeltaWeight"/>) runs once per group:
/// <code>
///   T_stack_i[l] = T_i of layer l                     (L, d_m, d_n, d_m, d_n)
///   ΔW[l] = crop(M_T[l] − M_S[l])                     (L, out, in): one batched, blocked chain for the whole group
/// </code>
/// and every layer then runs ONE GEMM with <c>W0 + ΔW</c> (<see cref="Adapter.StepDeltaWeight"/>). The chain's cost does not
/// depend on the number of tokens; adapters with dropout or a per-tensor rank are left on their own path.
/// Call <see cref="Materialize"/> inside the step's dispose scope before every forward pass that is backpropagated (each
/// micro-batch: each layer uses its ΔW once and drops it), and <see cref="Clear"/> when the step ends.
/// <para>
/// The bank owns the trainable storage: for each group and tensor i it holds ONE stacked fp32 parameter
/// <c>T_stack_i</c> (L, d_m, d_n, d_m, d_n), and every adapter's own <c>T_i</c> is re-pointed (<c>set_</c>) to its slice, so
/// the adapters still see the current values (save, merge, <see cref="QuanTAAdapter.DeltaWeight"/>) while the optimizer
/// updates a handful of large tensors instead of hundreds of small ones (<see cref="OptimizerParameters"/>).
/// The frozen chain M_S is constant: it is computed once per compute dtype and cached, negated and uncropped on the same
/// basis vectors, so that M_T − M_S is one pass that reads the chain's last output in place (set
/// <c>cacheFrozenOperator: false</c> to recompute it each step instead, trading time for one weight-sized copy).
/// Create the bank after the model is on its final device; moving the model afterwards breaks the sharing.
/// </para>
/// </summary>
public sealed class QuanTABank : IDisposable
{
    sealed record Group(AxisLayout Layout, int In, int Out, QuanTAAdapter[] Adapters, Parameter[] Stacked, QuanTAChainBlocks.ChainPlan Plan);

    readonly Group[] _groups;
    readonly bool _cacheFrozen;
    readonly Dictionary<(int Group, ScalarType DType), Tensor> _minusFrozenRaw = [];   // −(S chain on the basis vectors), uncropped
    readonly (Tensor Delta, ScalarType DType)?[] _leaves;   // recompute mode: this step's ΔW per group, a leaf owned by the bank
    readonly ReturnedGradients _returned = new();            // layerwise mode: gradient wrappers handed to libtorch

    QuanTABank(Group[] groups, bool cacheFrozen, bool recompute, bool layerwise, bool keepMerged)
    {
        _groups = groups; _cacheFrozen = cacheFrozen; RecomputeChainInBackward = recompute; Layerwise = layerwise;
        KeepsMergedWeight = keepMerged;
        _leaves = new (Tensor, ScalarType)?[groups.Length];
    }

    /// <summary>
    /// True: the memory-lean path (<see cref="QuanTALayerStep"/>). <see cref="Materialize"/> computes only each layer's small
    /// block operators; every adapted layer builds W0 + ΔW inside its own forward and again in its backward (a custom
    /// autograd node that saves only its input), so no weight-sized tensor is kept between forward and backward. The chain
    /// runs twice per step; peak memory stays close to the frozen model's. With <c>cacheFrozenOperator</c> the constant
    /// S chain of every layer is still kept, negated and uncropped on the basis vectors ((basis, D) per adapted layer in the
    /// compute dtype: weight-sized for square layers, larger when D pads past max(in, out)); without it it is rebuilt from
    /// its block operators in each forward and backward.
    /// </summary>
    public bool Layerwise { get; }

    /// <summary>
    /// Layerwise mode only: true keeps each layer's W0 + ΔW from its forward for its backward (one weight-sized tensor per
    /// adapted layer in the compute dtype, held from the layer's forward to its backward) instead of building it again
    /// there: the chain runs once per step, as in the stacked path, but the backward still never forms ∂L/∂ΔW.
    /// </summary>
    public bool KeepsMergedWeight { get; }

    /// <summary>Whether the frozen chain M_S is cached per compute dtype (else rebuilt where it is needed).</summary>
    public bool CachesFrozenOperator => _cacheFrozen;

    /// <summary>
    /// True: the chain's activations are not kept for the backward pass. <see cref="Materialize"/> computes ΔW without a graph
    /// as a leaf that collects dL/dΔW from every micro-batch of the step, and <see cref="PropagateChainGradients"/> (call it
    /// after the backward passes, before the optimizer step) runs the chain once more with a graph and pushes that gradient
    /// through it: one extra chain forward per optimizer step, in exchange for the chain's saved activations (the same ΔW is
    /// reused by every micro-batch of a step, so with gradient accumulation the chain also runs once per step, not per
    /// micro-batch). False (default): ΔW is part of each micro-batch's graph and needs no extra call.
    /// </summary>
    public bool RecomputeChainInBackward { get; }

    /// <summary>The stacked trainable tensors (one per group and chain position); give these to the optimizer.</summary>
    public IEnumerable<Parameter> Parameters => _groups.SelectMany(g => g.Stacked);

    /// <summary>
    /// What the optimizer should train: the bank's stacked tensors plus every other trainable parameter of
    /// <paramref name="model"/> that the bank does not cover (LoRA, low-rank QuanTA, heads).
    /// </summary>
    public IReadOnlyList<(string Name, Parameter Parameter)> OptimizerParameters(nn.Module model)
    {
        var covered = new HashSet<IntPtr>(_groups.SelectMany(g => g.Adapters).SelectMany(a => a.parameters()).Select(p => p.Handle));
        var list = new List<(string, Parameter)>();
        for (int gi = 0; gi < _groups.Length; gi++)
            for (int i = 0; i < _groups[gi].Stacked.Length; i++) list.Add(($"quanta_bank.{gi}.T_stack_{i}", _groups[gi].Stacked[i]));
        foreach (var (name, p) in model.named_parameters())
            if (p.requires_grad && !covered.Contains(p.Handle)) list.Add((name, p));
        return list;
    }

    /// <summary>Number of adapters served by the bank.</summary>
    public int AdapterCount => _groups.Sum(g => g.Adapters.Length);

    /// <summary>Number of groups (one batched chain each).</summary>
    public int GroupCount => _groups.Length;

    /// <summary>Collects the full-rank, dropout-free QuanTA adapters attached to <paramref name="model"/>'s layers.</summary>
    /// <param name="model">The model with QuanTA adapters attached.</param>
    /// <param name="cacheFrozenOperator">Keep crop(M_S) per compute dtype instead of recomputing it every step.</param>
    /// <param name="blockCap">Largest subspace (product of local dims) a block of consecutive pairs may span; 1 = one pair per
    /// block (<see cref="QuanTAChainBlocks"/>).</param>
    /// <param name="recomputeChainInBackward">See <see cref="RecomputeChainInBackward"/> (then call
    /// <see cref="PropagateChainGradients"/> every optimizer step).</param>
    /// <param name="layerwise">See <see cref="Layerwise"/> (excludes <paramref name="recomputeChainInBackward"/>).</param>
    /// <param name="keepMergedWeight">See <see cref="KeepsMergedWeight"/> (needs <paramref name="layerwise"/>).</param>
    public static QuanTABank Create(nn.Module model, bool cacheFrozenOperator = true, int blockCap = QuanTAChainBlocks.DefaultBlockCap, bool recomputeChainInBackward = false,
        bool layerwise = false, bool keepMergedWeight = false)
    {
        if (keepMergedWeight && !layerwise)
            throw new ArgumentException("keepMergedWeight applies to the layerwise path only (the stacked path keeps ΔW in its graph).", nameof(keepMergedWeight));
        if (layerwise && recomputeChainInBackward)
            throw new ArgumentException("Choose one memory mode: layerwise already rebuilds the chain in the backward pass.", nameof(layerwise));
        if (blockCap < 1) throw new ArgumentOutOfRangeException(nameof(blockCap), blockCap, "blockCap must be at least 1.");
        var groups = EligibleAdapters(model)
            .GroupBy(a => (Key: $"{string.Join(",", a.Layout.Dims)}|{string.Join(" ", a.Layout.Pairs)}", a.InFeatures, a.OutFeatures))
            .Select(g => Stack(g.First().Layout, g.Key.InFeatures, g.Key.OutFeatures, g.ToArray(), blockCap))
            .ToArray();
        return new QuanTABank(groups, cacheFrozenOperator, recomputeChainInBackward, layerwise, keepMergedWeight);
    }

    /// <summary>The adapters a bank serves: full-rank QuanTA without dropout.</summary>
    static List<QuanTAAdapter> EligibleAdapters(nn.Module model) => AdapterInjector.LinearLayers(model)
        .Select(x => x.Layer.Adapter).OfType<QuanTAAdapter>()
        .Where(a => a.Rank is null && a.DropoutP == 0).ToList();

    /// <summary>
    /// Rough extra device memory of the default (stacked) path over the frozen model for <paramref name="model"/>'s eligible
    /// adapters: about five weight-sized tensors per adapted layer in the compute dtype (W0 + ΔW and the chain's last input
    /// kept for the backward, the cached frozen chain, the gradients the chain's backward makes), calibrated on GPU runs
    /// (figures in docs/performance.md). The layerwise path keeps none of these between forward and backward.
    /// </summary>
    public static long EstimatedStackedExtraBytes(nn.Module model, ScalarType computeDType)
    {
        long size = computeDType switch { ScalarType.Float32 => 4, ScalarType.Float64 => 8, _ => 2 };
        return EligibleAdapters(model).Sum(a => 5L * a.InFeatures * a.OutFeatures * size);
    }

    /// <summary>Re-points <paramref name="target"/>'s storage at <paramref name="view"/> (in place, <c>set_</c>).</summary>
    static void Alias(Tensor target, Tensor view)
    {
        var ret = target.set_(view);
        // TorchSharp wraps the native result in a new Tensor; when that is the very same native handle, the wrapper
        // must neither be disposed nor finalized (it would free the parameter).
        if (ret.Handle == target.Handle) GC.SuppressFinalize(ret); else ret.Dispose();
    }

    /// <summary>Makes the group's stacked parameters and points every adapter's T_i at its slice.</summary>
    static Group Stack(AxisLayout layout, int inF, int outF, QuanTAAdapter[] adapters, int blockCap)
    {
        using var _ = no_grad();
        var stacked = new Parameter[layout.TensorCount];
        for (int i = 0; i < layout.TensorCount; i++)
        {
            var data = stack(adapters.Select(a => a.TensorT(i)).ToArray()).to_type(ScalarType.Float32);   // (L, d_m, d_n, d_m, d_n)
            stacked[i] = new Parameter(data, requires_grad: true);
            for (int l = 0; l < adapters.Length; l++)
                Alias(adapters[l].TensorT(i), stacked[i][l]);                                             // T_i of layer l aliases slice l
        }
        return new Group(layout, inF, outF, adapters, stacked, QuanTAChainBlocks.MakePlan(layout, blockCap, inF, outF));
    }

    /// <summary>
    /// Computes ΔW for every adapter of the bank in <paramref name="computeDType"/> and hands each adapter its slice as
    /// <see cref="Adapter.StepDeltaWeight"/>, for the next forward pass (call it for each micro-batch). By default ΔW is
    /// differentiable w.r.t. T and each layer drops its slice after using it; with <see cref="RecomputeChainInBackward"/> it
    /// is the step's leaf (made on the first call of a step, reused by the step's later micro-batches, kept until
    /// <see cref="PropagateChainGradients"/> carries its gradient to T).
    /// </summary>
    public void Materialize(ScalarType computeDType)
    {
        _returned.ReleaseAll();
        for (int gi = 0; gi < _groups.Length; gi++)
        {
            var g = _groups[gi];
            if (Layerwise) { MaterializeLayerwise(gi, computeDType); continue; }
            var delta = RecomputeChainInBackward ? StepLeaf(gi, computeDType) : GroupDelta(gi, computeDType);   // (L, out, in)
            // unbind, not delta[l]: one autograd node whose backward stacks the L slice gradients once. Indexing would give
            // each slice a select-backward that writes its gradient into a zero (L, out, in) tensor, and the engine would sum
            // L of those: O(L²·out·in) memory traffic.
            var slices = delta.unbind(0);
            if (!RecomputeChainInBackward) delta.Dispose();                    // the slices hold the storage; each layer lets go
            for (int l = 0; l < g.Adapters.Length; l++)                        // of its slice after its forward (AdaptableLinear),
            {                                                                  // so ΔW is freed before the backward. (out, in)
                g.Adapters[l].StepDeltaWeight = slices[l];
                g.Adapters[l].StepDeltaSingleUse = !RecomputeChainInBackward;   // recompute mode: one leaf for the whole step
                g.Adapters[l].StepDeltaSpent = false;
            }
        }
    }

    /// <summary>Layerwise mode: each layer of group gi gets its block operators (views of one batched computation per block,
    /// differentiable w.r.t. the stacked T) and its frozen part; the layer does the rest (<see cref="QuanTALayerStep"/>).</summary>
    void MaterializeLayerwise(int gi, ScalarType dtype)
    {
        var g = _groups[gi];
        var plan = g.Plan;
        var ops = TensorBlockOperators(g, dtype).Select(o => o.unbind(0)).ToArray();                      // [block][layer] (K, K)
        Tensor[]? frozen = null;
        Tensor[][]? frozenOps = null;
        if (_cacheFrozen) frozen = MinusFrozenRaw(gi, dtype).unbind(0);                                    // [layer] (basis, D)
        else
            using (no_grad()) frozenOps = FrozenBlockOperators(g, dtype).Select(o => o.unbind(0)).ToArray();
        for (int l = 0; l < g.Adapters.Length; l++)
        {
            g.Adapters[l].StepDeltaSpent = false;
            g.Adapters[l].StepLinear = new QuanTALayerStep(plan, ops.Select(o => o[l]).ToArray(), frozen?[l],
                frozenOps?.Select(o => o[l]).ToArray(), _returned, KeepsMergedWeight);
        }
    }

    /// <summary>Recompute mode: this step's ΔW of group gi as a leaf without graph, made once per step and shared by its
    /// micro-batches (T does not change within a step).</summary>
    Tensor StepLeaf(int gi, ScalarType dtype)
    {
        if (_leaves[gi] is { } held)
        {
            if (held.DType == dtype) return held.Delta;
            throw new InvalidOperationException($"ΔW of this step was made in {held.DType}; call PropagateChainGradients() or Clear() before materializing in {dtype}.");
        }
        Tensor leaf;
        using (no_grad()) leaf = GroupDelta(gi, dtype).DetachFromDisposeScope();   // (L, out, in), no chain activations kept
        leaf.requires_grad_(true);
        _leaves[gi] = (leaf, dtype);
        return leaf;
    }

    /// <summary>
    /// Recompute mode: pushes the gradient that this step's backward passes left on ΔW through the tensor chain (run once
    /// more, with a graph) into the stacked T tensors' gradients, then forgets the step's ΔW. Call it after the backward
    /// passes and before clipping / data-parallel averaging / the optimizer step. Returns the number of groups propagated
    /// (0 in the default mode, or when no forward used ΔW this step).
    /// </summary>
    public int PropagateChainGradients()
    {
        int done = 0;
        for (int gi = 0; gi < _groups.Length; gi++)
        {
            if (_leaves[gi] is not { } held) continue;
            using (var scope = NewDisposeScope())
            {
                if (held.Delta.grad is { } grad)
                {
                    using var _ = enable_grad();
                    GroupDelta(gi, held.DType).backward([grad]);          // dL/dT += (∂ΔW/∂T)ᵀ · dL/dΔW
                    done++;
                }
            }
            held.Delta.Dispose();
            _leaves[gi] = null;
            foreach (var a in _groups[gi].Adapters) a.StepDeltaWeight = null;   // the step's ΔW is spent: no later forward may use it
        }
        return done;
    }

    /// <summary>Forgets the step's ΔW (the layers go back to their own path); in recompute mode also any ΔW whose gradient
    /// was not propagated.</summary>
    public void Clear()
    {
        foreach (var g in _groups)
            foreach (var a in g.Adapters) { a.StepDeltaWeight = null; a.StepLinear = null; a.StepDeltaSpent = false; }
        _returned.ReleaseAll();
        for (int gi = 0; gi < _leaves.Length; gi++) { _leaves[gi]?.Delta.Dispose(); _leaves[gi] = null; }
    }

    /// <summary>ΔW of every layer of a group, (L, out, in): the engine (<see cref="QuanTAChainBlocks.Delta"/>) on the stacked
    /// T's block operators and the (cached) S chain.</summary>
    Tensor GroupDelta(int gi, ScalarType dtype)
    {
        // Own scope: the chain's intermediates (each as large as ΔW) are freed here unless autograd saved them, instead of
        // living in the caller's step scope until the step ends.
        using var scope = NewDisposeScope();
        var g = _groups[gi];
        return QuanTAChainBlocks.Delta(g.Plan, TensorBlockOperators(g, dtype), () => MinusFrozenRaw(gi, dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>The group's block operators from its stacked T (L, K, K) each, differentiable.</summary>
    Tensor[] TensorBlockOperators(Group g, ScalarType dtype) => QuanTAChainBlocks.BlockOperators(
        g.Plan, g.Stacked.Select(p => p.to_type(dtype)).ToArray(), dtype, g.Stacked[0].device, checkpoint: _returned);   // from (L, d_m, d_n, d_m, d_n)

    /// <summary>The group's block operators from the adapters' frozen S (call without gradient).</summary>
    static Tensor[] FrozenBlockOperators(Group g, ScalarType dtype) => QuanTAChainBlocks.BlockOperators(
        g.Plan, Enumerable.Range(0, g.Layout.TensorCount).Select(i => stack(g.Adapters.Select(a => a.TensorS(i)).ToArray()).to_type(dtype)).ToArray(),
        dtype, g.Stacked[0].device);

    /// <summary>−(the S chain on the basis vectors), (L, basis, D), uncropped, without gradient; cached unless disabled.</summary>
    Tensor MinusFrozenRaw(int gi, ScalarType dtype)
    {
        if (_minusFrozenRaw.TryGetValue((gi, dtype), out var cached)) return cached;
        var g = _groups[gi];
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var m = QuanTAChainBlocks.NegatedRaw(g.Plan, FrozenBlockOperators(g, dtype));   // (L, basis, D) contiguous
        if (!_cacheFrozen) return m.MoveToOuterDisposeScope();
        m = m.DetachFromDisposeScope();
        _minusFrozenRaw[(gi, dtype)] = m;
        return m;
    }

    /// <summary>Frees the cached frozen operators, the plans' cached index tensors and the stacked parameters' references (the
    /// adapters keep their slices).</summary>
    public void Dispose()
    {
        Clear();
        foreach (var t in _minusFrozenRaw.Values) t.Dispose();
        _minusFrozenRaw.Clear();
        foreach (var g in _groups) g.Plan.ReleaseCachedIndices();
    }
}
