using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Distributed;

namespace QuanTA.MLNet.Tests;

/// <summary>Data-parallel Fit: 2 ranks × batch B (in-process communicator, one thread per rank) train the same adapter as one
/// process with batch 2B; each rank sees only its shard.</summary>
public class DataParallelFitTests
{
    static QuanTAFineTuneOptions Options(int batch, ICommunicator? comm) => new()
    {
        BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), AxisLayout = [8, 4, 4],
        Epochs = 2, BatchSize = batch, LearningRate = 3e-3, MaxSequenceLength = 32, Seed = 7, Communicator = comm,
    };

    static List<float[]> FitAndScore(QuanTAFineTuneOptions o, out IReadOnlyList<double> losses)
    {
        var ml = new MLContext(seed: 7);
        var train = ToyData.View(ml, ToyData.Classification(24, 1));
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(o)).Fit(train);
        losses = model.LastTransformer.TrainingLosses;
        var scores = model.Transform(ToyData.View(ml, ToyData.Classification(8, 2))).GetColumn<float[]>("Score").ToList();
        model.LastTransformer.Dispose();
        return scores;
    }

    [Fact]
    public void TwoRanksWithBatchBEqualOneProcessWithBatch2B()
    {
        var single = FitAndScore(Options(8, null), out var singleLosses);

        var group = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(120));
        var results = new List<float[]>[2];
        var losses = new IReadOnlyList<double>[2];
        var threads = Enumerable.Range(0, 2).Select(r => new Thread(() => results[r] = FitAndScore(Options(4, group[r]), out losses[r]))).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();

        Assert.Equal(singleLosses.Count, losses[0].Count);                       // same number of optimizer steps (3 per epoch)
        Assert.Equal(losses[0], losses[1]);                                      // every rank logs the loss reduced over ranks …
        for (int s = 0; s < singleLosses.Count; s++)                             // … which is the loss of the whole batch
            Assert.True(Math.Abs(losses[0][s] - singleLosses[s]) < 1e-4, $"step {s}: {losses[0][s]} vs {singleLosses[s]}");
        for (int row = 0; row < single.Count; row++)
            for (int c = 0; c < single[row].Length; c++)
            {
                Assert.Equal(results[0][row][c], results[1][row][c]);              // the ranks end with the same adapter
                Assert.True(Math.Abs(results[0][row][c] - single[row][c]) < 1e-4, $"row {row} class {c}");
            }
        foreach (var c in group) c.Dispose();
    }

    static (List<float[]> Scores, IReadOnlyList<double> Losses)[] FitRanks(Func<QuanTAFineTuneOptions, QuanTAFineTuneOptions> edit)
    {
        var group = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(120));
        var results = new (List<float[]>, IReadOnlyList<double>)[2];
        var threads = Enumerable.Range(0, 2).Select(r => new Thread(() =>
        {
            var scores = FitAndScore(edit(Options(4, group[r])), out var losses);
            results[r] = (scores, losses);
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        foreach (var c in group) c.Dispose();
        return results;
    }

    [Fact]
    public void ADataParallelRunResumesFromACheckpointWithTheSameWorldSizeOnly()
    {
        var dir = Directory.CreateTempSubdirectory("quanta-ddp-resume").FullName;
        try
        {
            QuanTAFineTuneOptions WithCheckpoints(QuanTAFineTuneOptions o)
            {
                o.CheckpointDirectory = dir; o.CheckpointEverySteps = 1; o.KeepLastCheckpoints = 0;
                return o;
            }
            var full = FitRanks(WithCheckpoints);                                 // 6 steps; rank 0 writes checkpoint-1 … -6
            var atStep3 = Path.Combine(dir, QuanTA.Core.Training.Checkpoints.FolderName(3));
            Assert.True(Directory.Exists(atStep3));

            var resumed = FitRanks(o => { o.ResumeFromCheckpoint = atStep3; return o; });   // both ranks read rank 0's checkpoint
            for (int r = 0; r < 2; r++)
            {
                Assert.Equal(full[r].Losses.Skip(3), resumed[r].Losses.Skip(3));     // the remaining steps are the same steps
                for (int row = 0; row < full[r].Scores.Count; row++)
                    Assert.Equal(full[r].Scores[row], resumed[r].Scores[row]);
            }

            var single = Options(8, null);
            single.ResumeFromCheckpoint = atStep3;
            var e = Assert.ThrowsAny<Exception>(() => FitAndScore(single, out _));
            var message = (e.InnerException ?? e).Message;
            Assert.Contains("2 data-parallel ranks", message);
            Assert.Contains("1 process", message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
