using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Training;

[Collection(TrainingCollection.Name)]
public class CheckpointTests
{
    // 10 micro-batches per epoch, accumulation 2 → 5 optimizer steps per epoch, 15 in all. Dropout and shuffling use the RNGs.
    static TrainerOptions Options(string dir) => new()
    {
        Epochs = 3, GradientAccumulationSteps = 2, LearningRate = 5e-3, Schedule = LearningRateSchedule.Cosine, WarmupRatio = 0.1,
        WeightDecay = 0.01, Seed = 1234, CheckpointDir = dir, KeepLastCheckpoints = 2, LogEveryNSteps = 1,
    };

    /// <summary>Trains the toy net (frozen base from seed 11, trainable tensors from <paramref name="initSeed"/>).</summary>
    static (byte[][] bytes, TrainingResult result) Run(TrainerOptions options, long initSeed, int cancelAtCall = -1, bool validate = false)
    {
        using var net = new ToyNet(seed: 11, dropout: 0.2, trainableSeed: initSeed);
        var data = ToyData.Batches(40, 4);
        var heldOut = ToyData.Batches(16, 8, seed: 8);
        var loss = ToyData.MseLoss(net);
        using var cts = new CancellationTokenSource();
        var calls = 0;
        using var trainer = Trainer<ToyBatch>.ForModule(net, options);
        var result = trainer.Train(BatchSource.FromList(data, shuffle: true, seed: options.Seed), b =>
        {
            if (++calls == cancelAtCall) cts.Cancel();
            return loss(b);
        }, validate ? () => ToyData.MeanLoss(net, heldOut) : null, cancellationToken: cts.Token);
        return (net.TrainableBytes(), result);
    }

    [Theory]
    [InlineData(4)]    // cancelled on the last micro-batch of step 2: step 2 completes, saved there (epoch 0, batch 4)
    [InlineData(13)]   // cancelled inside step 7 (epoch 1): its micro-batch is redone after resume
    [InlineData(21)]   // cancelled at the start of epoch 2: resumes from the end-of-epoch checkpoint
    public void StoppedAndResumedRunEndsBitwiseEqualToAnUninterruptedOne(int cancelAtCall)
    {
        using var dirA = new TempDir();
        using var dirB = new TempDir();
        var (expected, full) = Run(Options(dirA.Path), initSeed: 11);

        Assert.Throws<OperationCanceledException>(() => Run(Options(dirB.Path), initSeed: 11, cancelAtCall));
        var resume = Options(dirB.Path);
        resume.ResumeFrom = dirB.Path;                           // root folder: newest valid checkpoint
        var (actual, resumed) = Run(resume, initSeed: 99);       // other trainable initial values: all must come from the checkpoint

        Assert.Equal(15, resumed.Steps);
        Assert.Equal(full.History.Steps.Select(s => (s.Step, s.Loss, s.LearningRate)), resumed.History.Steps.Select(s => (s.Step, s.Loss, s.LearningRate)));
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void RepeatedlyCancelledAtRandomStepsAndResumedWithValidationStillBitwiseEqual()
    {
        using var dirA = new TempDir();
        using var dirB = new TempDir();
        var o = Options(dirA.Path);
        o.ValidateEverySteps = 3;                                // best tracking + best checkpoint kept through pruning
        var (expected, full) = Run(o, initSeed: 21, validate: true);
        Assert.Equal(5, full.History.Validations.Count);
        Assert.Equal(full.BestStep, Checkpoints.Verify(full.BestCheckpoint!).Step);   // kept although older than the last 2
        Assert.Equal(3, Checkpoints.List(dirA.Path).Count);

        var rng = new Random(2024);
        var segment = Options(dirB.Path);
        segment.ValidateEverySteps = 3;
        var segments = 0;
        for (var initSeed = 21; ; initSeed += 100, segments++)
        {
            try
            {
                var (actual, result) = Run(segment, initSeed, cancelAtCall: rng.Next(1, 9), validate: true);
                Assert.True(segments >= 2, "expected at least two cancellations before the end");
                Assert.Equal(full.History.Validations, result.History.Validations);
                Assert.Equal((full.BestMetric, full.BestStep), (result.BestMetric, result.BestStep));
                Assert.Equal(expected, actual);
                break;
            }
            catch (OperationCanceledException) { segment.ResumeFrom = dirB.Path; }
        }
    }

    [Fact]
    public void KeepsOnlyTheLastKCheckpointsAndNoTemporaryFolders()
    {
        using var dir = new TempDir();
        var o = Options(dir.Path);
        o.CheckpointEverySteps = 1;
        o.KeepLastCheckpoints = 3;
        Run(o, initSeed: 3);
        Assert.Equal(new[] { "checkpoint-000013", "checkpoint-000014", "checkpoint-000015" }, Checkpoints.List(dir.Path).Select(Path.GetFileName));
        Assert.Equal(3, Directory.GetDirectories(dir.Path).Length);
        foreach (var c in Checkpoints.List(dir.Path)) Checkpoints.Verify(c);
    }

    [Fact]
    public void AStepMovedAsideByAKilledReSaveIsStillListedAndLeftoversAreCleaned()
    {
        using var dir = new TempDir();
        var o = Options(dir.Path);
        o.CheckpointEverySteps = 5;
        o.KeepLastCheckpoints = 0;
        Run(o, initSeed: 3);
        var (ten, fifteen) = (Path.Combine(dir.Path, Checkpoints.FolderName(10)), Path.Combine(dir.Path, Checkpoints.FolderName(15)));
        // What a SIGKILL between the two renames of a re-save leaves: step 15 only under its moved-aside name …
        var aside15 = fifteen + ".old-0badc0de";
        Directory.Move(fifteen, aside15);
        // … or (killed after the second rename) a moved-aside copy next to the new folder, and a temporary folder.
        var aside10 = ten + ".old-0badc0de";
        Directory.CreateDirectory(aside10);
        foreach (var f in Directory.GetFiles(ten)) File.Copy(f, Path.Combine(aside10, Path.GetFileName(f)));
        var tmp = Directory.CreateDirectory(Path.Combine(dir.Path, ".tmp-checkpoint-20-0badc0de")).FullName;

        Assert.Equal(new[] { Checkpoints.FolderName(5), Path.GetFileName(ten), Path.GetFileName(aside15) }, Checkpoints.List(dir.Path).Select(Path.GetFileName));
        Assert.Equal(aside15, Checkpoints.FindLatestValid(dir.Path));
        Assert.Equal(15, Checkpoints.Verify(aside15).Step);

        Checkpoints.CleanTemporary(dir.Path);
        Assert.False(Directory.Exists(aside10));                 // superseded by checkpoint-10
        Assert.False(Directory.Exists(tmp));
        Assert.True(Directory.Exists(aside15));                  // the only copy of step 15 stays

        Checkpoints.Prune(dir.Path, keepLast: 1, keep: null);
        Assert.Equal(new[] { aside15 }, Checkpoints.List(dir.Path));
        Assert.Single(Directory.GetDirectories(dir.Path));       // pruned folders are gone, not left as temporary ones
    }

    [Fact]
    public void TruncatedCheckpointIsAClearErrorAndThePreviousOneStillResumes()
    {
        using var dir = new TempDir();
        var o = Options(dir.Path);
        o.CheckpointEverySteps = 2;
        o.KeepLastCheckpoints = 0;
        Run(o, initSeed: 5);
        var all = Checkpoints.List(dir.Path);
        var newest = all[^1];
        var adapter = Path.Combine(newest, Checkpoints.AdapterFile);
        var bytes = File.ReadAllBytes(adapter);
        File.WriteAllBytes(adapter, bytes[..(bytes.Length / 2)]);

        var e = Assert.Throws<CheckpointCorruptException>(() => Checkpoints.Verify(newest));
        Assert.Contains(Checkpoints.AdapterFile, e.Message);
        Assert.Contains("SHA-256", e.Message);

        var explicitResume = Options(dir.Path);
        explicitResume.ResumeFrom = newest;
        Assert.Throws<CheckpointCorruptException>(() => Run(explicitResume, initSeed: 5));

        Assert.Equal(all[^2], Checkpoints.FindLatestValid(dir.Path));
        var fallback = Options(dir.Path);
        fallback.ResumeFrom = dir.Path;
        fallback.KeepLastCheckpoints = 0;
        var (_, result) = Run(fallback, initSeed: 5);
        Assert.Equal(15, result.Steps);
        Assert.Equal(15, Checkpoints.Verify(newest).Step);       // the corrupt one was replaced by a good one

        File.WriteAllText(Path.Combine(all[0], Checkpoints.StateFile), "{ not json");
        Assert.Contains("not valid JSON", Assert.Throws<CheckpointCorruptException>(() => Checkpoints.Verify(all[0])).Message);
    }

    [Fact]
    public void AFailingDiskLeavesEarlierCheckpointsIntact()
    {
        using var dir = new TempDir();
        var o = Options(dir.Path);
        o.CheckpointEverySteps = 2;
        var saves = 0;
        Checkpoints.OpenWriteOverride = path =>
        {
            if (path.EndsWith(Checkpoints.OptimizerFile) && ++saves == 2) return new FailingStream();
            return new FileStream(path, FileMode.CreateNew);
        };
        try
        {
            var e = Assert.Throws<IOException>(() => Run(o, initSeed: 6));
            Assert.Contains("earlier checkpoints are intact", e.Message);
        }
        finally { Checkpoints.OpenWriteOverride = null; }

        var only = Assert.Single(Directory.GetDirectories(dir.Path));   // no temporary folder left behind
        Assert.Equal(2, Checkpoints.Verify(only).Step);
    }

    [Fact]
    public void ResumingWithAnotherModelOrRunIsDetected()
    {
        using var dir = new TempDir();
        var o = Options(dir.Path);
        o.RunFingerprint = "base=abc;quanta=[4,2]";
        o.MaxSteps = 3;
        Run(o, initSeed: 7);

        var otherRun = Options(dir.Path);
        otherRun.RunFingerprint = "base=def;quanta=[4,2]";
        otherRun.ResumeFrom = dir.Path;
        Assert.Contains("fingerprint", Assert.Throws<InvalidOperationException>(() => Run(otherRun, initSeed: 7)).Message);

        var same = Options(dir.Path);
        same.RunFingerprint = o.RunFingerprint;
        same.ResumeFrom = dir.Path;
        using var other = new Parameter(zeros(3, 3));
        using var trainer = new Trainer<ToyBatch>(new[] { ("fc1.toy.lora_A", other) }, same);
        var e = Assert.Throws<InvalidOperationException>(() => trainer.Train(BatchSource.FromList(ToyData.Batches(40, 4)), _ => default));
        Assert.Contains("other trainable parameters", e.Message);
    }

    sealed class FailingStream : MemoryStream
    {
        public override void Write(byte[] buffer, int offset, int count) => throw new IOException("No space left on device (simulated)");
        public override void Write(ReadOnlySpan<byte> buffer) => throw new IOException("No space left on device (simulated)");
    }
}
