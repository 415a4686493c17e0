namespace QuanTA.Core.Adapters;

/// <summary>
/// One QuanTA tensor's pair of axes (0-based, <see cref="M"/> &lt; <see cref="N"/>). The tensor for (m, n) has shape
/// [d_m, d_n, d_m, d_n] = [out_m, out_n, in_m, in_n] and acts on those two axes of the D-vector viewed as a tensor.
/// </summary>
/// <param name="M">The earlier (more significant) axis.</param>
/// <param name="N">The later axis.</param>
public readonly record struct AxisPair(int M, int N)
{
    /// <summary>The official (reference-code) key of this pair for a layout of <paramref name="axisCount"/> axes:
    /// negative-axis notation, later axis first, e.g. "-1 -2" for (N−2, N−1).</summary>
    public string OfficialKey(int axisCount) => $"-{axisCount - N} -{axisCount - M}";

    /// <summary>Parses an official key ("-1 -2") into a 0-based pair for a layout of <paramref name="axisCount"/> axes.</summary>
    public static AxisPair FromOfficialKey(string key, int axisCount)
    {
        var parts = key.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != 2 || !int.TryParse(parts[0], out var a) || !int.TryParse(parts[1], out var b) || a >= 0 || b >= 0)
            throw new FormatException($"Official QuanTA key '{key}' is not of the form \"-i -j\" (e.g. \"-1 -2\").");
        int x = axisCount + a, y = axisCount + b;
        if (x < 0 || y < 0 || x == y)
            throw new ArgumentOutOfRangeException(nameof(key), $"Official key '{key}' does not name two distinct axes of a {axisCount}-axis layout.");
        return new AxisPair(Math.Min(x, y), Math.Max(x, y));
    }

    /// <inheritdoc/>
    public override string ToString() => $"({M},{N})";
}

/// <summary>
/// The axis layout of a QuanTA adapter: local dimensions <c>dims = [d0 … d(N−1)]</c>, D = Π dims, and the ordered list of
/// axis pairs (one tensor each) applied as a chain. A D-vector is viewed row-major as a tensor (axis 0 most significant):
/// <c>x.view(-1, d0, …, d(N−1))</c>. Layers with in/out ≠ D are zero-padded to D on input and cropped on output.
/// </summary>
public sealed class AxisLayout
{
    /// <summary>Most axes a layout may have (einsum subscripts are single letters).</summary>
    public const int MaxAxes = 24;

    /// <summary>Creates a layout with all N(N−1)/2 pairs in the official order.</summary>
    /// <param name="dims">Local dimensions, N ≥ 2, each positive.</param>
    public AxisLayout(IReadOnlyList<int> dims) : this(dims, null) { }

    /// <summary>Creates a layout with an explicit pair chain (repeats allowed; null → all pairs in the official order).</summary>
    public AxisLayout(IReadOnlyList<int> dims, IReadOnlyList<AxisPair>? pairs)
    {
        ArgumentNullException.ThrowIfNull(dims);
        if (dims.Count < 2)
            throw new ArgumentException($"An axis layout needs at least 2 axes (N ≥ 2); got {dims.Count} ([{string.Join(",", dims)}]).", nameof(dims));
        if (dims.Count > MaxAxes)
            throw new ArgumentException($"An axis layout may have at most {MaxAxes} axes; got {dims.Count}.", nameof(dims));
        for (int i = 0; i < dims.Count; i++)
            if (dims[i] <= 0)
                throw new ArgumentException($"Axis {i} of layout [{string.Join(",", dims)}] has dimension {dims[i]}; every local dimension must be positive.", nameof(dims));
        Dims = dims.ToArray();
        long d = 1;
        foreach (var x in Dims) { d = checked(d * x); }
        if (d > int.MaxValue) throw new ArgumentException($"Layout [{string.Join(",", dims)}] has D = {d}, too large.", nameof(dims));
        D = (int)d;
        var list = pairs?.ToArray() ?? OfficialPairs(dims.Count);
        if (list.Length == 0) throw new ArgumentException("A QuanTA chain needs at least one axis pair.", nameof(pairs));
        foreach (var p in list)
            if (p.M < 0 || p.N >= dims.Count || p.M >= p.N)
                throw new ArgumentOutOfRangeException(nameof(pairs),
                    $"Axis pair {p} is invalid for layout [{string.Join(",", Dims)}]: need 0 ≤ m < n ≤ {dims.Count - 1}.");
        Pairs = list;
    }

    /// <summary>Local dimensions d0 … d(N−1).</summary>
    public IReadOnlyList<int> Dims { get; }
    /// <summary>Number of axes N.</summary>
    public int AxisCount => Dims.Count;
    /// <summary>D = Π dims, the size of the space the tensors act on.</summary>
    public int D { get; }
    /// <summary>The chain of pairs, in application order (first applied first).</summary>
    public IReadOnlyList<AxisPair> Pairs { get; }
    /// <summary>Number of tensors N_T in the chain.</summary>
    public int TensorCount => Pairs.Count;

    /// <summary>k = d_m·d_n, the side of tensor <paramref name="i"/> viewed as a matrix.</summary>
    public int TensorSide(int i) => Dims[Pairs[i].M] * Dims[Pairs[i].N];

    /// <summary>Shape [d_m, d_n, d_m, d_n] of tensor <paramref name="i"/>.</summary>
    public long[] TensorShape(int i) { var (m, n) = Pairs[i]; return [Dims[m], Dims[n], Dims[m], Dims[n]]; }

    /// <summary>Trainable parameters with full-rank tensors: Σ_i (d_m·d_n)² (independent of the layer's size).</summary>
    public long ParameterCount(int? rank = null) =>
        Enumerable.Range(0, TensorCount).Sum(i => { long k = TensorSide(i); return rank is int r && r < k ? 2L * k * r : k * k; });

    /// <summary>
    /// The einsum that applies one pair's tensor, on axes m &lt; n of <paramref name="axisCount"/> (the layout's, or a block's),
    /// to a batch z of D-vectors viewed as tensors — the one builder of these strings:
    /// <c>Y[z, ..o_m..o_n..] = Σ_{j_m, j_n} T[o_m, o_n, j_m, j_n] · X[z, ..j_m..j_n..]</c>. Axes are A, B, …; the pair's new
    /// indices are Y (axis m) and Z (axis n). 4 axes, pair (1, 3): <c>zABCD,YZBD->zAYCZ</c>; <paramref name="stacked"/> (L layers
    /// at once): <c>lzABCD,lYZBD->lzAYCZ</c>.
    /// </summary>
    internal static string PairEquation(int axisCount, int m, int n, bool stacked = false)
    {
        var inAxes = Enumerable.Range(0, axisCount).Select(i => (char)('A' + i)).ToArray();   // ≤ MaxAxes = 24: Y, Z stay free
        var outAxes = (char[])inAxes.Clone();
        outAxes[m] = 'Y'; outAxes[n] = 'Z';
        string l = stacked ? "l" : "";
        return $"{l}z{new string(inAxes)},{l}YZ{inAxes[m]}{inAxes[n]}->{l}z{new string(outAxes)}";   // T[o_m, o_n, j_m, j_n]
    }

    /// <summary>
    /// The official pair order, <c>itertools.combinations(range(-1, -N-1, -1), 2)</c> in 0-based axes:
    /// for N = 4: (2,3), (1,3), (0,3), (1,2), (0,2), (0,1).
    /// </summary>
    public static AxisPair[] OfficialPairs(int axisCount)
    {
        var list = new List<AxisPair>();
        for (int a = 1; a <= axisCount; a++)          // -a, the later axis
            for (int b = a + 1; b <= axisCount; b++)  // -b, the earlier axis
                list.Add(new AxisPair(axisCount - b, axisCount - a));
        return list.ToArray();
    }

    /// <summary>The first <paramref name="count"/> pairs of the official order, cycling through it again for deeper chains.</summary>
    public static AxisPair[] OfficialPairs(int axisCount, int count)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), $"Tensor count must be at least 1; got {count}.");
        var all = OfficialPairs(axisCount);
        return Enumerable.Range(0, count).Select(i => all[i % all.Length]).ToArray();
    }

    /// <summary>
    /// Default layout for a layer: <c>[ceil(max(in,out)^(1/N))] * N</c> (integer-exact: the smallest d with dᴺ ≥ max(in,out),
    /// so 4096 with N = 4 gives 8, not 9 from floating round-off).
    /// </summary>
    public static AxisLayout Derive(int inFeatures, int outFeatures, int axisCount = 4, IReadOnlyList<AxisPair>? pairs = null)
    {
        if (inFeatures <= 0 || outFeatures <= 0)
            throw new ArgumentException($"Layer size must be positive; got {inFeatures}→{outFeatures}.");
        if (axisCount < 2) throw new ArgumentException($"An axis layout needs at least 2 axes (N ≥ 2); got {axisCount}.", nameof(axisCount));
        int size = Math.Max(inFeatures, outFeatures);
        int d = Math.Max(1, (int)Math.Floor(Math.Pow(size, 1.0 / axisCount)));
        while (d > 1 && Pow(d - 1, axisCount) >= size) d--;
        while (Pow(d, axisCount) < size) d++;
        return new AxisLayout(Enumerable.Repeat(d, axisCount).ToArray(), pairs);
    }

    static long Pow(long b, int e) { long r = 1; for (int i = 0; i < e; i++) { r *= b; if (r > long.MaxValue / Math.Max(b, 1)) return long.MaxValue; } return r; }

    /// <summary>Throws a clear error when this layout cannot hold a layer of the given size (D &lt; max(in, out)).</summary>
    public void ValidateFor(int inFeatures, int outFeatures, string? layerName = null)
    {
        if (D < Math.Max(inFeatures, outFeatures))
            throw new ArgumentException(
                $"Axis layout [{string.Join(",", Dims)}] has D = {D}, smaller than the layer{(layerName is null ? "" : $" '{layerName}'")} " +
                $"of size {inFeatures}→{outFeatures}: the product of the local dimensions must be ≥ max(in, out) = {Math.Max(inFeatures, outFeatures)}.");
    }

    /// <summary>
    /// Bounds of the paper's rank-representation theorem for the operator M_T (D×D) of this chain.
    /// Tensor α acts on the whole D-space as (its k_α×k_α matrix) ⊗ I_{D/k_α} (up to an axis permutation), so its rank there
    /// is R_α·D/k_α, where R_α is the rank of tensor α as a k_α×k_α matrix and k_α = d_m·d_n ("d_α" in the paper's formula).
    /// Sylvester's inequality over the product of N_T such factors gives
    /// <c>Σ_α R_α·D/k_α − (N_T−1)·D ≤ rank(M_T) ≤ min_α R_α·D/k_α</c>; the lower bound is clamped at 0.
    /// R_α is taken as min(r, k_α) with a per-tensor rank r, else k_α (a generic, e.g. randomly initialized, tensor is full rank).
    /// These bound M_T; ΔW = crop(M_T − M_S) is a different matrix (its rank is measured, not bounded, in reports).
    /// </summary>
    public (long Lower, long Upper) RankBounds(int? rank = null)
    {
        long sum = 0, min = long.MaxValue;
        for (int i = 0; i < TensorCount; i++)
        {
            long k = TensorSide(i);
            long r = rank is int rr ? Math.Min(rr, k) : k;
            long full = r * (D / k);
            sum += full; min = Math.Min(min, full);
        }
        long lower = Math.Max(0, sum - (long)(TensorCount - 1) * D);
        return (lower, min);
    }

    /// <inheritdoc/>
    public override string ToString() => $"[{string.Join(",", Dims)}] (D={D}, pairs {string.Join(" ", Pairs)})";
}
