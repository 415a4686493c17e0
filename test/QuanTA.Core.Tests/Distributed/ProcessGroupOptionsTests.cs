using QuanTA.Core.Distributed;

namespace QuanTA.Core.Tests.Distributed;

public class ProcessGroupOptionsTests
{
    static Func<string, string?> Env(params (string, string)[] vars)
    {
        var d = vars.ToDictionary(v => v.Item1, v => v.Item2);
        return k => d.TryGetValue(k, out var v) ? v : null;
    }

    [Fact]
    public void ReadsTorchrunEnvironment()
    {
        var o = ProcessGroupOptions.FromEnvironment(Env(("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node7"), ("MASTER_PORT", "29511")));
        Assert.Equal((3, 4, 1, "node7", 29511), (o.Rank, o.WorldSize, o.LocalRank, o.MasterAddr, o.MasterPort));
        Assert.True(o.IsDistributed);
    }

    [Fact]
    public void NoVariablesMeansSingleProcess()
    {
        var o = ProcessGroupOptions.FromEnvironment(Env());
        Assert.Equal((0, 1), (o.Rank, o.WorldSize));
        Assert.False(o.IsDistributed);
    }

    [Fact]
    public void SlurmAndOpenMpiVariablesAreFallbacks()
    {
        var s = ProcessGroupOptions.FromEnvironment(Env(("SLURM_PROCID", "5"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "1234")));
        Assert.Equal((5, 8, 1), (s.Rank, s.WorldSize, s.LocalRank));
        var m = ProcessGroupOptions.FromEnvironment(Env(("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "1234")));
        Assert.Equal((1, 2, 1), (m.Rank, m.WorldSize, m.LocalRank));
        // torchrun's own variables win over Slurm's
        var both = ProcessGroupOptions.FromEnvironment(Env(("RANK", "0"), ("WORLD_SIZE", "2"), ("SLURM_PROCID", "1"), ("SLURM_NTASKS", "9"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "1234")));
        Assert.Equal((0, 2), (both.Rank, both.WorldSize));
    }

    [Theory]
    [InlineData("RANK=1", "WORLD_SIZE")]                                               // partner missing
    [InlineData("WORLD_SIZE=2", "RANK")]
    [InlineData("RANK=2;WORLD_SIZE=2;MASTER_ADDR=a;MASTER_PORT=1", "outside the world")]
    [InlineData("RANK=x;WORLD_SIZE=2;MASTER_ADDR=a;MASTER_PORT=1", "RANK='x' is not an integer")]
    [InlineData("RANK=0;WORLD_SIZE=0;MASTER_ADDR=a;MASTER_PORT=1", "WORLD_SIZE=0")]
    [InlineData("RANK=1;WORLD_SIZE=2;MASTER_PORT=1", "MASTER_ADDR")]
    [InlineData("RANK=1;WORLD_SIZE=2;MASTER_ADDR=a", "MASTER_PORT")]
    [InlineData("RANK=1;WORLD_SIZE=2;MASTER_ADDR=a;MASTER_PORT=70000", "1..65535")]
    [InlineData("RANK=0;WORLD_SIZE=2;LOCAL_RANK=1;MASTER_ADDR=a;MASTER_PORT=1", "LOCAL_RANK=1")]
    [InlineData("RANK=0;WORLD_SIZE=2;MASTER_ADDR=a;MASTER_PORT=1;QUANTA_DIST_TIMEOUT_S=-3", "QUANTA_DIST_TIMEOUT_S")]
    public void BadEnvironmentIsAClearError(string vars, string expectedInMessage)
    {
        var pairs = vars.Split(';').Select(kv => kv.Split('=')).Select(a => (a[0], a[1])).ToArray();
        var e = Assert.Throws<ArgumentException>(() => ProcessGroupOptions.FromEnvironment(Env(pairs)));
        Assert.Contains(expectedInMessage, e.Message);
    }
}

public class DistributedContextTests
{
    [Fact]
    public void OneProcessNeedsNoStoreAndWritesOnItsOwn()
    {
        using var d = DistributedContext.Initialize(ProcessGroupOptions.Single);
        Assert.Null(d.Store);
        Assert.True(d.IsWriter);
        Assert.Equal(1, d.WorldSize);
        Assert.Equal(10, d.Shard(10).Rows.Count);
        int writes = 0; d.WriteOnRankZero(() => writes++); Assert.Equal(1, writes);
    }

    [Fact]
    public void SeveralProcessesWithoutCudaIsAClearError()
    {
        if (QuanTA.Core.Runtime.TorchRuntime.CudaAvailable) return;   // about CPU-only machines
        var g = new ProcessGroupOptions { Rank = 0, WorldSize = 2, MasterPort = LocalLauncher.FreePort(), Timeout = TimeSpan.FromSeconds(2) };
        var e = Assert.Throws<InvalidOperationException>(() => DistributedContext.Initialize(g));
        Assert.Contains("NCCL", e.Message);
        Assert.Contains("QUANTA_LIBTORCH_DIR", e.Message);
    }
}
