using CsCheck;

namespace QuanTA.Tests.Robustness;

/// <summary>
/// The property every reader of outside input must have: on any bytes it either succeeds or throws one of the project's
/// clear exception types with a message naming the file, within a time limit, without allocating far more than the file's
/// size. Shared by QuanTA.Core.Tests and QuanTA.MLNet.Tests (linked source).
/// </summary>
/// <remarks>
/// Reproducing a failure: CsCheck prints the shrunk input and a seed (<c>Set seed: "…"</c>); set the environment variable
/// <c>QUANTA_PROPERTY_SEED</c> to it to rerun exactly that case first. The cases are derived from <see cref="DefaultSeed"/>,
/// so plain runs explore the same cases every time; <c>QUANTA_PROPERTY_ITER</c> multiplies the case counts for a longer
/// local search (the extra cases are new, the first ones the same).
/// </remarks>
internal static class ReaderProperty
{
    /// <summary>The seed every property's cases are derived from.</summary>
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
    /// Runs <paramref name="read"/> on <paramref name="iter"/> inputs drawn from <paramref name="gen"/>, single-threaded. The cases
    /// are the same on every run (each from a PCG seed derived from <see cref="DefaultSeed"/> and the case number), so CI is
    /// repeatable; a failing case is handed to CsCheck with its seed, which shrinks it and reports <c>Set seed: "…"</c>.
    /// With <c>QUANTA_PROPERTY_SEED</c> set, that one case runs (through CsCheck) before the others.
    /// </summary>
    /// <param name="gen">The faulty inputs.</param>
    /// <param name="read">Writes the input where the reader expects it and reads it; returns the file name the error must mention.</param>
    /// <param name="iter">Number of cases.</param>
    /// <param name="seed">Seed string the case seeds are derived from (default <see cref="DefaultSeed"/>).</param>
    /// <param name="allocationAllowance">Managed bytes a read may allocate beyond 64 × the input's size.</param>
    public static void Check<T>(Gen<T> gen, Func<T, (string FileName, long InputBytes, Action Read)> read, int iter, string? seed = null,
        long allocationAllowance = 256L << 20)
    {
        void Assert1(T input)
        {
            var (fileName, inputBytes, action) = read(input);
            var outcome = RunBounded(action);
            Assert.True(outcome.Finished, $"Reading {fileName} did not finish within {Timeout.TotalSeconds:F0} s (a hang).");
            long cap = allocationAllowance + 64 * Math.Max(inputBytes, 1);
            Assert.True(outcome.AllocatedBytes <= cap,
                $"Reading {fileName} ({inputBytes:N0} bytes) allocated {outcome.AllocatedBytes:N0} managed bytes (cap {cap:N0}): an allocation sized by the input's fields, not its length.");
            if (outcome.Error is { } e) AssertClear(e, fileName);
        }

        if (EnvSeed is { } replay) gen.Sample(Assert1, seed: replay, iter: 1, threads: 1);
        ulong root = (ulong)(seed ?? DefaultSeed).Aggregate(1469598103934665603L, (h, c) => (h ^ c) * 1099511628211L);
        for (int i = 0; i < iter * Scale; i++)
        {
            var pcg = new PCG((uint)i * 2 + 1, root + (ulong)i * 0x9E3779B97F4A7C15UL);
            string caseSeed = pcg.ToString();
            var input = gen.Generate(pcg, null, out _);
            try { Assert1(input); }
            catch (Exception first)
            {
                // CsCheck reruns the case from its seed, shrinks it and throws with the seed to reproduce it.
                gen.Sample(Assert1, seed: caseSeed, iter: 1, threads: 1);
                throw new Xunit.Sdk.XunitException($"Case {i} (seed \"{caseSeed}\"): {input}\n{first.Message}");
            }
        }
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
