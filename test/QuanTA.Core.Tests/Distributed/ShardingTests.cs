using QuanTA.Core.Distributed;
using QuanTA.Core.Runtime;

namespace QuanTA.Core.Tests.Distributed;

public class ShardingTests
{
    [Theory]
    [InlineData(12, 2, null)]
    [InlineData(12, 3, 7)]
    [InlineData(1000, 8, 42)]
    public void ShardsAreDisjointAndCoverEveryRowWhenDivisible(int rows, int world, int? seed)
    {
        var shards = Enumerable.Range(0, world).Select(r => new ShardedBatches(rows, r, world, seed).Rows).ToArray();
        var all = shards.SelectMany(s => s).ToArray();
        Assert.Equal(rows, all.Length);
        Assert.Equal(Enumerable.Range(0, rows), all.Order());
        Assert.All(shards, s => Assert.Equal(rows / world, s.Count));
    }

    [Fact]
    public void StridingTakesRowsRPlusKW()
    {
        Assert.Equal(new[] { 1, 4, 7, 10 }, new ShardedBatches(12, 1, 3).Rows);
        // batch b of every rank together = global batch b of size W·B
        var global = new ShardedBatches(24, 0, 1, shuffleSeed: 5).Batches(6).ToList();
        var perRank = Enumerable.Range(0, 2).Select(r => new ShardedBatches(24, r, 2, shuffleSeed: 5).Batches(3).ToList()).ToArray();
        for (int b = 0; b < global.Count; b++)
            Assert.Equal(global[b].Order(), perRank[0][b].Concat(perRank[1][b]).Order());
    }

    [Fact]
    public void SameOrderEveryEpochForASeedAndDifferentForAnother()
    {
        Assert.Equal(new ShardedBatches(100, 1, 4, 3).Rows, new ShardedBatches(100, 1, 4, 3).Rows);
        Assert.NotEqual(new ShardedBatches(100, 1, 4, 3).Rows, new ShardedBatches(100, 1, 4, 4).Rows);
        Assert.NotEqual(Enumerable.Range(0, 100), ShardedBatches.GlobalOrder(100, 3));
    }

    [Fact]
    public void UnevenRowsAreDroppedOrPadded()
    {
        var drop = Enumerable.Range(0, 3).Select(r => new ShardedBatches(11, r, 3).Rows).ToArray();
        Assert.All(drop, s => Assert.Equal(3, s.Count));
        Assert.Equal(9, drop.SelectMany(s => s).Distinct().Count());        // disjoint, 2 left out

        var pad = Enumerable.Range(0, 3).Select(r => new ShardedBatches(11, r, 3, uneven: UnevenRows.Pad).Rows).ToArray();
        Assert.All(pad, s => Assert.Equal(4, s.Count));
        Assert.Equal(Enumerable.Range(0, 11), pad.SelectMany(s => s).Distinct().Order()); // every row seen, 1 repeated
    }

    [Fact]
    public void BadShardArgumentsAreClearErrors()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ShardedBatches(10, 2, 2));
        Assert.Contains("fewer than the 4 ranks", Assert.Throws<ArgumentException>(() => new ShardedBatches(3, 0, 4)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ShardedBatches(10, 0, 2).Batches(0).ToList());
    }

    [Fact]
    public void OnlyRankZeroWritesAndOthersWaitForIt()
    {
        TorchRuntime.Initialize();
        var dir = Directory.CreateTempSubdirectory("quanta-rank0-");
        try
        {
            var path = Path.Combine(dir.FullName, "checkpoint.txt");
            int calls = 0;
            var comms = InProcessCommunicator.CreateGroup(3, TimeSpan.FromSeconds(20));
            var seen = Ranks.RunOk(3, r =>
            {
                using var c = comms[r];
                RankZero.Run(c, () => { Interlocked.Increment(ref calls); Thread.Sleep(200); File.WriteAllText(path, $"written by rank {c.Rank}"); }, "saving the checkpoint");
                return File.Exists(path) ? File.ReadAllText(path) : "missing";   // every rank returns after the write
            });
            Assert.Equal(1, calls);
            Assert.All(seen, s => Assert.Equal("written by rank 0", s));
            Assert.Single(Directory.GetFiles(dir.FullName));
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void FailedWriteOnRankZeroFailsEveryRank()
    {
        TorchRuntime.Initialize();
        var comms = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(20));
        var results = Ranks.Run(2, r =>
        {
            using var c = comms[r];
            RankZero.Run(c, () => throw new IOException("disk full"), "saving the checkpoint");
            return 0;
        });
        Assert.Equal("disk full", Assert.IsType<IOException>(results[0].Error).Message);
        Assert.Contains("rank 0 failed while saving the checkpoint", Assert.IsType<InvalidOperationException>(results[1].Error).Message);
    }
}
