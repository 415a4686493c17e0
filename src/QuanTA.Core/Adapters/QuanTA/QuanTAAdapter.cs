using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>How <see cref="QuanTAAdapter.Delta"/> evaluates the update.</summary>
public enum QuanTAComputePath
{
    /// <summary>Pick the cheaper of the two per call (multiply-adds: tokens·D·Σk·2 vs min(in,out)·D·Σk·2 + tokens·in·out).</summary>
    Auto,
    /// <summary>Apply the tensor chain to the (padded) tokens, once for T and once for S.</summary>
    Chain,
    /// <summary>Materialize ΔW (chain on the identity), then one GEMM.</summary>
    Materialize,
}

/// <summary>
/// QuanTA (Chen et al., NeurIPS 2024; official code <c>quanta/tuners/quanta.py</c>): the update of a frozen linear layer
/// is a chain of small tensors, each acting on two axes of the D-vector viewed as a d0×…×d(N−1) tensor:
/// <code>
///   x ∈ R^D  ↔  X[i0, …, i(N−1)]              (axis layout: D = Π d_a, row-major, axis 0 most significant)
///   T_α on pair (m, n): Y[..o_m..o_n..] = Σ_{j_m, j_n} T_α[o_m, o_n, j_m, j_n] · X[..j_m..j_n..]
///   M_T = T_{N_T} ∘ … ∘ T_2 ∘ T_1            (D×D, pairs applied in AxisLayout.Pairs order)
///   ΔW  = crop_{out×in}(M_T − M_S)           (S = frozen copy of T at init, so ΔW = 0 at init)
///   y   = x W0ᵀ + b + crop(T(pad(x))) − crop(S(pad(x)))
/// </code>
/// This class is the readable reference: <see cref="Delta"/> (chain path) and <see cref="Operator"/> apply the tensors pair
/// by pair exactly as written above. <see cref="DeltaWeight"/>, the one ΔW that merge, export and the fused training paths
/// share, comes from the blocked engine (<see cref="QuanTAChainBlocks.Delta"/>), which the tests pin to this reference.
/// State-dict names under the layer (prefix "quanta."): full-rank tensor i is parameter <c>T_i</c> [d_m, d_n, d_m, d_n]
/// (the official shape; official key "-1 -2" etc. ↔ <see cref="AxisPair.OfficialKey"/>), with a per-tensor rank r &lt; k it is
/// <c>T_i_U</c> [k, r] · <c>T_i_V</c> [r, k]; the frozen copy is buffer <c>S_i</c> [d_m, d_n, d_m, d_n]. Parameters are fp32;
/// for bf16/fp16 input they are cast to the input's dtype for the compute, as the official code does.
/// </summary>
public sealed class QuanTAAdapter : Adapter
{
    readonly int _in, _out;
    // Tensors are looked up by state-dict name (not kept in fields) so Module.to(device/dtype) replacements are seen:
    //   T_i (d_m, d_n, d_m, d_n) full rank, or T_i_U (k, r) and T_i_V (r, k) low rank; buffer S_i (d_m, d_n, d_m, d_n).
    readonly bool[] _lowRank;
    readonly string[] _equations;   // per-pair einsum (AxisLayout.PairEquation), e.g. "zABCD,YZBD->zAYCZ" for pair (1,3)
    readonly Dropout? _dropout;

    /// <summary>Creates a QuanTA adapter with the official init: each tensor, viewed as k×k (k = d_m·d_n), is drawn from
    /// uniform(−√(3/k), √(3/k)); with a rank r &lt; k, U ~ uniform(±√(3/k)) and V ~ uniform(±√(3/r)), so U·V has the same
    /// entry variance 1/k. S is an exact copy of the initial tensors (a buffer, never trained).</summary>
    public QuanTAAdapter(int inFeatures, int outFeatures, AxisLayout layout, int? rank = null, double dropout = 0, Generator? generator = null)
        : base(nameof(QuanTAAdapter))
    {
        ArgumentNullException.ThrowIfNull(layout);
        layout.ValidateFor(inFeatures, outFeatures);
        if (rank is int rr && rr < 1) throw new ArgumentException($"QuanTA rank must be ≥ 1 or null; got {rr}.", nameof(rank));
        if (dropout is < 0 or >= 1 || double.IsNaN(dropout)) throw new ArgumentException($"Dropout must be in [0, 1); got {dropout}.", nameof(dropout));
        _in = inFeatures; _out = outFeatures; Layout = layout; Rank = rank;
        int nT = layout.TensorCount;
        _lowRank = new bool[nT];
        _equations = new string[nT];
        using var _ = no_grad();
        for (int i = 0; i < nT; i++)
        {
            long k = layout.TensorSide(i);
            long[] shape = layout.TensorShape(i);
            double bound = Math.Sqrt(3.0 / k);
            Tensor init;
            if (rank is int r && r < k)
            {
                _lowRank[i] = true;
                var u = new Parameter(empty(k, r, dtype: ScalarType.Float32).uniform_(-bound, bound, generator), requires_grad: true);   // (k, r)
                double bv = Math.Sqrt(3.0 / r);
                var v = new Parameter(empty(r, k, dtype: ScalarType.Float32).uniform_(-bv, bv, generator), requires_grad: true);         // (r, k)
                register_parameter($"T_{i}_U", u);
                register_parameter($"T_{i}_V", v);
                init = u.matmul(v).view(shape);                                                             // (d_m, d_n, d_m, d_n)
            }
            else
            {
                var t = new Parameter(empty(shape, dtype: ScalarType.Float32).uniform_(-bound, bound, generator), requires_grad: true);  // (d_m, d_n, d_m, d_n)
                register_parameter($"T_{i}", t);
                init = t;
            }
            register_buffer($"S_{i}", init.detach().clone());                                               // frozen copy
            if (_lowRank[i]) init.Dispose();
            _equations[i] = AxisLayout.PairEquation(layout.AxisCount, layout.Pairs[i].M, layout.Pairs[i].N);
        }
        DropoutP = dropout;
        if (dropout > 0) { _dropout = nn.Dropout(dropout); register_module("dropout", _dropout); }
    }

    /// <summary>Dropout probability on the adapter's input.</summary>
    public double DropoutP { get; }
    /// <inheritdoc/>
    public override int InFeatures => _in;
    /// <inheritdoc/>
    public override int OutFeatures => _out;
    /// <inheritdoc/>
    public override string Method => "quanta";
    /// <summary>The axis layout and pair chain.</summary>
    public AxisLayout Layout { get; }
    /// <summary>Per-tensor rank, or null for full-rank tensors.</summary>
    public int? Rank { get; }
    /// <summary>Which evaluation <see cref="Delta"/> uses (default: the cheaper one per call).</summary>
    public QuanTAComputePath ComputePath { get; set; } = QuanTAComputePath.Auto;

    /// <summary>Tensor i of the chain, T_i (trainable) as [d_m, d_n, d_m, d_n] in fp32 (U·V reshaped when low-rank).</summary>
    public Tensor TensorT(int i) => _lowRank[i]
        ? get_parameter($"T_{i}_U")!.matmul(get_parameter($"T_{i}_V")!).view(Layout.TensorShape(i))  // (k, r)(r, k) → (d_m, d_n, d_m, d_n)
        : get_parameter($"T_{i}")!;

    /// <summary>The frozen copy S_i [d_m, d_n, d_m, d_n] (fp32 buffer).</summary>
    public Tensor TensorS(int i) => get_buffer($"S_{i}")!;

    /// <summary>The update for input x (…, in) → (…, out) in x's dtype: crop(T(pad(x))) − crop(S(pad(x))).</summary>
    public override Tensor Delta(Tensor x)
    {
        if (x.shape[^1] != _in) throw new ArgumentException($"QuanTA adapter expects input (…, {_in}); got ({string.Join(", ", x.shape)}).");
        using var scope = NewDisposeScope();
        var lead = x.shape[..^1];
        var h = x.reshape(-1, _in);                                            // (M, in)
        if (_dropout is not null) h = _dropout.call(h);
        long m = h.shape[0];
        Tensor y;
        if (UseMaterialize(m))
            y = h.matmul(DeltaWeight().to(h.dtype).t());                      // (M, in)·(in, out) = (M, out)
        else
        {
            var p = nn.functional.pad(h, [0, Layout.D - _in]);               // (M, D), zero-padded
            var yT = Chain(p, i => TensorT(i).to(h.dtype));                   // (M, D) = p M_Tᵀ
            var yS = Chain(p, i => TensorS(i).to(h.dtype));                   // (M, D) = p M_Sᵀ (x's gradient flows through it too)
            y = (yT - yS).narrow(1, 0, _out);                                 // (M, out), cropped
        }
        return y.reshape([.. lead, _out]).MoveToOuterDisposeScope();
    }

    /// <summary>ΔW = crop_{out×in}(M_T − M_S), [out, in] in the parameters' dtype (fp32), differentiable with respect to T:
    /// the engine (<see cref="QuanTAChainBlocks.Delta"/>) with L = 1, on the cheaper of the `in` column or `out` row basis
    /// vectors. Merge, export and the materialized forward all read ΔW from here.</summary>
    public override Tensor DeltaWeight() => DeltaWeightInBlocks(QuanTAChainBlocks.DefaultBlockCap);

    /// <summary><see cref="DeltaWeight()"/> with blocks of consecutive pairs spanning at most <paramref name="blockCap"/> entries.</summary>
    internal Tensor DeltaWeightInBlocks(int blockCap)
    {
        using var scope = NewDisposeScope();
        Tensor[] OneLayer(Func<int, Tensor> tensor) =>
            Enumerable.Range(0, Layout.TensorCount).Select(i => tensor(i).unsqueeze(0)).ToArray();        // (1, d_m, d_n, d_m, d_n) each
        return QuanTAChainBlocks.DeltaOfTensors(Layout, OneLayer(TensorT), OneLayer(TensorS), _in, _out, blockCap, TensorS(0).dtype, TensorS(0).device)
            .squeeze(0).contiguous().MoveToOuterDisposeScope();                                           // (out, in)
    }

    /// <summary>ΔW by the definition, crop_{out×in}(M_T − M_S) of the full D×D operators built pair by pair
    /// (<see cref="Operator"/>): the reference the engine behind <see cref="DeltaWeight"/> is tested against. Costs D×D.</summary>
    internal Tensor ReferenceDeltaWeight()
    {
        using var scope = NewDisposeScope();
        Tensor mS;
        using (no_grad()) mS = Operator(frozen: true);                                   // (D, D), constant
        return (Operator() - mS).narrow(0, 0, _out).narrow(1, 0, _in).contiguous().MoveToOuterDisposeScope();   // (out, in)
    }

    /// <summary>The full operator M_T (or M_S with <paramref name="frozen"/>), [D, D] in the parameters' dtype, y = M x in the
    /// D-space: the chain applied pair by pair to the identity, M = T_{N_T} ∘ … ∘ T_1.</summary>
    public Tensor Operator(bool frozen = false)
    {
        using var scope = NewDisposeScope();
        var e = eye(Layout.D, dtype: TensorS(0).dtype, device: TensorS(0).device);    // (D, D)
        var r = frozen ? Chain(e, TensorS) : Chain(e, TensorT);                          // row j = (M e_j)ᵀ
        return r.t().contiguous().MoveToOuterDisposeScope();                             // (D, D)
    }

    /// <summary>Copies tensors from the official implementation's dictionaries, keyed "-1 -2", "-1 -3", … (shape
    /// [d_m, d_n, d_m, d_n]), into T_i and S_i. Needs full-rank tensors and one tensor per pair (as the official code has).</summary>
    public void CopyFromOfficial(IReadOnlyDictionary<string, Tensor> t, IReadOnlyDictionary<string, Tensor> s)
    {
        if (Rank is not null) throw new InvalidOperationException("Official QuanTA tensors are full rank; this adapter has a per-tensor rank.");
        if (Layout.Pairs.Distinct().Count() != Layout.TensorCount)
            throw new InvalidOperationException("Official QuanTA has one tensor per pair; this chain repeats pairs.");
        using var _ = no_grad();
        for (int i = 0; i < Layout.TensorCount; i++)
        {
            string key = Layout.Pairs[i].OfficialKey(Layout.AxisCount);
            var shape = Layout.TensorShape(i);
            foreach (var (dict, dst, what) in new[] { (t, TensorT(i), "T"), (s, TensorS(i), "S") })
            {
                if (!dict.TryGetValue(key, out var src)) throw new KeyNotFoundException($"Official {what} tensor '{key}' is missing.");
                if (!src.shape.SequenceEqual(shape))
                    throw new ArgumentException($"Official {what}['{key}'] has shape [{string.Join(", ", src.shape)}]; expected [{string.Join(", ", shape)}].");
                dst.copy_(src);
            }
        }
    }

    /// <summary>Applies the chain to rows of h (M, D): each tensor contracts its pair of axes, in <see cref="AxisLayout.Pairs"/>
    /// order, so each row x becomes M x = T_{N_T}(… T_1(x)).</summary>
    Tensor Chain(Tensor h, Func<int, Tensor> tensor)
    {
        var x = h.view([-1, .. Layout.Dims.Select(d => (long)d)]);            // (M, d0, …, d(N−1))
        for (int i = 0; i < Layout.TensorCount; i++)
            x = einsum(_equations[i], x, tensor(i));                          // Y[..o_m..o_n..] = Σ T[o_m,o_n,j_m,j_n] X[..j_m..j_n..]
        return x.reshape(-1, Layout.D);                                        // (M, D)
    }

    bool UseMaterialize(long tokens)
    {
        if (ComputePath != QuanTAComputePath.Auto) return ComputePath == QuanTAComputePath.Materialize;
        double sumK = Enumerable.Range(0, Layout.TensorCount).Sum(i => (double)Layout.TensorSide(i));
        double chain = 2.0 * tokens * Layout.D * sumK;                         // T and S chains on the tokens
        double materialize = 2.0 * Math.Min(_in, _out) * Layout.D * sumK + (double)tokens * _in * _out;
        return materialize < chain;
    }

    /// <inheritdoc/>
    public override IReadOnlyDictionary<string, object> Describe()
    {
        var (lo, hi) = Layout.RankBounds(Rank);
        return new Dictionary<string, object>
        {
            ["method"] = Method,
            ["in_features"] = _in,
            ["out_features"] = _out,
            ["layout"] = Layout.Dims.ToArray(),
            ["pairs"] = Layout.Pairs.Select(p => new[] { p.M, p.N }).ToArray(),
            ["rank"] = Rank is int r ? r : "full",
            ["rank_bounds"] = new[] { lo, hi },
            ["dropout"] = DropoutP,
            ["trainable_parameters"] = TrainableParameterCount,
        };
    }
}
