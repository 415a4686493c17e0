using System.Diagnostics;
using QuanTA.Core.Distributed;

namespace QuanTA.Core.Tests.Distributed;

public class LocalLauncherTests
{
    [Fact]
    public void ChildrenGetTheTorchrunEnvironment()
    {
        var r = LocalLauncher.Run("/bin/sh", new[] { "-c", "echo $RANK $WORLD_SIZE $LOCAL_RANK $MASTER_ADDR $MASTER_PORT $NCCL_NVLS_ENABLE $QUANTA_DIST_TIMEOUT_S" },
            new LaunchOptions { NprocPerNode = 3, MasterPort = 29999, RankTimeout = TimeSpan.FromSeconds(42), OnLine = (_, _, _) => { } });
        Assert.True(r.Succeeded);
        for (int rank = 0; rank < 3; rank++)
            Assert.Equal($"{rank} 3 {rank} 127.0.0.1 29999 0 42", Assert.Single(r.StandardOutput[rank]));
    }

    [Fact]
    public void OneFailingRankEndsTheJobWithoutHanging()
    {
        var sw = Stopwatch.StartNew();
        var r = LocalLauncher.Run("/bin/sh", new[] { "-c", "if [ $RANK = 1 ]; then exit 3; fi; sleep 60" },
            new LaunchOptions { NprocPerNode = 3, FailureGrace = TimeSpan.FromSeconds(1), OnLine = (_, _, _) => { } });
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), $"took {sw.Elapsed}");
        Assert.False(r.Succeeded);
        Assert.Equal(1, r.FirstFailedRank);
        Assert.Equal(new[] { -1, 3, -1 }, r.ExitCodes);
    }
}
