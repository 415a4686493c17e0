namespace QuanTA.Core.Training;

/// <summary>
/// Batches for <see cref="Trainer{TBatch}"/>, one pass per epoch, able to start an epoch at a batch index (for exact resume).
/// The order of an epoch must depend only on the epoch number (e.g. a shuffle seeded by seed and epoch), never on earlier passes.
/// </summary>
/// <typeparam name="TBatch">Whatever the loss function consumes (tensors, token-id arrays, rows).</typeparam>
public interface IBatchSource<TBatch>
{
    /// <summary>Batches per epoch, when known without a pass over the data; null makes the trainer count one pass of epoch 0.</summary>
    long? BatchesPerEpoch { get; }

    /// <summary>The batches of <paramref name="epoch"/> from index <paramref name="startBatch"/> on.</summary>
    IEnumerable<TBatch> GetBatches(int epoch, long startBatch);
}

/// <summary>Ready-made <see cref="IBatchSource{TBatch}"/>s.</summary>
public static class BatchSource
{
    /// <summary>
    /// A fixed list of batches; with <paramref name="shuffle"/>, each epoch visits them in a permutation seeded by
    /// (<paramref name="seed"/>, epoch), so a resumed run sees the same order.
    /// </summary>
    public static IBatchSource<TBatch> FromList<TBatch>(IReadOnlyList<TBatch> batches, bool shuffle = false, long seed = 42)
        => new ListSource<TBatch>(batches ?? throw new ArgumentNullException(nameof(batches)), shuffle, seed);

    /// <summary>
    /// Batches from a factory called once per epoch (e.g. a streaming reader); skipping to a position enumerates and drops the
    /// batches before it. The factory must yield the same sequence for the same epoch.
    /// </summary>
    public static IBatchSource<TBatch> FromFactory<TBatch>(Func<int, IEnumerable<TBatch>> batchesOfEpoch, long? batchesPerEpoch = null)
        => new FactorySource<TBatch>(batchesOfEpoch ?? throw new ArgumentNullException(nameof(batchesOfEpoch)), batchesPerEpoch);

    /// <summary>
    /// Groups <paramref name="examples"/> into micro-batches of <paramref name="batchSize"/> (the last one may be smaller unless
    /// <paramref name="dropLast"/>); with <paramref name="shuffle"/>, examples are permuted per epoch, seeded by (seed, epoch).
    /// </summary>
    public static IBatchSource<IReadOnlyList<T>> FromExamples<T>(IReadOnlyList<T> examples, int batchSize, bool shuffle = false,
                                                               long seed = 42, bool dropLast = false)
    {
        ArgumentNullException.ThrowIfNull(examples);
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be >= 1.");
        long count = dropLast ? examples.Count / batchSize : (examples.Count + batchSize - 1) / batchSize;
        return new FactorySource<IReadOnlyList<T>>(epoch => Chunk(examples, batchSize, shuffle ? Permutation(examples.Count, seed, epoch) : null, count), count);
    }

    static IEnumerable<IReadOnlyList<T>> Chunk<T>(IReadOnlyList<T> examples, int batchSize, int[]? order, long count)
    {
        for (long b = 0; b < count; b++)
        {
            var start = (int)(b * batchSize);
            var n = Math.Min(batchSize, examples.Count - start);
            var batch = new T[n];
            for (var i = 0; i < n; i++) batch[i] = examples[order is null ? start + i : order[start + i]];
            yield return batch;
        }
    }

    /// <summary>A Fisher–Yates permutation of 0..n-1 that depends only on (seed, epoch) (stable across processes and platforms).</summary>
    public static int[] Permutation(int n, long seed, int epoch)
    {
        var order = new int[n];
        for (var i = 0; i < n; i++) order[i] = i;
        var rng = new SplitMix64(unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)epoch));
        for (var i = n - 1; i > 0; i--)
        {
            var j = (int)(rng.Next() % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    struct SplitMix64(ulong state)
    {
        ulong _s = state;
        public ulong Next()
        {
            var z = _s += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    sealed class ListSource<TBatch>(IReadOnlyList<TBatch> batches, bool shuffle, long seed) : IBatchSource<TBatch>
    {
        public long? BatchesPerEpoch => batches.Count;

        public IEnumerable<TBatch> GetBatches(int epoch, long startBatch)
        {
            var order = shuffle ? Permutation(batches.Count, seed, epoch) : null;
            for (var i = (int)startBatch; i < batches.Count; i++) yield return batches[order is null ? i : order[i]];
        }
    }

    sealed class FactorySource<TBatch>(Func<int, IEnumerable<TBatch>> factory, long? count) : IBatchSource<TBatch>
    {
        public long? BatchesPerEpoch => count;

        public IEnumerable<TBatch> GetBatches(int epoch, long startBatch)
        {
            long i = 0;
            foreach (var b in factory(epoch))
            {
                if (i++ < startBatch)
                {
                    (b as IDisposable)?.Dispose();
                    continue;
                }
                yield return b;
            }
        }
    }
}
