namespace QuanTA.Core.Runtime;

/// <summary>
/// Named places in the write and training paths where a crash test can stop the process deterministically. With the
/// environment variable <c>QUANTA_TEST_HOLD_AT</c> set to one of the names below, the process prints
/// <c>QUANTA_HOLD &lt;name&gt;</c> on stderr when it reaches that place and then blocks forever, so the test can kill it
/// (SIGKILL) exactly there. Without the variable (every normal run) <see cref="Reached"/> is a string comparison.
/// <list type="bullet">
/// <item><c>step:N</c> — inside optimizer step N: its backward passes are done, the AdamW update is not.</item>
/// <item><c>checkpoint:N:&lt;file&gt;</c> — checkpoint of step N, right after <c>&lt;file&gt;</c> (adapter.safetensors,
/// optimizer.bin, rng_state.bin, trainer_state.json) was written into the temporary folder.</item>
/// <item><c>checkpoint:N:replacing</c> — re-saving step N: the old folder is moved aside, the new one not yet in place.</item>
/// <item><c>checkpoint:N:renamed</c> — checkpoint N is in place; older ones are not yet pruned.</item>
/// <item><c>atomic-write:&lt;file name&gt;</c> — <see cref="AtomicFile"/> wrote and flushed the temporary file, the rename over
/// the target has not happened (e.g. <c>atomic-write:model.zip</c> for <c>quanta finetune --output model.zip</c>).</item>
/// </list>
/// </summary>
internal static class CrashTestPoints
{
    /// <summary>The environment variable naming the place to stop at.</summary>
    internal const string Variable = "QUANTA_TEST_HOLD_AT";

    /// <summary>The line prefix printed on stderr when the place is reached.</summary>
    internal const string Marker = "QUANTA_HOLD ";

    static readonly string? Target = Environment.GetEnvironmentVariable(Variable);

    /// <summary>Stops the process here (prints the marker and blocks) when <paramref name="point"/> is the requested place.</summary>
    internal static void Reached(string point)
    {
        if (Target is null || !string.Equals(Target, point, StringComparison.Ordinal)) return;
        Console.Error.WriteLine(Marker + point);
        Console.Error.Flush();
        Thread.Sleep(Timeout.Infinite);
    }
}
