namespace QuanTA.Core.Distributed;

/// <summary>What <see cref="ShardedBatches"/> does when the row count is not a multiple of the world size.</summary>
public enum UnevenRows
{
    /// <summary>Drop the last <c>rowCount % worldSize</c> rows of the (shuffled) order: shards are disjoint, every rank does the same number of steps.</summary>
    Drop,
    /// <summary>Repeat rows from the start of the order to fill the last round (like PyTorch's <c>DistributedSampler</c>): every row is seen.</summary>
    Pad,
}

/// <summary>
/// Splits the rows of a data set among ranks by striding: in the global order (identity, or one seeded permutation that is
/// the same on every rank and every epoch), rank r takes positions r, r+W, r+2W, … So the b-th batch of size B on each of
/// the W ranks together hold exactly the b-th global batch of size W·B — which is why W ranks × B reproduce one process × W·B.
/// </summary>
public sealed class ShardedBatches
{
    readonly int[] _rows;

    /// <summary>Builds this rank's shard.</summary>
    /// <param name="rowCount">Rows in the whole data set (the same number on every rank).</param>
    /// <param name="rank">This rank.</param>
    /// <param name="worldSize">Number of ranks.</param>
    /// <param name="shuffleSeed">Null keeps the data set's order; a seed shuffles it once (the same permutation on every rank, every epoch).</param>
    /// <param name="uneven">What to do with a remainder (default <see cref="UnevenRows.Drop"/>).</param>
    public ShardedBatches(int rowCount, int rank, int worldSize, int? shuffleSeed = null, UnevenRows uneven = UnevenRows.Drop)
    {
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), $"worldSize must be ≥ 1 (got {worldSize}).");
        if (rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), $"rank must be in 0..{worldSize - 1} (got {rank}).");
        if (rowCount < worldSize) throw new ArgumentException($"The data set has {rowCount} row(s), fewer than the {worldSize} ranks: every rank needs at least one row.", nameof(rowCount));
        Rank = rank; WorldSize = worldSize; RowCount = rowCount;

        var order = GlobalOrder(rowCount, shuffleSeed);
        int perRank = uneven == UnevenRows.Drop ? rowCount / worldSize : (rowCount + worldSize - 1) / worldSize;
        _rows = new int[perRank];
        for (int i = 0; i < perRank; i++) _rows[i] = order[(rank + (long)i * worldSize) % rowCount is var pos ? (int)pos : 0];
    }

    /// <summary>This rank.</summary>
    public int Rank { get; }
    /// <summary>Number of ranks.</summary>
    public int WorldSize { get; }
    /// <summary>Rows in the whole data set.</summary>
    public int RowCount { get; }
    /// <summary>This rank's row indices, in order (identical on every epoch).</summary>
    public IReadOnlyList<int> Rows => _rows;

    /// <summary>
    /// This rank's batches of <paramref name="batchSize"/> rows. With <paramref name="dropLast"/> (default true, so all ranks
    /// do the same number of equal-size steps) a short final batch is left out.
    /// </summary>
    public IEnumerable<int[]> Batches(int batchSize, bool dropLast = true)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batchSize must be ≥ 1 (got {batchSize}).");
        for (int start = 0; start < _rows.Length; start += batchSize)
        {
            int n = Math.Min(batchSize, _rows.Length - start);
            if (n < batchSize && dropLast) yield break;
            yield return _rows.AsSpan(start, n).ToArray();
        }
    }

    /// <summary>The global order all ranks agree on: 0..n-1, or a Fisher–Yates shuffle with <c>new Random(seed)</c> (deterministic across processes).</summary>
    public static int[] GlobalOrder(int rowCount, int? shuffleSeed)
    {
        var order = Enumerable.Range(0, rowCount).ToArray();
        if (shuffleSeed is { } seed)
        {
            var rng = new Random(seed);
            for (int i = rowCount - 1; i > 0; i--) { int j = rng.Next(i + 1); (order[i], order[j]) = (order[j], order[i]); }
        }
        return order;
    }
}
