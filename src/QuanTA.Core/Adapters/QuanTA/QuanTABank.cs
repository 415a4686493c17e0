using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Core.Adapters;

/// <summary>
/// The fused QuanTA training paths (<see cref="QuanTATrainingPath.Stacked"/>, <see cref="QuanTATrainingPath.StackedRecompute"/>,
/// <see cref="QuanTATrainingPath.Layerwise"/>, <see cref="QuanTATrainingPath.LayerwiseUncached"/>): per step, the bank computes the chain for ALL adapted layers at once. Layers whose
/// adapters share a layout, pair chain and in/out size form a group; their tensors are stacked and the engine
/// (<see cref="QuanTAChainBlocks.Delta"/>, the same function as <see cref="QuanTAAdapter.DeltaWeight"/>) runs once per group:
/// <code>
///   T_stack_i[l] = T_i of layer l                     (L, d_m, d_n, d_m, d_n)
///   ΔW[l] = crop(M_T[l] − M_S[l])                     (L, out, in): one batched, blocked chain for the whole group
/// </code>
/// and every layer then runs ONE GEMM with <c>W0 + ΔW</c>: Stacked hands each layer its slice (<see cref="QuanTAStackedStep"/>);
/// StackedRecompute hands it its W0 + ΔW, built without a graph a chunk of layers at a time (<see cref="QuanTARecomputeStep"/>);
/// Layerwise hands it only its block operators and the layer builds ΔW inside its forward (<see cref="QuanTALayerwiseStep"/>).
/// Either way the layer's <see cref="Adapter.StepLinear"/> is set for the step. The chain's cost does not depend on the number
/// of tokens; adapters with dropout or a per-tensor rank are left on the per-layer path.
/// Call <see cref="Materialize"/> inside the step's dispose scope before every forward pass that is backpropagated (each
/// micro-batch: each layer uses its ΔW once and drops it), and <see cref="Clear"/> when the step ends.
/// <para>
/// The bank owns the trainable storage: for each group and tensor i it holds ONE stacked fp32 parameter
/// <c>T_stack_i</c> (L, d_m, d_n, d_m, d_n), and every adapter's own <c>T_i</c> is re-pointed (<c>set_</c>) to its slice, so
/// the adapters still see the current values (save, merge, <see cref="QuanTAAdapter.DeltaWeight"/>) while the optimizer
/// updates a handful of large tensors instead of hundreds of small ones (<see cref="OptimizerParameters"/>).
/// The frozen chain M_S is constant: it is computed once per compute dtype and cached, negated and uncropped on the same
/// basis vectors, so that M_T − M_S is one pass that reads the chain's last output in place (LayerwiseUncached rebuilds it
/// where it is needed instead, trading time for one weight-sized copy per layer).
/// Create the bank after the model is on its final device; moving the model afterwards breaks the sharing.
/// </para>
/// </summary>
public sealed class QuanTABank : IDisposable
{
    sealed record Group(AxisLayout Layout, int In, int Out, QuanTAAdapter[] Adapters, Parameter[] Stacked, QuanTAChainBlocks.ChainPlan Plan);

    readonly Group[] _groups;
    readonly Dictionary<(int Group, ScalarType DType), Tensor> _minusFrozenRaw = [];   // −(S chain on the basis vectors), uncropped
    readonly Dictionary<(int Group, ScalarType DType), Tensor[]> _frozenOps = [];      // S block operators (L, K, K), StackedRecompute
    readonly List<QuanTARecomputeChunk> _chunks = [];        // this micro-batch's StackedRecompute chunks
    readonly ReturnedGradients _returned = new();            // gradient wrappers handed to libtorch
    readonly int _recomputeChunk;
    string? _incompleteBackward;                             // a StackedRecompute chunk whose backward did not reach every layer

    QuanTABank(Group[] groups, QuanTATrainingPath path, int recomputeChunk) { _groups = groups; Path = path; _recomputeChunk = recomputeChunk; }

    /// <summary>Stacked, StackedRecompute, Layerwise or LayerwiseUncached.</summary>
    public QuanTATrainingPath Path { get; }

    /// <summary>Whether the frozen chain M_S (weight-sized per layer) is cached per compute dtype: Stacked and Layerwise.
    /// StackedRecompute caches only the frozen block operators (K×K per layer) and builds M_S with ΔW, without a graph.</summary>
    public bool CachesFrozenOperator => Path is QuanTATrainingPath.Stacked or QuanTATrainingPath.Layerwise;

    /// <summary>Default number of layers per chunk on the StackedRecompute path (<see cref="Create"/>): the chain's graph
    /// is re-run for one chunk at a time in the backward, while most activations are still alive, so its transient (a few
    /// weight-sized tensors per layer of the chunk) adds to the step's peak; fewer layers per chunk mean more, smaller
    /// launches. Measured choices: docs/training-paths.md.</summary>
    public const int DefaultRecomputeChunk = 4;

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

    /// <summary>Collects the full-rank, dropout-free QuanTA adapters attached to <paramref name="model"/>'s layers for
    /// <paramref name="path"/> (resolve Auto first: <see cref="QuanTATrainingPaths.Resolve"/>).</summary>
    /// <param name="model">The model with QuanTA adapters attached.</param>
    /// <param name="path">Stacked, StackedRecompute, Layerwise or LayerwiseUncached.</param>
    /// <param name="blockCap">Largest subspace (product of local dims) a block of consecutive pairs may span; 1 = one pair per
    /// block (<see cref="QuanTAChainBlocks"/>).</param>
    /// <param name="recomputeChunk">StackedRecompute only: layers whose chain is re-run together in the backward
    /// (<see cref="DefaultRecomputeChunk"/>).</param>
    public static QuanTABank Create(nn.Module model, QuanTATrainingPath path = QuanTATrainingPath.Stacked, int blockCap = QuanTAChainBlocks.DefaultBlockCap,
        int recomputeChunk = DefaultRecomputeChunk)
    {
        if (path is QuanTATrainingPath.Auto or QuanTATrainingPath.PerLayer)
            throw new ArgumentException($"A bank serves the fused paths (Stacked, StackedRecompute, Layerwise, LayerwiseUncached), not {path}" +
                (path == QuanTATrainingPath.Auto ? ": resolve Auto first (QuanTATrainingPaths.Resolve)." : "."), nameof(path));
        if (blockCap < 1) throw new ArgumentOutOfRangeException(nameof(blockCap), blockCap, "blockCap must be at least 1.");
        if (recomputeChunk < 1) throw new ArgumentOutOfRangeException(nameof(recomputeChunk), recomputeChunk, "recomputeChunk must be at least 1.");
        var groups = EligibleAdapters(model)
            .GroupBy(a => (Key: $"{string.Join(",", a.Layout.Dims)}|{string.Join(" ", a.Layout.Pairs)}", a.InFeatures, a.OutFeatures))
            .Select(g => Stack(g.First().Layout, g.Key.InFeatures, g.Key.OutFeatures, g.ToArray(), blockCap))
            .ToArray();
        return new QuanTABank(groups, path, recomputeChunk);
    }

    /// <summary>How many QuanTA adapters of <paramref name="model"/> a bank would serve, and how many stay on the per-layer
    /// path (dropout or a per-tensor rank), for the log.</summary>
    public static (int Fused, int PerLayer) CountEligible(nn.Module model)
    {
        var all = AdapterInjector.LinearLayers(model).Select(x => x.Layer.Adapter).OfType<QuanTAAdapter>().ToList();
        int fused = all.Count(IsEligible);
        return (fused, all.Count - fused);
    }

    static bool IsEligible(QuanTAAdapter a) => a.Rank is null && a.DropoutP == 0;

    /// <summary>The adapters a bank serves: full-rank QuanTA without dropout.</summary>
    static List<QuanTAAdapter> EligibleAdapters(nn.Module model) => AdapterInjector.LinearLayers(model)
        .Select(x => x.Layer.Adapter).OfType<QuanTAAdapter>()
        .Where(IsEligible).ToList();

    /// <summary>
    /// Rough extra device memory of the Stacked path over the frozen model for <paramref name="model"/>'s eligible
    /// adapters: about five weight-sized tensors per adapted layer in the compute dtype (W0 + ΔW and the chain's last input
    /// kept for the backward, the cached frozen chain, the gradients the chain's backward makes), calibrated on GPU runs
    /// (figures in docs/performance.md). The layerwise paths keep none of these between forward and backward.
    /// </summary>
    public static long EstimatedStackedExtraBytes(nn.Module model, ScalarType computeDType)
    {
        long size = ElementBytes(computeDType);
        return EligibleAdapters(model).Sum(a => 5L * a.InFeatures * a.OutFeatures * size);
    }

    /// <summary>Bytes per element of a compute dtype (fp64, fp32, else a 16-bit type).</summary>
    static long ElementBytes(ScalarType computeDType) => computeDType switch { ScalarType.Float32 => 4, ScalarType.Float64 => 8, _ => 2 };

    /// <summary>
    /// Rough extra device memory of the StackedRecompute path over the frozen model: W0 + ΔW for every eligible adapted layer
    /// (one weight-sized tensor each, kept from forward to backward) plus one chunk's transient while its chain is re-run in
    /// the backward (about five weight-sized tensors per layer of the chunk).
    /// </summary>
    public static long EstimatedRecomputeExtraBytes(nn.Module model, ScalarType computeDType, int recomputeChunk = DefaultRecomputeChunk)
    {
        long size = ElementBytes(computeDType);
        var adapters = EligibleAdapters(model);
        if (adapters.Count == 0) return 0;
        long largest = adapters.Max(a => (long)a.InFeatures * a.OutFeatures);
        return adapters.Sum(a => (long)a.InFeatures * a.OutFeatures * size) + 5L * recomputeChunk * largest * size;
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
    /// Sets every served layer's <see cref="Adapter.StepLinear"/> for the next forward pass, in <paramref name="computeDType"/>
    /// and differentiable w.r.t. the stacked T: Stacked computes each group's ΔW (L, out, in) and hands each layer its slice,
    /// which the layer uses once; StackedRecompute hands each layer its W0 + ΔW (built here without a graph, a chunk of layers at
    /// a time); Layerwise hands each layer its block operators. Call it inside the step's dispose scope
    /// before every forward pass that is backpropagated (each micro-batch), and <see cref="Clear"/> when the step ends.
    /// </summary>
    public void Materialize(ScalarType computeDType)
    {
        _returned.ReleaseAll();
        ReleaseChunks();
        if (_incompleteBackward is { } problem) { _incompleteBackward = null; throw new InvalidOperationException(problem); }
        for (int gi = 0; gi < _groups.Length; gi++)
        {
            var g = _groups[gi];
            if (Path == QuanTATrainingPath.StackedRecompute) { MaterializeRecompute(gi, computeDType); continue; }
            if (Path != QuanTATrainingPath.Stacked) { MaterializeLayerwise(gi, computeDType); continue; }
            var delta = GroupDelta(gi, computeDType);                          // (L, out, in)
            // unbind, not delta[l]: one autograd node whose backward stacks the L slice gradients once. Indexing would give
            // each slice a select-backward that writes its gradient into a zero (L, out, in) tensor, and the engine would sum
            // L of those: O(L²·out·in) memory traffic.
            var slices = delta.unbind(0);
            delta.Dispose();                                                   // the slices hold the storage; each layer lets go
            for (int l = 0; l < g.Adapters.Length; l++)                        // of its slice after its forward, so ΔW is freed
                g.Adapters[l].StepLinear = new QuanTAStackedStep(slices[l]);   // before the backward. (out, in)
        }
    }

    /// <summary>Layerwise: each layer of group gi gets its block operators (views of one batched computation per block,
    /// differentiable w.r.t. the stacked T) and its frozen part; the layer does the rest (<see cref="QuanTALayerwiseStep"/>).</summary>
    void MaterializeLayerwise(int gi, ScalarType dtype)
    {
        var g = _groups[gi];
        var ops = TensorBlockOperators(g, dtype).Select(o => o.unbind(0)).ToArray();                      // [block][layer] (K, K)
        Tensor[]? frozen = null;
        Tensor[][]? frozenOps = null;
        if (CachesFrozenOperator) frozen = MinusFrozenRaw(gi, dtype).unbind(0);                           // [layer] (basis, D)
        else
            using (no_grad()) frozenOps = FrozenBlockOperators(g, dtype).Select(o => o.unbind(0)).ToArray();
        for (int l = 0; l < g.Adapters.Length; l++)
            g.Adapters[l].StepLinear = new QuanTALayerwiseStep(g.Plan, ops.Select(o => o[l]).ToArray(), frozen?[l],
                frozenOps?.Select(o => o[l]).ToArray(), _returned);
    }

    /// <summary>StackedRecompute: each chunk of <c>recomputeChunk</c> layers gets its W0 + ΔW slices, built here without a
    /// graph (T chain minus S chain, <see cref="QuanTAChainBlocks.DeltaWithoutGraph"/>), and its block operators with their graph to the
    /// stacked T, which the chunk's last backward differentiates (<see cref="QuanTARecomputeChunk"/>).</summary>
    void MaterializeRecompute(int gi, ScalarType dtype)
    {
        var g = _groups[gi];
        var ops = TensorBlockOperators(g, dtype);                                                          // (L, K, K) each, graph to T
        var frozen = FrozenOperators(gi, dtype);                                                           // (L, K, K) each, cached
        var chunks = ops.Select(o => o.split(_recomputeChunk)).ToArray();                                 // [block][chunk]: one split node each
        for (int c = 0, first = 0; first < g.Adapters.Length; c++, first += _recomputeChunk)
        {
            int n = Math.Min(_recomputeChunk, g.Adapters.Length - first);
            var chunkOps = chunks.Select(b => b[c]).ToArray();                                             // (n, K, K), differentiable
            QuanTARecomputeChunk chunk;
            using (no_grad())
            {
                using var scope = NewDisposeScope();
                var values = chunkOps.Select(o => o.detach()).ToArray();
                var frozenChunk = frozen.Select(o => o.narrow(0, first, n)).ToArray();
                var delta = QuanTAChainBlocks.DeltaWithoutGraph(g.Plan, values, frozenChunk);                    // (n, out, in), a view
                // a transposed (columns) or cropped view of the (n, basis, D) chain output: keep a compact copy instead, so the
                // GEMMs read a contiguous weight and the kept memory is out·in per layer
                if (!delta.is_contiguous()) delta = delta.contiguous();
                chunk = new QuanTARecomputeChunk(g.Plan, values, delta, _returned);
            }
            _chunks.Add(chunk);
            for (int l = 0; l < n; l++)
                g.Adapters[first + l].StepLinear = new QuanTARecomputeStep(chunk, l, chunkOps);
        }
    }

    /// <summary>The group's frozen S block operators (L, K, K) each, cached per compute dtype (StackedRecompute).</summary>
    Tensor[] FrozenOperators(int gi, ScalarType dtype)
    {
        if (_frozenOps.TryGetValue((gi, dtype), out var cached)) return cached;
        using var _ = no_grad();
        return _frozenOps[(gi, dtype)] = FrozenBlockOperators(_groups[gi], dtype).Select(o => o.DetachFromDisposeScope()).ToArray();
    }

    /// <summary>
    /// StackedRecompute: throws once when this micro-batch's backward reached some but not all layers of one or more chunks
    /// (those layers' tensor gradients were never computed). Call it after the backward and before the optimizer step (the fine-tuning loop
    /// does), so that a wrong update is never applied; a problem not checked here is reported by the next
    /// <see cref="Materialize"/>. The other paths have nothing to check.
    /// </summary>
    /// <exception cref="InvalidOperationException">a chunk's backward is incomplete.</exception>
    public void CheckBackwardComplete()
    {
        var incomplete = _chunks.Where(c => IsIncomplete(c) && !c.Reported).ToList();
        if (incomplete.Count == 0) return;
        foreach (var c in incomplete) c.Reported = true;                       // one report for all of this backward's chunks
        throw new InvalidOperationException(IncompleteMessage(incomplete[0]) +
            (incomplete.Count > 1 ? $" ({incomplete.Count} chunks are incomplete.)" : ""));
    }

    static bool IsIncomplete(QuanTARecomputeChunk c) => c.IsLive && c.Received > 0;

    static string IncompleteMessage(QuanTARecomputeChunk c) =>
        $"The backward pass reached only {c.Received} of the {c.Count} layers of a stacked-recompute chunk, so the QuanTA tensors " +
        "of those layers got no gradient (an adapted layer's output does not reach the loss, or the backward stopped part-way): on " +
        "this path every adapted layer's output must reach the loss. Use the stacked path (TrainingPath = Stacked, CLI " +
        "--training-path stacked) for such a model.";

    /// <summary>Frees this micro-batch's StackedRecompute chunks, noting one whose backward reached some but not all of its
    /// layers unless <see cref="CheckBackwardComplete"/> reported it already (the next <see cref="Materialize"/> reports it).</summary>
    void ReleaseChunks()
    {
        foreach (var c in _chunks)
        {
            if (IsIncomplete(c) && !c.Reported) _incompleteBackward ??= IncompleteMessage(c);
            c.Dispose();
        }
        _chunks.Clear();
    }

    /// <summary>Forgets the step's tensors (the layers go back to their own path).</summary>
    public void Clear()
    {
        foreach (var g in _groups)
            foreach (var a in g.Adapters) a.StepLinear = null;
        _returned.ReleaseAll();
        ReleaseChunks();
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

    /// <summary>Layers per batch when a layerwise path builds the cached frozen chain: the chain's intermediates are each as
    /// large as the result, so building all L layers at once makes a transient of several times the cache, which on a
    /// quantized or checkpointed run set the step's peak (H200, LLaMA-7B NF4 + checkpointing: 13.1 → 8.6 GiB). The stacked
    /// path builds it at once: it keeps ΔW-sized tensors of every layer for its backward anyway, and there the batched build
    /// raised the peak (the allocator's cached blocks fit its later tensors worse).</summary>
    internal const int FrozenChainLayersPerBatch = 8;

    /// <summary>−(the S chain on the basis vectors), (L, basis, D), uncropped, without gradient; cached unless disabled. The
    /// cached form is built <see cref="FrozenChainLayersPerBatch"/> layers at a time into one preallocated tensor.</summary>
    Tensor MinusFrozenRaw(int gi, ScalarType dtype)
    {
        if (_minusFrozenRaw.TryGetValue((gi, dtype), out var cached)) return cached;
        var g = _groups[gi];
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var ops = FrozenBlockOperators(g, dtype);                                          // (L, K, K) each, small
        long layers = ops[0].shape[0];
        if (!CachesFrozenOperator || Path == QuanTATrainingPath.Stacked || layers <= FrozenChainLayersPerBatch)
        {
            var m = QuanTAChainBlocks.NegatedRaw(g.Plan, ops);                             // (L, basis, D) contiguous
            if (!CachesFrozenOperator) return m.MoveToOuterDisposeScope();
            return _minusFrozenRaw[(gi, dtype)] = m.DetachFromDisposeScope();
        }
        Tensor? all = null;
        for (long first = 0; first < layers; first += FrozenChainLayersPerBatch)
        {
            using var batch = NewDisposeScope();
            long n = Math.Min(FrozenChainLayersPerBatch, layers - first);
            var part = QuanTAChainBlocks.NegatedRaw(g.Plan, ops.Select(o => o.narrow(0, first, n)).ToArray());   // (n, basis, D)
            all ??= empty([layers, .. part.shape[1..]], dtype: part.dtype, device: part.device).DetachFromDisposeScope();
            all.narrow(0, first, n).copy_(part);
        }
        return _minusFrozenRaw[(gi, dtype)] = all!;
    }

    /// <summary>Frees the cached frozen operators, the plans' cached index tensors and the stacked parameters' references (the
    /// adapters keep their slices).</summary>
    public void Dispose()
    {
        Clear();
        foreach (var t in _minusFrozenRaw.Values) t.Dispose();
        _minusFrozenRaw.Clear();
        foreach (var t in _frozenOps.Values.SelectMany(o => o)) t.Dispose();
        _frozenOps.Clear();
        foreach (var g in _groups) g.Plan.ReleaseCachedIndices();
    }
}
