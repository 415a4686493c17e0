using CsCheck;

namespace QuanTA.Tests.Robustness;

/// <summary>
/// The property every reader of outside input must have: on any bytes it either succeeds or throws one of the project's
/// clear exception types with a message naming the file, within a time limit, without allocating far more than the file's
/// size. Shared by QuanTA.Core.Tests and QuanTA.MLNet.Tests (linked source).
/// </summary>
/// <remarks>
/// Reproducing a failure: CsCheck prints the failing input and a seed (<c>Set seed: "…"</c>); set the environment variable
/// <c>QUANTA_PROPERTY_SEED</c> to it (or pass it to <see cref="Check"/>) to rerun exactly that case first. Each property
/// starts from a fixed seed (<see cref="DefaultSeed"/>), so a plain run explores the same cases every time;
/// <c>QUANTA_PROPERTY_ITER</c> multiplies the iteration counts for a longer local search.
/// </remarks>
internal static class ReaderProperty
{
    /// <summary>The seed the first case of every property starts from unless <c>QUANTA_PROPERTY_SEED</c> says otherwise.</summary>
    public const string DefaultSeed = "0N0XIzNsQ0O2";

    /// <summary>Time one read may take before it counts as a hang.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    /// <summary>Exception types that say clearly what is wrong with an input file (each message must name the file).</summary>
    public static readonly Type[] ClearTypes =
    [
        typeof(InvalidDataException),      // and subclasses: the project's "this file is bad" type
        typeof(FormatException),           // config.json's field errors
        typeof(NotSupportedException),     // a valid file of a kind the library does not implement
        typeof(FileNotFoundException),     // a file the input names (a shard, a tokenizer file) is missing
        typeof(DirectoryNotFoundException),// a folder the input names (a saved model's base model folder) is missing
        typeof(QuanTA.Core.Training.CheckpointCorruptException),   // a checkpoint folder that fails its checks
    ];

    static string? EnvSeed => Environment.GetEnvironmentVariable("QUANTA_PROPERTY_SEED") is { Length: > 0 } s ? s : null;

    static int Scale => int.TryParse(Environment.GetEnvironmentVariable("QUANTA_PROPERTY_ITER"), out var k) && k > 0 ? k : 1;

    /// <summary>
    /// Runs <paramref name="read"/> on <paramref name="iter"/> inputs drawn from <paramref name="gen"/> (single-threaded, from a fixed
    /// seed) and fails with the (shrunk) input and its seed when one of them breaks the property.
    /// </summary>
    /// <param name="gen">The faulty inputs.</param>
    /// <param name="read">Writes the input where the reader expects it and reads it; returns the file name the error must mention.</param>
    /// <param name="iter">Number of cases.</param>
    /// <param name="seed">Seed of the first case (default <c>QUANTA_PROPERTY_SEED</c> or <see cref="DefaultSeed"/>).</param>
    /// <param name="allocationAllowance">Managed bytes a read may allocate beyond 64 × the input's size.</param>
    public static void Check<T>(Gen<T> gen, Func<T, (string FileName, long InputBytes, Action Read)> read, int iter, string? seed = null,
        long allocationAllowance = 256L << 20)
    {
        gen.Sample(input =>
        {
            var (fileName, inputBytes, action) = read(input);
            var outcome = RunBounded(action);
            Assert.True(outcome.Finished, $"Reading {fileName} did not finish within {Timeout.TotalSeconds:F0} s (a hang).");
            long cap = allocationAllowance + 64 * Math.Max(inputBytes, 1);
            Assert.True(outcome.AllocatedBytes <= cap,
                $"Reading {fileName} ({inputBytes:N0} bytes) allocated {outcome.AllocatedBytes:N0} managed bytes (cap {cap:N0}): an allocation sized by the input's fields, not its length.");
            if (outcome.Error is { } e) AssertClear(e, fileName);
        }, seed: seed ?? EnvSeed ?? DefaultSeed, iter: iter * Scale, threads: 1);
    }

    /// <summary>Asserts that <paramref name="e"/> is a clear error about <paramref name="fileName"/>.</summary>
    public static void AssertClear(Exception e, string fileName)
    {
        bool clearType = ClearTypes.Any(t => t.IsInstanceOfType(e));
        Assert.True(clearType, $"Reading {fileName} threw {e.GetType().FullName}, not one of the clear types: {e}");
        Assert.True(e.Message.Contains(fileName, StringComparison.Ordinal),
            $"Reading {fileName} threw {e.GetType().Name} whose message does not name the file: {e.Message}");
    }

    /// <summary>What one bounded run did.</summary>
    public readonly record struct Outcome(bool Finished, Exception? Error, long AllocatedBytes);

    /// <summary>Runs <paramref name="action"/> on its own thread: its exception, its managed allocations, whether it finished in time.</summary>
    public static Outcome RunBounded(Action action)
    {
        Exception? error = null;
        long allocated = 0;
        var thread = new Thread(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try { action(); }
            catch (Exception e) { error = e; }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        }) { IsBackground = true, Name = "reader-under-test" };
        thread.Start();
        bool finished = thread.Join(Timeout);
        return new Outcome(finished, error, allocated);
    }
}
