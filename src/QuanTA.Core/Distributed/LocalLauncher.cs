using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace QuanTA.Core.Distributed;

/// <summary>Settings of <see cref="LocalLauncher"/>.</summary>
public sealed record LaunchOptions
{
    /// <summary>Number of ranks to start on this host (one per GPU).</summary>
    public int NprocPerNode { get; init; } = 1;
    /// <summary>Address of rank 0 given to the children (loopback: one host).</summary>
    public string MasterAddr { get; init; } = "127.0.0.1";
    /// <summary>Rendezvous port; null picks a free one.</summary>
    public int? MasterPort { get; init; }
    /// <summary>Passed to the children as <c>QUANTA_DIST_TIMEOUT_S</c> (null: their default).</summary>
    public TimeSpan? RankTimeout { get; init; }
    /// <summary>After one rank fails, how long the others get to report their own error before they are killed.</summary>
    public TimeSpan FailureGrace { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Kill everything after this long (null: no limit).</summary>
    public TimeSpan? JobTimeout { get; init; }
    /// <summary>More environment variables for every child.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();
    /// <summary>Receives each child's output lines (rank, line, isError); default: echo to the console with a "[rank r]" prefix.</summary>
    public Action<int, string, bool>? OnLine { get; init; }
}

/// <summary>Outcome of <see cref="LocalLauncher.Run"/>.</summary>
/// <param name="ExitCodes">Exit code per rank (-1: killed after another rank failed or the job timed out).</param>
/// <param name="StandardOutput">Each rank's stdout lines.</param>
/// <param name="FirstFailedRank">The rank that failed first, or null when all succeeded.</param>
public sealed record LaunchResult(int[] ExitCodes, IReadOnlyList<string>[] StandardOutput, int? FirstFailedRank)
{
    /// <summary>True when every rank exited with 0.</summary>
    public bool Succeeded => FirstFailedRank is null;
}

/// <summary>
/// Starts N local ranks as child processes with the torchrun environment (<c>RANK</c>, <c>WORLD_SIZE</c>, <c>LOCAL_RANK</c>,
/// <c>LOCAL_WORLD_SIZE</c>, <c>MASTER_ADDR</c>, <c>MASTER_PORT</c>, and <c>NCCL_NVLS_ENABLE=0</c>) — the
/// <c>--nproc-per-node N</c> behaviour for one host. Failures are isolated: when one rank fails the others get
/// <see cref="LaunchOptions.FailureGrace"/> to report, then are killed, so the launcher never hangs on a broken job.
/// </summary>
public static class LocalLauncher
{
    /// <summary>The command that re-executes the current program: its executable, or <c>dotnet &lt;entry dll&gt;</c> under the muxer.</summary>
    public static (string FileName, IReadOnlyList<string> PrefixArguments) SelfCommand()
    {
        var exe = System.Environment.ProcessPath ?? throw new InvalidOperationException("The current process has no executable path to re-execute.");
        var name = Path.GetFileNameWithoutExtension(exe);
        if (name == "dotnet")
        {
            var entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
            if (string.IsNullOrEmpty(entry)) throw new InvalidOperationException("Running under 'dotnet' without an entry assembly path: cannot re-execute.");
            return (exe, new[] { entry });
        }
        return (exe, Array.Empty<string>());
    }

    /// <summary>A TCP port that was free on the loopback interface a moment ago.</summary>
    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        try { return ((IPEndPoint)l.LocalEndpoint).Port; } finally { l.Stop(); }
    }

    /// <summary>Runs <paramref name="fileName"/> <paramref name="arguments"/> as ranks 0..N-1 and waits for all of them.</summary>
    public static LaunchResult Run(string fileName, IReadOnlyList<string> arguments, LaunchOptions options)
    {
        int n = options.NprocPerNode;
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(options), $"NprocPerNode must be ≥ 1 (got {n}).");
        int port = options.MasterPort ?? FreePort();
        var onLine = options.OnLine ?? ((r, line, err) => (err ? Console.Error : Console.Out).WriteLine($"[rank {r}] {line}"));
        var outputs = Enumerable.Range(0, n).Select(_ => new List<string>()).ToArray();
        var procs = new Process[n];
        var gate = new object();
        try
        {
            for (int r = 0; r < n; r++)
            {
                var psi = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                foreach (var a in arguments) psi.ArgumentList.Add(a);
                psi.Environment[ProcessGroupOptions.RankEnv] = r.ToString();
                psi.Environment[ProcessGroupOptions.WorldSizeEnv] = n.ToString();
                psi.Environment[ProcessGroupOptions.LocalRankEnv] = r.ToString();
                psi.Environment["LOCAL_WORLD_SIZE"] = n.ToString();
                psi.Environment[ProcessGroupOptions.MasterAddrEnv] = options.MasterAddr;
                psi.Environment[ProcessGroupOptions.MasterPortEnv] = port.ToString();
                psi.Environment["NCCL_NVLS_ENABLE"] = "0";
                if (options.RankTimeout is { } t) psi.Environment[ProcessGroupOptions.TimeoutEnv] = t.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
                foreach (var (k, v) in options.Environment) psi.Environment[k] = v;
                var p = new Process { StartInfo = psi };
                int rank = r;
                p.OutputDataReceived += (_, e) => { if (e.Data is null) return; lock (gate) { outputs[rank].Add(e.Data); onLine(rank, e.Data, false); } };
                p.ErrorDataReceived += (_, e) => { if (e.Data is null) return; lock (gate) onLine(rank, e.Data, true); };
                p.Start(); p.BeginOutputReadLine(); p.BeginErrorReadLine();
                procs[r] = p;
            }

            var codes = Enumerable.Repeat(int.MinValue, n).ToArray();
            int? firstFailed = null;
            DateTime? killAt = options.JobTimeout is { } jt ? DateTime.UtcNow + jt : null;
            while (codes.Any(c => c == int.MinValue))
            {
                for (int r = 0; r < n; r++)
                {
                    if (codes[r] != int.MinValue || !procs[r].WaitForExit(20)) continue;
                    procs[r].WaitForExit();                     // flush the output readers
                    codes[r] = procs[r].ExitCode;
                    if (codes[r] != 0 && firstFailed is null)
                    {
                        firstFailed = r;
                        var graceEnd = DateTime.UtcNow + options.FailureGrace;
                        killAt = killAt is { } k && k < graceEnd ? k : graceEnd;
                    }
                }
                if (killAt is { } deadline && DateTime.UtcNow > deadline)
                {
                    for (int r = 0; r < n; r++)
                        if (codes[r] == int.MinValue)
                        {
                            try { procs[r].Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                            procs[r].WaitForExit();
                            codes[r] = -1;
                            firstFailed ??= r;
                        }
                }
            }
            return new LaunchResult(codes, outputs, firstFailed);
        }
        finally
        {
            foreach (var p in procs)
            {
                if (p is null) continue;
                try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                p.Dispose();
            }
        }
    }
}
