using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// Options of a QuanTA adapter (PEFT's <c>QuanTAConfig</c>): the axis layout, which axis pairs carry a tensor (and in what
/// order), an optional per-tensor rank, dropout and seed. Defaults reproduce the official code: layout derived as
/// <c>[ceil(max(in,out)^(1/4))]*4</c>, all N(N−1)/2 pairs in the official order, full-rank tensors, no dropout.
/// </summary>
public sealed record QuanTAConfig : IAdapterConfig
{
    /// <summary>Local dimensions [d0 … d(N−1)] (N ≥ 2, each positive, product ≥ max(in, out) of every targeted layer);
    /// null derives <c>[ceil(max(in,out)^(1/N))]*N</c> per layer with N = <see cref="AxisCount"/>. Paper, LLaMA-7B: [16,8,8,4].</summary>
    public int[]? Layout { get; init; }

    /// <summary>N used when <see cref="Layout"/> is null. Default 4 (the official default).</summary>
    public int AxisCount { get; init; } = 4;

    /// <summary>An explicit chain of axis pairs (0-based, applied in this order, repeats allowed for deeper chains);
    /// null uses <see cref="TensorCount"/> or, if that is null too, all pairs in the official order.</summary>
    public AxisPair[]? Pairs { get; init; }

    /// <summary>Number of tensors: the first K pairs of the official order, cycling through it again when K exceeds
    /// N(N−1)/2. Ignored when <see cref="Pairs"/> is set; null means all N(N−1)/2 pairs.</summary>
    public int? TensorCount { get; init; }

    /// <summary>Per-tensor rank r: each k×k tensor (k = d_m·d_n) is the product of a k×r and an r×k factor when r &lt; k.
    /// Null (default) = full-rank tensors, as in the paper.</summary>
    public int? Rank { get; init; }

    /// <summary>Dropout probability on the adapter's input (training mode only). Default 0 (official).</summary>
    public double Dropout { get; init; }

    /// <inheritdoc/>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public string Method => "quanta";

    /// <inheritdoc/>
    /// <remarks>The one home of these rules (<c>QuanTAFineTuneOptions.Validate</c> calls it). An error is an
    /// <see cref="ArgumentException"/> whose ParamName is the property: "QuanTAConfig.Rank: must be …".</remarks>
    public void Validate()
    {
        static void Check(bool ok, string property, string problem)
        {
            if (!ok) throw new ArgumentException($"QuanTAConfig.{property}: {problem}", property);
        }
        if (Layout is not null)
        {
            try { _ = new AxisLayout(Layout, Pairs); }          // checks N ≥ 2, positive dims, pair indices
            catch (ArgumentException e)
            {
                var property = e.ParamName == "pairs" ? nameof(Pairs) : nameof(Layout);
                var reason = e.ParamName is { } p && e.Message.EndsWith($" (Parameter '{p}')", StringComparison.Ordinal)
                    ? e.Message[..^$" (Parameter '{p}')".Length] : e.Message;
                throw new ArgumentException($"QuanTAConfig.{property}: {reason}", property, e);
            }
        }
        else
        {
            Check(AxisCount >= 2, nameof(AxisCount), $"must be at least 2 (N ≥ 2; got {AxisCount}).");
            if (Pairs is not null)
            {
                Check(Pairs.Length > 0, nameof(Pairs), "needs at least one pair of axes.");
                foreach (var p in Pairs)
                    Check(p.M >= 0 && p.M < p.N && p.N < AxisCount, nameof(Pairs),
                        $"axis pair {p} is invalid for {AxisCount} axes: need 0 ≤ m < n ≤ {AxisCount - 1}.");
            }
        }
        Check(TensorCount is null or >= 1, nameof(TensorCount), $"must be positive (got {TensorCount}); leave it unset for all N(N−1)/2 pairs.");
        Check(Rank is null or >= 1, nameof(Rank), $"must be positive (got {Rank}); leave it unset for full-rank tensors.");
        Check(Dropout is >= 0 and < 1, nameof(Dropout), $"must be in [0, 1) (got {Dropout}).");   // NaN fails too
    }

    /// <summary>The layout (with its pair chain) used for a layer of the given size; throws if it cannot hold the layer.</summary>
    public AxisLayout ResolveLayout(int inFeatures, int outFeatures, string? layerName = null)
    {
        Validate();
        int n = Layout?.Length ?? AxisCount;
        var pairs = Pairs ?? (TensorCount is int k ? AxisLayout.OfficialPairs(n, k) : null);
        var layout = Layout is null ? AxisLayout.Derive(inFeatures, outFeatures, AxisCount, pairs) : new AxisLayout(Layout, pairs);
        layout.ValidateFor(inFeatures, outFeatures, layerName);
        return layout;
    }

    /// <inheritdoc/>
    public Adapter Create(int inFeatures, int outFeatures)
    {
        using var g = Seed is int s ? new Generator((ulong)s) : null;
        return Create(inFeatures, outFeatures, g);
    }

    /// <inheritdoc/>
    public Adapter Create(int inFeatures, int outFeatures, Generator? generator) =>
        new QuanTAAdapter(inFeatures, outFeatures, ResolveLayout(inFeatures, outFeatures), Rank, Dropout, generator);

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, object?> ToDictionary() => new Dictionary<string, object?>
    {
        ["method"] = Method,
        ["layout"] = Layout,
        ["axis_count"] = AxisCount,
        ["pairs"] = Pairs?.Select(p => new[] { p.M, p.N }).ToArray(),
        ["tensor_count"] = TensorCount,
        ["rank"] = Rank,
        ["dropout"] = Dropout,
        ["seed"] = Seed,
    };
}
