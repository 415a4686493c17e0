using QuanTA.Core.Runtime;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// The QuanTA engine: the tensor chain materialized in blocks, for L layers of one shape at once (L = 1 for one adapter).
/// <see cref="Delta"/> is the one evaluation of ΔW = crop(M_T − M_S) that every path uses: <see cref="QuanTAAdapter.DeltaWeight"/>
/// (merge, export, the per-layer materialized forward), the stacked bank (<see cref="QuanTABank.Materialize"/>) and the
/// layerwise step (<see cref="QuanTALayerwiseStep"/>); the tests pin it to the adapter's per-pair reference chain.
/// Consecutive pairs whose axes together span at most <c>cap</c> entries form one block B with axis set A_B; the block's
/// operator O_B = (its pairs' chain) is a small K×K matrix (K = Π_{a∈A_B} d_a) computed on its own subspace, and the
/// full operator is the product of the blocks, each acting on its axes only:
/// <code>
///   M = O_{B_n} ∘ … ∘ O_{B_1},        O_B = T_{last in B} ∘ … ∘ T_{first in B}   (on the axes A_B)
/// </code>
/// Applying a block to the (L, basis, D) stack is one batched GEMM with inner size K (e.g. 128…1024), instead of one
/// memory-bound contraction per pair with inner size d_m·d_n: fewer passes over the D-sized stack, and tensor-core shapes.
/// </summary>
static class QuanTAChainBlocks
{
    /// <summary>Largest subspace a block of consecutive pairs may span by default (<see cref="Partition"/>).</summary>
    internal const int DefaultBlockCap = 1024;

    /// <summary>Number of entries the given axes span: the product of their local dims.</summary>
    internal static long Span(AxisLayout lay, IEnumerable<int> axes) => axes.Aggregate(1L, (p, a) => p * lay.Dims[a]);

    /// <summary>Greedy partition of the chain into blocks of consecutive pairs whose axes span ≤ <paramref name="cap"/> entries
    /// (a single pair larger than the cap is a block on its own).</summary>
    public static List<(int[] Axes, int[] PairIndices)> Partition(AxisLayout lay, int cap)
    {
        var blocks = new List<(int[], int[])>();
        var axes = new SortedSet<int>(); var pairs = new List<int>();
        for (int i = 0; i < lay.TensorCount; i++)
        {
            var (m, n) = lay.Pairs[i];
            var union = new SortedSet<int>(axes) { m, n };
            if (pairs.Count > 0 && Span(lay, union) > cap) { blocks.Add((axes.ToArray(), pairs.ToArray())); axes.Clear(); pairs.Clear(); union = [m, n]; }
            axes = union; pairs.Add(i);
        }
        if (pairs.Count > 0) blocks.Add((axes.ToArray(), pairs.ToArray()));
        return blocks;
    }

    /// <summary>crop_{out×in}(M) (L, out, in) for L layers from the stacked tensors (L, d_m, d_n, d_m, d_n) in chain order.</summary>
    public static Tensor CroppedOperator(AxisLayout lay, Tensor[] tensors, int inF, int outF, int cap, ScalarType dtype, Device dev, bool? columnsOverride = null)
        => DeltaOfTensors(lay, tensors, null, inF, outF, cap, dtype, dev, columnsOverride);

    /// <summary><see cref="Delta"/> straight from L layers' stacked tensors T (differentiable) and S (constant; null: crop(M_T)
    /// alone), each (L, d_m, d_n, d_m, d_n) in chain order, on a plan made for this call (<see cref="MakePlan"/>).</summary>
    internal static Tensor DeltaOfTensors(AxisLayout lay, Tensor[] t, Tensor[]? s, int inF, int outF, int cap, ScalarType dtype, Device dev,
        bool? columnsOverride = null)
    {
        var plan = MakePlan(lay, cap, inF, outF, columnsOverride);
        try
        {
            Tensor MinusFrozen() { using var _ = no_grad(); return NegatedRaw(plan, BlockOperators(plan, s!, dtype, dev)); }   // constant
            return Delta(plan, BlockOperators(plan, t, dtype, dev), s is null ? null : MinusFrozen);
        }
        finally { plan.ReleaseCachedIndices(); }                                   // autograd keeps its own references
    }

    /// <summary>How a layer shape's chain is materialized: the blocks, the orientation, whether the basis is all of D (the
    /// first block starts as the full Kronecker product; else as its first rows), and the order in which the blocks are
    /// applied.</summary>
    internal sealed record ChainPlan(AxisLayout Layout, List<(int[] Axes, int[] PairIndices)> Blocks, bool Columns, bool Kronecker, int[] Order, int In, int Out)
    {
        /// <summary>Basis vectors the chain runs on: the `in` columns or the `out` rows.</summary>
        public int Basis => Columns ? In : Out;

        /// <summary>K of each block (the product of its axes' dims), in application order.</summary>
        public long[] BlockSizes => Order.Select(b => Span(Layout, Blocks[b].Axes)).ToArray();

        readonly Dictionary<string, (Tensor, Tensor)> _startIndex = [];

        /// <summary>The index tensors of <see cref="SlicedKroneckerStart"/> on <paramref name="device"/> for this plan's first
        /// block and basis, made once and kept until <see cref="ReleaseCachedIndices"/> (basis + basis·K int64 values: about
        /// 1 MB for TinyLlama's v_proj, 32 MB for a LLaMA-7B MLP projection). Keyed by everything they depend on, so a
        /// <c>with</c> copy of the plan (which shares the dictionary) never reads another shape's indices.</summary>
        internal (Tensor RowIndex, Tensor Positions) StartIndex(Device device)
        {
            var axes = Blocks[Order[0]].Axes;
            lock (_startIndex)
            {
                string key = $"{device}|{string.Join(",", Layout.Dims)}|{string.Join(",", axes)}|{Basis}";
                if (_startIndex.TryGetValue(key, out var cached) && !cached.Item1.IsInvalid) return cached;
                var (rows, positions) = StartIndices(Layout, axes, Basis);
                var made = (tensor(rows, device: device).DetachFromDisposeScope(), tensor(positions, device: device).DetachFromDisposeScope());
                _startIndex[key] = made;
                return made;
            }
        }

        /// <summary>Frees the cached index tensors (a graph that used them keeps its own references).</summary>
        internal void ReleaseCachedIndices()
        {
            lock (_startIndex)
            {
                foreach (var (a, b) in _startIndex.Values) { a.Dispose(); b.Dispose(); }
                _startIndex.Clear();
            }
        }
    }

    /// <summary>The plan for one layer shape (<see cref="Partition"/> + <see cref="Plan"/>).</summary>
    internal static ChainPlan MakePlan(AxisLayout lay, int cap, int inF, int outF, bool? columnsOverride = null)
    {
        var blocks = Partition(lay, cap);
        var (columns, kronecker) = Plan(lay, blocks, inF, outF, columnsOverride);
        var order = columns ? Enumerable.Range(0, blocks.Count).ToArray() : Enumerable.Range(0, blocks.Count).Reverse().ToArray();
        return new ChainPlan(lay, blocks, columns, kronecker, order, inF, outF);
    }

    /// <summary>The block operators in application order, each (L, K, K) and oriented for <see cref="ApplyPlan"/>:
    /// columns x ← x O_Bᵀ (R = O_Bᵀ); rows x ← x O_B. Small (K ≤ cap): cheap to keep, differentiable w.r.t. the tensors.</summary>
    /// <remarks>
    /// With <paramref name="checkpoint"/> (and a graph being recorded), each block is one checkpointed node
    /// (<see cref="BlockOperatorFunction"/>) that keeps only its pair tensors for the backward.</remarks>
    internal static Tensor[] BlockOperators(ChainPlan plan, Tensor[] tensors, ScalarType dtype, Device dev, ReturnedGradients? checkpoint = null)
    {
        long L = tensors[0].shape[0];
        bool useCheckpoint = checkpoint is not null && is_grad_enabled() && tensors.Any(t => t.requires_grad);
        return plan.Order.Select(k =>
        {
            // Own scope: the pair-by-pair intermediates ((L, K, K) each, 128 MiB for LLaMA-7B's K = 1024 block) are freed
            // here unless autograd saved them, instead of living in the caller's step scope.
            using var scope = NewDisposeScope();
            var (axes, pairs) = plan.Blocks[k];
            var r = useCheckpoint
                ? BlockOperatorFunction.Apply(new(plan.Layout, axes, pairs, dtype, dev, checkpoint!), tensors)
                : BlockTransposed(plan.Layout, axes, pairs, tensors, L, dtype, dev);                 // (L, K, K) = O_Bᵀ
            return (plan.Columns ? r : r.transpose(1, 2)).MoveToOuterDisposeScope();
        }).ToArray();
    }

    /// <summary>
    /// ΔW for L layers of one shape, (L, out, in) — the one function every path gets ΔW from:
    /// <code>
    ///   ΔW[l] = crop_{out×in}(M_T[l] − M_S[l]),    M = O_{B_n} ∘ … ∘ O_{B_1} run on the plan's basis vectors
    /// </code>
    /// <paramref name="operators"/> are the T chain's block operators ((L, K, K) each, application order,
    /// <see cref="BlockOperators"/>); <paramref name="minusFrozen"/> gives −(the S chain on the same basis vectors), (L, basis, D)
    /// contiguous (<see cref="NegatedRaw"/>), and is called after the T chain has run (so an uncached S chain is built while only
    /// the T chain's output is alive); null: crop(M_T) alone. M_T − M_S is one elementwise pass that reads the chain's last
    /// output in place, in whatever memory order its last GEMM left it (no reshape copy). The result is a view (transposed in
    /// the columns orientation).
    /// </summary>
    internal static Tensor Delta(ChainPlan plan, Tensor[] operators, Func<Tensor>? minusFrozen)
    {
        var raw = ApplyRaw(plan, operators);                                             // (L, basis…, d0..dN-1)
        if (minusFrozen is null) return Crop(plan, raw.reshape(raw.shape[0], plan.Basis, plan.Layout.D));
        var minusS = minusFrozen();                                                      // (L, basis, D) contiguous
        var diff = minusS.view(raw.shape).add(raw);                                      // contiguous like its first operand
        return Crop(plan, diff.view(minusS.shape));                                      // (L, out, in)
    }

    /// <summary>crop_{out×in}(M) (L, out, in) from the block operators of <see cref="BlockOperators"/> (application order).</summary>
    internal static Tensor ApplyPlan(ChainPlan plan, Tensor[] ops) => Delta(plan, ops, minusFrozen: null);

    /// <summary>−(the chain on the basis vectors), (L, basis, D) contiguous and uncropped: the cached frozen part that
    /// <c>minus.view(raw.shape).add(raw)</c> turns into M_T − M_S in one pass.</summary>
    internal static Tensor NegatedRaw(ChainPlan plan, Tensor[] ops)
    {
        var raw = ApplyRaw(plan, ops);
        return raw.reshape(raw.shape[0], plan.Basis, plan.Layout.D).neg();
    }

    /// <summary>(L, basis, D) → crop(M) (L, out, in): columns r[l, j] = (M e_j)ᵀ is transposed; rows r[l, i] = row i of M.</summary>
    internal static Tensor Crop(ChainPlan plan, Tensor r)
        => plan.Columns ? r.narrow(2, 0, plan.Out).transpose(1, 2) : r.narrow(2, 0, plan.In);

    /// <summary>The chain on the plan's basis vectors before reshaping and cropping: the last block's output, logically
    /// (L, basis dims…, d0..dN-1) with the basis flattened in layout order, in whatever memory order the last GEMM left it.
    /// Reading it once in an elementwise op that writes a contiguous result (e.g. <c>minusFrozen.add(raw)</c>) saves the copy
    /// a reshape would make.</summary>
    internal static Tensor ApplyRaw(ChainPlan plan, Tensor[] ops) => ApplyRaw(plan, ops, plan.Order.Length);

    /// <summary><see cref="ApplyRaw(ChainPlan, Tensor[])"/> stopped after the first <paramref name="blocks"/> blocks (at least
    /// <see cref="StartBlocks"/>).</summary>
    static Tensor ApplyRaw(ChainPlan plan, Tensor[] ops, int blocks)
    {
        var lay = plan.Layout;
        Tensor x;
        int first = StartBlocks(plan);
        if (first == 2) x = KroneckerThenBlock(lay, plan.Blocks[plan.Order[0]].Axes, ops[0], plan.Blocks[plan.Order[1]].Axes, ops[1]);   // (L, j0..jN-1, d0..dN-1)
        else if (plan.Kronecker) x = KroneckerStart(lay, plan.Blocks[plan.Order[0]].Axes, ops[0]);  // (L, D, d0..dN-1)
        else x = SlicedKroneckerStart(plan, ops[0]);                                         // (L, basis, d0..dN-1)
        for (int s = first; s < blocks; s++)
            x = ApplyBlock(x, plan.Blocks[plan.Order[s]].Axes, ops[s], lay);
        return x;                                               // columns: x[l, j] = (M e_j)ᵀ;  rows: x[l, i] = row i of M
    }

    /// <summary>How many blocks the start of the materialization consumes without a GEMM: 2 when the Kronecker start and the
    /// next block cover the layout (<see cref="KroneckerThenBlock"/>), else 1.</summary>
    static int StartBlocks(ChainPlan plan)
    {
        var (a1, a2) = (plan.Blocks[plan.Order[0]].Axes, plan.Order.Length > 1 ? plan.Blocks[plan.Order[1]].Axes : []);
        return plan.Kronecker && a2.Length > 0 && a1.Union(a2).Count() == plan.Layout.AxisCount && EinsumLetters(plan.Layout, a1, a2) is not null ? 2 : 1;
    }

    /// <summary>
    /// ΔW = crop(M_T − M_S) (L, out, in) without a graph (the stacked-recompute path's forward), in fewer passes over the
    /// weight-sized stack than <see cref="Delta"/>: both chains run up to their last block, and the last block of S is
    /// subtracted inside T's GEMM,
    /// <code>
    ///   Y = X_T R_T − X_S R_S   (one bmm, then one baddbmm that reads X_T R_T: no M_S tensor, no negation, no extra pass)
    /// </code>
    /// When the start already consumed the whole chain, M_T − M_S is one in-place subtraction. The result is a view.
    /// </summary>
    internal static Tensor DeltaWithoutGraph(ChainPlan plan, Tensor[] t, Tensor[] s)
    {
        var lay = plan.Layout;
        long L = t[0].shape[0];
        int n = plan.Order.Length;
        Tensor raw;
        if (StartBlocks(plan) >= n) raw = ApplyRaw(plan, t).sub_(ApplyRaw(plan, s));
        else
        {
            var axes = plan.Blocks[plan.Order[n - 1]].Axes;
            var xT = ApplyRaw(plan, t, n - 1);
            var (rowsT, perm) = BlockRows(xT, axes, lay);                                              // (L, b·rest, K)
            var (rowsS, _) = BlockRows(ApplyRaw(plan, s, n - 1), axes, lay);
            // TorchSharp's a.baddbmm(b, c, beta, alpha) = beta·c + alpha·(a @ b) (libtorch's baddbmm(c, a, b))
            var y = rowsS.baddbmm(s[n - 1], rowsT.bmm(t[n - 1]), beta: 1, alpha: -1);                   // X_T R_T − X_S R_S
            raw = FromRows(y, xT.shape, perm, lay, axes);
        }
        return Crop(plan, raw.reshape(L, plan.Basis, lay.D));
    }

    /// <summary>
    /// Orientation and start of the materialization, by cost (multiply-adds ∝ basis · Σ K over the blocks that are multiplied
    /// out). Columns need the `in` basis vectors, rows the `out` ones. The first block applied to basis vectors is never
    /// multiplied out: with a basis equal to D it is the Kronecker product I_rest ⊗ R (<see cref="KroneckerStart"/>), with a
    /// smaller basis its first rows (<see cref="SlicedKroneckerStart"/>). Ties keep the columns for in ≤ out.
    /// </summary>
    internal static (bool Columns, bool Kronecker) Plan(AxisLayout lay, List<(int[] Axes, int[] PairIndices)> blocks, int inF, int outF, bool? columnsOverride = null)
    {
        long K(int k) => Span(lay, blocks[k].Axes);
        long total = Enumerable.Range(0, blocks.Count).Sum(K);
        (double Cost, bool Kron) Cost(int basis, int firstBlock) => ((double)basis * (total - K(firstBlock)), basis == lay.D);
        var c = Cost(inF, 0);
        var r = Cost(outF, blocks.Count - 1);
        bool columns = columnsOverride ?? (c.Cost < r.Cost || (c.Cost == r.Cost && inF <= outF));
        return (columns, columns ? c.Kron : r.Kron);
    }

    /// <summary>
    /// The identity (L, D, D) after its first block, without a GEMM: for the block on axes A with matrix R (L, K, K) applied
    /// as y[.., a'] = Σ_a x[.., a] R[a, a'], the identity becomes y[l, j, i] = δ(j_rest, i_rest) · R[l, j_A, i_A] — the
    /// Kronecker product I_rest ⊗ R with the axes put back in layout order. Returns (L, D, d0..dN-1), rows j flattened.
    /// </summary>
    static Tensor KroneckerStart(AxisLayout lay, int[] axes, Tensor r)
    {
        long L = r.shape[0], K = r.shape[1];
        int n = lay.AxisCount;
        var rest = Enumerable.Range(0, n).Where(a => !axes.Contains(a)).ToArray();
        long restSize = Span(lay, rest);
        var e = eye(restSize, dtype: r.dtype, device: r.device);                              // (R, R)
        var y = r.reshape(L, K, K, 1, 1) * e.reshape(1, 1, 1, restSize, restSize);             // (L, K, K, R, R) = (l, j_A, i_A, j_rest, i_rest)
        long[] Dims(IEnumerable<int> a) => a.Select(x => (long)lay.Dims[x]).ToArray();
        y = y.reshape([L, .. Dims(axes), .. Dims(axes), .. Dims(rest), .. Dims(rest)]);
        int A = axes.Length, Rn = rest.Length;
        long Pos(int axis, bool output) => Array.IndexOf(axes, axis) is int i && i >= 0
            ? 1 + (output ? A : 0) + i
            : 1 + 2 * A + (output ? Rn : 0) + Array.IndexOf(rest, axis);
        long[] perm = [0, .. Enumerable.Range(0, n).Select(a => Pos(a, false)), .. Enumerable.Range(0, n).Select(a => Pos(a, true))];
        return y.permute(perm).reshape([L, lay.D, .. lay.Dims.Select(d => (long)d)]);         // (L, D, d0..dN-1)
    }

    /// <summary>
    /// The first `basis` rows of <see cref="KroneckerStart"/> (basis &lt; D: a padded input in the columns orientation, or a
    /// narrow output in the rows one), without a GEMM: basis vector e_j (digits j_a in layout order) after the first block R
    /// (on axes A) is
    /// <code>
    ///   y[l, j, i] = δ(j_rest, i_rest) · R[l, j_A, i_A]
    /// </code>
    /// i.e. row j_A of R written at the positions whose other axes keep j's digits: a gather of `basis` rows of R and one
    /// index_copy into zeros (differentiable w.r.t. R; on CUDA the gather's backward adds with atomics, so bf16 gradients may
    /// differ in the last bit between runs unless deterministic algorithms are on). The index tensors depend only on the plan
    /// and are cached per device.
    /// Returns (L, basis, d0..dN-1).
    /// </summary>
    static Tensor SlicedKroneckerStart(ChainPlan plan, Tensor r)
    {
        var lay = plan.Layout;
        long L = r.shape[0], K = r.shape[1];
        int basis = plan.Basis;
        var (rowIndex, positions) = plan.StartIndex(r.device);
        var rows = r.index_select(1, rowIndex);                                                            // (L, basis, K)
        // in place into fresh zeros (no second (L, basis·D) tensor); autograd records it, the gradient w.r.t. rows is a gather
        var y = zeros(L, basis * (long)lay.D, dtype: r.dtype, device: r.device).index_copy_(1, positions, rows.reshape(L, basis * K));
        return y.view([L, basis, .. lay.Dims.Select(d => (long)d)]);                                        // (L, basis, d0..dN-1)
    }

    /// <summary>Host-side indices of <see cref="SlicedKroneckerStart"/>: for each basis row j, the row j_A of R it takes, and
    /// for each (j, k) the flat position j·D + i of entry k (k over the block's axes, flattened in <paramref name="axes"/>
    /// order as <see cref="BlockRows"/> does).</summary>
    internal static (long[] RowIndex, long[] Positions) StartIndices(AxisLayout lay, int[] axes, int basis)
    {
        int n = lay.AxisCount;
        var stride = new long[n];
        for (long a = n - 1, st = 1; a >= 0; st *= lay.Dims[(int)a], a--) stride[a] = st;                 // layout order, last fastest
        var kStride = new long[axes.Length];
        for (long i = axes.Length - 1, st = 1; i >= 0; st *= lay.Dims[axes[i]], i--) kStride[i] = st;
        long K = Span(lay, axes);
        var offset = new long[K];                                                  // k's place among the block's axes
        for (long k = 0; k < K; k++)
            for (int ai = 0; ai < axes.Length; ai++) offset[k] += k / kStride[ai] % lay.Dims[axes[ai]] * stride[axes[ai]];
        var rowIndex = new long[basis];
        var positions = new long[basis * K];
        for (long j = 0; j < basis; j++)
        {
            long rest = 0, jA = 0;                                                 // j's digits off the block, and on it
            for (int a = 0; a < n; a++)
            {
                long digit = j / stride[a] % lay.Dims[a];
                int ai = Array.IndexOf(axes, a);
                if (ai >= 0) jA += digit * kStride[ai]; else rest += digit * stride[a];
            }
            rowIndex[j] = jA;
            for (long k = 0; k < K; k++) positions[j * K + k] = j * lay.D + rest + offset[k];
        }
        return (rowIndex, positions);
    }

    /// <summary>
    /// The Kronecker start followed by the next block, as ONE contraction when the two blocks' axes cover the layout (e.g.
    /// LLaMA-7B's [16,8,8,4]: blocks on {0,1,2} and {0,3}). With R1 on axes A1 (identity elsewhere) and R2 on A2:
    /// <code>
    ///   y[l, j, i] = Σ_{c_a : a ∈ A1∩A2}  R1[l, j_A1, (c or i)_A1] · R2[l, (c or j)_A2, i_A2]
    /// </code>
    /// (an axis of both blocks is contracted; one only in A1 goes straight to the output; one only in A2 takes its input
    /// index from j, the identity). The (L, D, D) result is written once, instead of being built as I ⊗ R1, copied into
    /// layout order, permuted for R2's GEMM and written again (≈ 3 fewer passes over the D×D stack each way).
    /// Returns (L, j0..jN-1, i0..iN-1), a view in whatever order the contraction produced.
    /// </summary>
    static Tensor KroneckerThenBlock(AxisLayout lay, int[] a1, Tensor r1, int[] a2, Tensor r2)
    {
        int n = lay.AxisCount;
        long L = r1.shape[0];
        var (s1, s2, so) = EinsumLetters(lay, a1, a2)!.Value;
        long[] Dims(IEnumerable<int> a) => a.Select(x => (long)lay.Dims[x]).ToArray();
        return einsum($"{LayerLetter}{s1},{LayerLetter}{s2}->{LayerLetter}{so}",
            r1.reshape([L, .. Dims(a1), .. Dims(a1)]), r2.reshape([L, .. Dims(a2), .. Dims(a2)]));   // (L, j0..jN-1, i0..iN-1)
    }

    const char LayerLetter = 'Z';
    const string Letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY";   // einsum's a–z, A–Z without the layer's Z

    /// <summary>Subscripts of <see cref="KroneckerThenBlock"/>: per axis an input (basis) index j_a and an output index o_a,
    /// plus a contracted index for each axis of both blocks; null when a layout has too many axes for einsum's 52 letters
    /// (then the Kronecker start and the block run separately).</summary>
    static (string R1, string R2, string Out)? EinsumLetters(AxisLayout lay, int[] a1, int[] a2)
    {
        int n = lay.AxisCount;
        var both = a1.Intersect(a2).ToArray();
        if (2 * n + both.Length > Letters.Length) return null;
        char J(int a) => Letters[a];                                    // input (basis) index of axis a
        char O(int a) => Letters[n + a];                                // output index
        char C(int a) => Letters[2 * n + Array.IndexOf(both, a)];       // contracted index (axes of both blocks)
        string s1 = string.Concat(a1.Select(J)) + string.Concat(a1.Select(a => a2.Contains(a) ? C(a) : O(a)));
        string s2 = string.Concat(a2.Select(a => a1.Contains(a) ? C(a) : J(a))) + string.Concat(a2.Select(O));
        string so = string.Concat(Enumerable.Range(0, n).Select(J)) + string.Concat(Enumerable.Range(0, n).Select(O));
        return (s1, s2, so);
    }

    /// <summary>R_B = O_Bᵀ (L, K, K) for one block: its pairs' chain run on the identity of the block's own subspace
    /// (row j of the result is (O_B e_j)ᵀ).</summary>
    internal static Tensor BlockTransposed(AxisLayout lay, int[] axes, int[] pairIdx, Tensor[] tensors, long L, ScalarType dtype, Device dev)
    {
        var sub = axes.Select(a => lay.Dims[a]).ToArray();
        int K = sub.Aggregate(1, (p, d) => p * d);
        long[] view = [L, K, .. sub.Select(d => (long)d)];
        var x = eye(K, dtype: dtype, device: dev).unsqueeze(0).expand(L, K, K).reshape(view);           // (L, K, sub...)
        foreach (var i in pairIdx)
        {
            var (m, n) = lay.Pairs[i];
            x = einsum(AxisLayout.PairEquation(axes.Length, Array.IndexOf(axes, m), Array.IndexOf(axes, n), stacked: true), x, tensors[i]);
        }
        return x.reshape(L, K, K);                                                                        // (L, K, K) = O_Bᵀ
    }

    /// <summary>x (L, b, d0..dN-1): contracts the block's axes with the operator given as its transpose Rᵀ... i.e. y[.., a'] =
    /// Σ_a x[.., a] R[a, a'] (R = O_Bᵀ applies O_B); one batched GEMM (L, b·rest, K)·(L, K, K).</summary>
    static Tensor ApplyBlock(Tensor x, int[] axes, Tensor r, AxisLayout lay)
    {
        var (rows, perm) = BlockRows(x, axes, lay);
        return FromRows(rows.bmm(r), x.shape, perm, lay, axes);                                          // (L, b·rest, K) → x's shape
    }

    /// <summary>The inverse of <see cref="BlockRows"/>: rows (L, b·rest, K) back to <paramref name="shape"/> (L, b…, d0..dN-1),
    /// a permuted view.</summary>
    static Tensor FromRows(Tensor y, long[] shape, long[] perm, AxisLayout lay, int[] axes)
    {
        int nb = shape.Length - 1 - lay.AxisCount;
        var rest = Enumerable.Range(0, lay.AxisCount).Where(a => !axes.Contains(a)).ToArray();
        long[] permuted = [shape[0], .. shape.Skip(1).Take(nb), .. rest.Select(a => (long)lay.Dims[a]), .. axes.Select(a => (long)lay.Dims[a])];
        var inverse = new long[perm.Length];
        for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
        return y.reshape(permuted).permute(inverse);
    }

    /// <summary>x (L, b…, d0..dN-1) as the rows a block acts on: (L, b·rest, K) with the block's axes last (flattened in
    /// <paramref name="axes"/> order, the rest in layout order), and the permutation used.</summary>
    static (Tensor Rows, long[] Perm) BlockRows(Tensor x, int[] axes, AxisLayout lay)
    {
        int n = lay.AxisCount;
        int nb = (int)x.dim() - 1 - n;                                                                    // basis dims: 1, or N after KroneckerThenBlock
        var rest = Enumerable.Range(0, n).Where(a => !axes.Contains(a)).ToArray();
        long[] perm = [0, .. Enumerable.Range(1, nb).Select(d => (long)d), .. rest.Select(a => (long)a + 1 + nb), .. axes.Select(a => (long)a + 1 + nb)];
        long K = Span(lay, axes);
        return (x.permute(perm).reshape(x.shape[0], -1, K), perm);
    }

    /// <summary>
    /// ∂L/∂(block operator) for one layer from its tokens, without forming ∂L/∂ΔW. With row vectors padded to D, the chain
    /// is x Mᵀ = x Q_1 Q_2 … Q_n, each Q_t acting on its block's axes (columns plan: Q_t = ops[t]; rows plan: the ops
    /// transposed, in reverse). With h_0 = pad(x), h_t = h_{t−1} Q_t and g_n = pad(∂L/∂y):
    /// <code>
    ///   ∂L/∂Q_t = h_{t−1}ᵀ g_t            (rows: tokens × the other axes; K×K)
    ///   g_{t−1} = g_t Q_tᵀ
    /// </code>
    /// Cost ∝ tokens·D·Σ K, against out·in·tokens for ∂L/∂ΔW = gᵀx alone plus the chain's backward over (out, in): for
    /// LLaMA-7B q/v (2,048 tokens, K = 1024 and 64) about half the multiply-adds and no weight-sized tensor. The frozen
    /// part (M_S) has no gradient and does not appear. Call without a graph.
    /// </summary>
    /// <param name="plan">The layer's chain plan.</param>
    /// <param name="ops">The layer's block operators (K, K) in application order (<see cref="BlockOperators"/>, one layer).</param>
    /// <param name="x">The layer input (M, in).</param>
    /// <param name="g">∂L/∂y (M, out).</param>
    /// <returns>∂L/∂ops[s] (K, K) each, in the ops' dtype.</returns>
    internal static Tensor[] TokenGradients(ChainPlan plan, Tensor[] ops, Tensor x, Tensor g)
    {
        var lay = plan.Layout;
        long m = x.shape[0];
        long[] view = [1, m, .. lay.Dims.Select(d => (long)d)];
        int n = ops.Length;
        // token step t uses op index s(t) and Q_t = ops[s] (columns) or ops[s]ᵀ (rows)
        var index = plan.Columns ? Enumerable.Range(0, n).ToArray() : Enumerable.Range(0, n).Reverse().ToArray();
        var axes = index.Select(s => plan.Blocks[plan.Order[s]].Axes).ToArray();
        var q = index.Select(s => (plan.Columns ? ops[s] : ops[s].t()).to_type(x.dtype).unsqueeze(0)).ToArray();   // (1, K, K)
        // Forward: the rows each step multiplies, h_t laid out for block t (kept: the same rows give ∂L/∂Q_t).
        var rowsH = new Tensor[n];
        var h = PadTo(x, lay.D).view(view);                                                                    // (1, M, d0..dN-1)
        for (int t = 0; t < n; t++)
        {
            (rowsH[t], var perm) = BlockRows(h, axes[t], lay);                                                // (1, M·rest, K)
            if (t < n - 1) h = FromRows(rowsH[t].bmm(q[t]), view, perm, lay, axes[t]);                        // h_{t+1}
        }
        // Backward: g_t laid out for block t once, for both ∂L/∂Q_t and g_{t−1}.
        var gt = PadTo(g, lay.D).view(view);
        var grads = new Tensor[n];
        for (int t = n - 1; t >= 0; t--)
        {
            var (rowsG, perm) = BlockRows(gt, axes[t], lay);                                                  // (1, M·rest, K)
            var dq = rowsH[t].transpose(1, 2).bmm(rowsG).squeeze(0);                                          // (K, K) = h_tᵀ g_t
            grads[index[t]] = (plan.Columns ? dq : dq.t()).to_type(ops[index[t]].dtype);
            if (t > 0) gt = FromRows(rowsG.bmm(q[t].transpose(1, 2)), view, perm, lay, axes[t]);               // g_{t−1} = g_t Q_tᵀ
        }
        return grads;
    }

    /// <summary>
    /// Whether <see cref="TokenGradients"/> takes fewer multiply-adds than the ΔW route for <paramref name="tokens"/> rows:
    /// tokens·D·(3·ΣK − K_first − K_last) (recomputed h_t, ∂L/∂Q_t, propagated g_t) against tokens·in·out (∂L/∂ΔW = gᵀx)
    /// plus the chain on the plan's basis vectors with a graph and its backward, basis·D·(ΣK − K_first) each pass (the first
    /// block applied is a Kronecker start, not a GEMM): 2 passes when ΔW is built anyway for ∂L/∂x
    /// (<paramref name="rebuildsDelta"/>: the ΔW route reuses it), 3 when it is not. Ties go to the ΔW route. (Counts only
    /// multiply-adds, not memory passes.)
    /// </summary>
    internal static bool TokenGradientsCheaper(ChainPlan plan, long tokens, bool rebuildsDelta = true)
    {
        var k = plan.BlockSizes;
        long sum = k.Sum(), d = plan.Layout.D;
        double token = (double)tokens * d * (3 * sum - k[0] - k[^1]);
        double viaDelta = (double)tokens * plan.In * plan.Out + (rebuildsDelta ? 2.0 : 3.0) * plan.Basis * d * (sum - k[0]);
        return token < viaDelta;
    }

    /// <summary>
    /// ∂L/∂(block operators) of crop(M_T) for L layers from G = ∂L/∂ΔW (L, out, in) — the stacked-recompute path's chain
    /// backward. The chain up to its last block runs with a graph; the last block's GEMM Y = X R is differentiated by hand
    /// from G laid out as Y's rows, so Y itself (a weight-sized forward output nobody needs) is never computed:
    /// <code>
    ///   ∂L/∂R = Xᵀ G_rows,    ∂L/∂X = G_rows Rᵀ   → autograd through the earlier blocks
    /// </code>
    /// When the start consumes the whole chain, autograd runs it all.
    /// </summary>
    /// <param name="plan">The layers' chain plan.</param>
    /// <param name="ops">The block operators (L, K, K) each, application order, values only (leaves are made here).</param>
    /// <param name="g">∂L/∂ΔW (L, out, in).</param>
    internal static Tensor[] TensorGradients(ChainPlan plan, Tensor[] ops, Tensor g)
    {
        var lay = plan.Layout;
        int n = plan.Order.Length;
        g = g.to_type(ops[0].dtype);                                                              // the chain's dtype before any copy
        var leaves = ops.Select(o => o.detach().requires_grad_(true)).ToArray();
        if (StartBlocks(plan) >= n)
        {
            Tensor whole;
            using (enable_grad()) whole = ApplyPlan(plan, leaves);
            return autograd.grad([whole], leaves, [g]).ToArray();
        }
        var axes = plan.Blocks[plan.Order[n - 1]].Axes;
        Tensor x, rows;
        using (enable_grad())
        {
            x = ApplyRaw(plan, leaves, n - 1);                                                    // the last block's input
            (rows, _) = BlockRows(x, axes, lay);                                                  // X (L, b·rest, K)
        }
        long L = g.shape[0];
        var full = plan.Columns ? g.transpose(1, 2) : g;                                          // (L, basis, out or in): Crop undone
        if (full.shape[2] < lay.D) full = nn.functional.pad(full, [0, lay.D - full.shape[2]]);   // the cropped entries get no gradient
        var (gRows, _) = BlockRows(full.reshape(x.shape), axes, lay);                            // G laid out as Y's rows (a view when it can be)
        var last = leaves[n - 1];
        var gLast = rows.detach().transpose(1, 2).bmm(gRows);                                     // ∂L/∂R = Xᵀ G_rows
        var gEarlier = autograd.grad([rows], leaves[..(n - 1)], [gRows.bmm(last.detach().transpose(1, 2))]);   // ∂L/∂X = G_rows Rᵀ
        return [.. gEarlier, gLast];
    }

    /// <summary>(M, f) → (M, D), zeros appended when f &lt; D.</summary>
    static Tensor PadTo(Tensor x, int d) => x.shape[1] == d ? x : nn.functional.pad(x, [0, d - x.shape[1]]);
}
