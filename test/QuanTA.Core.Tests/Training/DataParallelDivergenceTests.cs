using QuanTA.Core.Distributed;
using QuanTA.Core.Training;

namespace QuanTA.Core.Tests.Training;

/// <summary>Data-parallel Trainer runs (in-process communicator, a thread per rank) log the loss reduced over ranks, and a
/// non-finite loss on ONE rank stops EVERY rank at the same step with the last good (identical) parameters kept.</summary>
public class DataParallelDivergenceTests
{
    sealed record RankOutcome(TrainingDivergedException? Error, byte[][]? BeforeFailure, byte[][] After, IReadOnlyList<double> Losses);

    static RankOutcome Run(ToyNet net, ICommunicator comm, int nanAtCall)
    {
        var data = ToyData.Batches(32, 4, seed: 11 + comm.Rank);                   // each rank its own shard
        var loss = ToyData.MseLoss(net);
        using var trainer = Trainer<ToyBatch>.ForModule(net, new TrainerOptions { Epochs = 1, LearningRate = 1e-2, LogEveryNSteps = 1000 });
        using var sync = new DistributedGradientSync(trainer.Parameters.Select(p => p.parameter), comm);
        trainer.BeforeOptimizerStep = sync.Synchronize;
        trainer.ReduceStepStatistics = comm.MeanAndSum;
        sync.BroadcastParameters();                                                // every rank starts from rank 0's adapter
        byte[][]? before = null;
        int calls = 0;
        TrainingDivergedException? error = null;
        try
        {
            trainer.Train(BatchSource.FromList(data), b =>
            {
                if (++calls == 3) before = net.TrainableBytes();
                var r = loss(b);
                return calls == nanAtCall ? r with { Loss = r.Loss * double.NaN } : r;
            });
        }
        catch (TrainingDivergedException e) { error = e; }
        return new RankOutcome(error, before, net.TrainableBytes(), trainer.History.Steps.Select(s => s.Loss).ToList());
    }

    static RankOutcome[] RunRanks(Func<int, int> nanAtCall)
    {
        var group = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(60));
        var nets = Enumerable.Range(0, 2).Select(r => new ToyNet(seed: 4)).ToArray();   // made here: the global RNG is not thread-safe
        var results = new RankOutcome[2];
        var threads = Enumerable.Range(0, 2).Select(r => new Thread(() => results[r] = Run(nets[r], group[r], nanAtCall(r)))).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        foreach (var c in group) c.Dispose();
        foreach (var n in nets) n.Dispose();
        return results;
    }

    [Fact]
    public void EveryRankLogsTheSameReducedLoss()
    {
        var r = RunRanks(_ => -1);
        Assert.All(r, x => Assert.Null(x.Error));
        Assert.Equal(8, r[0].Losses.Count);
        Assert.Equal(r[0].Losses, r[1].Losses);                                    // the mean over ranks, on both
        Assert.Equal(r[0].After, r[1].After);                                      // and the same adapter
    }

    [Fact]
    public void ANonFiniteLossOnOneRankStopsBothAtTheSameStepWithTheLastGoodParameters()
    {
        var r = RunRanks(rank => rank == 1 ? 3 : -1);                              // only rank 1 sees a NaN, at step 3
        foreach (var x in r)
        {
            Assert.NotNull(x.Error);
            Assert.Equal(3, x.Error!.Step);
            Assert.Equal(x.BeforeFailure, x.After);                                // step 3 was not applied
        }
        Assert.Equal(r[0].After, r[1].After);
        Assert.Equal(2, r[0].Losses.Count);
    }
}
