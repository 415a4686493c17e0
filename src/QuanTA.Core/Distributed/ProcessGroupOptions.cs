namespace QuanTA.Core.Distributed;

/// <summary>
/// Where this process sits in a multi-process (data-parallel) job, read from the standard launcher environment:
/// <c>RANK</c>, <c>WORLD_SIZE</c>, <c>LOCAL_RANK</c>, <c>MASTER_ADDR</c>, <c>MASTER_PORT</c> — what torchrun sets, and what
/// <c>srun</c>/<c>mpirun</c> wrappers export. When <c>RANK</c>/<c>WORLD_SIZE</c>/<c>LOCAL_RANK</c> are absent, Slurm's
/// <c>SLURM_PROCID</c>/<c>SLURM_NTASKS</c>/<c>SLURM_LOCALID</c> and Open MPI's <c>OMPI_COMM_WORLD_RANK</c>/<c>_SIZE</c>/<c>_LOCAL_RANK</c>
/// are used; <c>MASTER_ADDR</c> and <c>MASTER_PORT</c> must always be given for more than one rank.
/// </summary>
public sealed record ProcessGroupOptions
{
    /// <summary>Environment variable: global rank of this process, 0..WORLD_SIZE-1.</summary>
    public const string RankEnv = "RANK";
    /// <summary>Environment variable: number of processes in the job.</summary>
    public const string WorldSizeEnv = "WORLD_SIZE";
    /// <summary>Environment variable: rank of this process on its host (also its GPU index).</summary>
    public const string LocalRankEnv = "LOCAL_RANK";
    /// <summary>Environment variable: host name or IP of rank 0 (the rendezvous store listens there).</summary>
    public const string MasterAddrEnv = "MASTER_ADDR";
    /// <summary>Environment variable: TCP port of the rendezvous store on rank 0.</summary>
    public const string MasterPortEnv = "MASTER_PORT";
    /// <summary>Environment variable (optional): timeout in seconds for rendezvous and collectives (default 600).</summary>
    public const string TimeoutEnv = "QUANTA_DIST_TIMEOUT_S";

    /// <summary>Global rank of this process, 0 ≤ Rank &lt; WorldSize. Rank 0 hosts the rendezvous store and alone writes files.</summary>
    public int Rank { get; init; }
    /// <summary>Number of processes (one per GPU).</summary>
    public int WorldSize { get; init; } = 1;
    /// <summary>Rank on this host; used as the CUDA device index (cuda:LOCAL_RANK).</summary>
    public int LocalRank { get; init; }
    /// <summary>Host name or IP address of rank 0.</summary>
    public string MasterAddr { get; init; } = "127.0.0.1";
    /// <summary>TCP port of the rendezvous store on rank 0 (0 lets rank 0 pick a free port: tests only).</summary>
    public int MasterPort { get; init; } = 29500;
    /// <summary>Bound on every wait (connecting, barriers, collectives). A rank that does not arrive within it ends the run with an error naming it.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(600);

    /// <summary>True for a job of more than one process.</summary>
    public bool IsDistributed => WorldSize > 1;

    /// <summary>The single-process group (rank 0 of 1).</summary>
    public static ProcessGroupOptions Single { get; } = new();

    /// <summary>
    /// Reads the process group from the environment (see the type's summary). With no rank/world-size variable at all, returns
    /// <see cref="Single"/>. Any inconsistency (a missing partner variable, a non-number, a rank outside the world) is an
    /// <see cref="ArgumentException"/> naming the variable and what was expected.
    /// </summary>
    /// <param name="getEnv">Variable lookup (default: <see cref="Environment.GetEnvironmentVariable(string)"/>); tests pass a dictionary.</param>
    public static ProcessGroupOptions FromEnvironment(Func<string, string?>? getEnv = null)
    {
        getEnv ??= Environment.GetEnvironmentVariable;
        string? Get(string name) { var v = getEnv(name); return string.IsNullOrWhiteSpace(v) ? null : v.Trim(); }

        var (rankText, rankVar) = First(Get, RankEnv, "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK");
        var (worldText, worldVar) = First(Get, WorldSizeEnv, "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE");
        var (localText, localVar) = First(Get, LocalRankEnv, "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID");
        if (rankText is null && worldText is null)
        {
            if (localText is not null && ParseInt(localText, localVar!, 0) != 0)
                throw new ArgumentException($"{localVar}={localText} is set but neither {RankEnv} nor {WorldSizeEnv} is. A launcher must set all of {RankEnv}, {WorldSizeEnv}, {LocalRankEnv}, {MasterAddrEnv}, {MasterPortEnv}.");
            return Single;
        }
        if (worldText is null)
            throw new ArgumentException($"{rankVar}={rankText} is set but {WorldSizeEnv} is not. Expected both (and {MasterAddrEnv}, {MasterPortEnv} when {WorldSizeEnv} > 1), as torchrun sets them.");
        if (rankText is null)
            throw new ArgumentException($"{worldVar}={worldText} is set but {RankEnv} is not. Expected both, as torchrun sets them.");

        int world = ParseInt(worldText, worldVar!, 1);
        int rank = ParseInt(rankText, rankVar!, 0);
        if (rank >= world)
            throw new ArgumentException($"{rankVar}={rank} is outside the world: expected 0 ≤ rank < {worldVar}={world}.");
        int local = localText is null ? (world == 1 ? 0 : rank) : ParseInt(localText, localVar!, 0);
        if (local > rank)
            throw new ArgumentException($"{localVar}={local} is larger than {rankVar}={rank}; the local rank counts processes on this host, so it cannot exceed the global rank.");

        var timeout = TimeSpan.FromSeconds(600);
        if (Get(TimeoutEnv) is { } t)
        {
            if (!double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var secs) || secs <= 0)
                throw new ArgumentException($"{TimeoutEnv}='{t}' is not a positive number of seconds.");
            timeout = TimeSpan.FromSeconds(secs);
        }

        if (world == 1)
            return new ProcessGroupOptions { Rank = 0, WorldSize = 1, LocalRank = local, Timeout = timeout,
                                             MasterAddr = Get(MasterAddrEnv) ?? "127.0.0.1", MasterPort = Get(MasterPortEnv) is { } p1 ? ParsePort(p1) : 29500 };

        var addr = Get(MasterAddrEnv) ?? throw new ArgumentException(
            $"{worldVar}={world} but {MasterAddrEnv} is not set. Expected the host name or IP of rank 0 (torchrun sets it; under Slurm: " +
            "export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)).");
        var portText = Get(MasterPortEnv) ?? throw new ArgumentException(
            $"{worldVar}={world} but {MasterPortEnv} is not set. Expected a free TCP port on rank 0's host, the same on every rank (e.g. 29500).");
        return new ProcessGroupOptions { Rank = rank, WorldSize = world, LocalRank = local, MasterAddr = addr, MasterPort = ParsePort(portText), Timeout = timeout };
    }

    /// <summary>Checks the fields' consistency; throws <see cref="ArgumentException"/> naming the bad one.</summary>
    public ProcessGroupOptions Validate()
    {
        if (WorldSize < 1) throw new ArgumentException($"WorldSize must be ≥ 1 (got {WorldSize}).");
        if (Rank < 0 || Rank >= WorldSize) throw new ArgumentException($"Rank must be in 0..{WorldSize - 1} (got {Rank}).");
        if (LocalRank < 0) throw new ArgumentException($"LocalRank must be ≥ 0 (got {LocalRank}).");
        if (MasterPort < 0 || MasterPort > 65535) throw new ArgumentException($"MasterPort must be in 0..65535 (got {MasterPort}).");
        if (string.IsNullOrWhiteSpace(MasterAddr)) throw new ArgumentException("MasterAddr must name rank 0's host.");
        if (Timeout <= TimeSpan.Zero) throw new ArgumentException($"Timeout must be positive (got {Timeout}).");
        return this;
    }

    /// <inheritdoc/>
    public override string ToString() => $"rank {Rank}/{WorldSize} (local {LocalRank}) via {MasterAddr}:{MasterPort}";

    static (string? Value, string? Name) First(Func<string, string?> get, params string[] names)
    {
        foreach (var n in names) if (get(n) is { } v) return (v, n);
        return (null, null);
    }

    static int ParseInt(string text, string name, int min)
    {
        if (!int.TryParse(text, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var v))
            throw new ArgumentException($"{name}='{text}' is not an integer.");
        if (v < min) throw new ArgumentException($"{name}={v} is out of range: expected an integer ≥ {min}.");
        return v;
    }

    static int ParsePort(string text)
    {
        if (!int.TryParse(text, out var p) || p < 1 || p > 65535)
            throw new ArgumentException($"{MasterPortEnv}='{text}' is not a TCP port: expected an integer in 1..65535.");
        return p;
    }
}
