using QuanTA.Core.Training;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary>
/// A Fit stopped by cancellation and resumed from its checkpoint ends with exactly the adapter (bitwise, CPU, fixed seed) and
/// the per-step loss history of an uninterrupted Fit — on the per-layer path and on the fused QuanTABank path
/// (stacked <c>quanta_bank.*</c> tensors in the checkpoint). A resume against another base model, adapter, path or seed is refused.
/// </summary>
public class ResumeTests
{
    [Theory]
    [InlineData(false, 4)]
    [InlineData(true, 4)]
    [InlineData(false, RobustFit.StepsPerEpoch)]   // cancelled at an epoch boundary
    public void CancelledThenResumedFitEqualsUninterruptedFit(bool fused, int cancelAfter)
    {
        var dir = RobustFit.TempDir();
        try
        {
            var cancelled = RobustFit.FitCancelledAfter(RobustFit.Options(fused, dir), cancelAfter);
            Assert.Contains($"after step {cancelAfter} of {RobustFit.TotalSteps}", cancelled.Message);
            Assert.Contains("resume from", cancelled.Message);
            var saved = Checkpoints.List(dir);
            Assert.Equal(Checkpoints.FolderName(cancelAfter), Path.GetFileName(saved[^1]));
            Assert.Equal(cancelAfter, Checkpoints.Verify(saved[^1]).Step);
            if (fused) Assert.Contains(Checkpoints.Verify(saved[^1]).Parameters, p => p.Name.StartsWith("quanta_bank.", StringComparison.Ordinal));

            var o = RobustFit.Options(fused, dir);
            o.ResumeFromCheckpoint = "latest";
            using var resumed = RobustFit.Fit(o);
            var reference = RobustFit.Reference(fused);
            Assert.Equal(reference.Losses, resumed.TrainingLosses.ToArray());
            Assert.True(reference.Adapter.AsSpan().SequenceEqual(RobustFit.AdapterBytes(resumed)), "resumed adapter differs from the uninterrupted one");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AStackedPathCheckpointResumesOnTheLayerwisePath()
    {
        // What the out-of-memory error suggests: resume the same run with TrainingPath = Layerwise. Same parameters, same math:
        // the resumed run ends where the uninterrupted stacked run ends (to float tolerance; the two paths round differently).
        var dir = RobustFit.TempDir();
        try
        {
            RobustFit.FitCancelledAfter(RobustFit.Options(fused: true, dir), 4);
            var o = RobustFit.Options(fused: true, dir);
            o.TrainingPath = QuanTA.Core.Training.QuanTATrainingPath.Layerwise;
            o.ResumeFromCheckpoint = "latest";
            using var resumed = RobustFit.Fit(o);
            var reference = RobustFit.Reference(fused: true).Losses;
            var losses = resumed.TrainingLosses.ToArray();
            Assert.Equal(reference.Length, losses.Length);
            Assert.Equal(reference[..4], losses[..4]);                                   // the restored history, bit for bit
            for (int i = 4; i < losses.Length; i++)
                Assert.True(Math.Abs(losses[i] - reference[i]) < 1e-4 * Math.Max(1, Math.Abs(reference[i])), $"step {i + 1}: {losses[i]} vs {reference[i]}");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void CancelAtRandomStepsAlwaysLeavesAResumableCheckpoint()
    {
        var rand = new Random(2024);
        var dir = RobustFit.TempDir();
        try
        {
            // Two cancellations in a row, each resumed, then a final resume to the end.
            int first = rand.Next(1, 6), second = rand.Next(first + 1, RobustFit.TotalSteps);
            RobustFit.FitCancelledAfter(RobustFit.Options(false, dir), first);
            var o = RobustFit.Options(false, dir);
            o.ResumeFromCheckpoint = "latest";
            var e = RobustFit.FitCancelledAfter(o, second);
            Assert.Contains($"after step {second} of", e.Message);
            foreach (var c in Checkpoints.List(dir)) Checkpoints.Verify(c);   // nothing saved was lost or damaged
            Assert.Contains(Checkpoints.FolderName(first), Checkpoints.List(dir).Select(Path.GetFileName));
            o = RobustFit.Options(false, dir);
            o.ResumeFromCheckpoint = Path.Combine(dir, Checkpoints.FolderName(second));
            using var resumed = RobustFit.Fit(o);
            Assert.True(RobustFit.Reference(false).Adapter.AsSpan().SequenceEqual(RobustFit.AdapterBytes(resumed)),
                $"cancelled at {first} and {second}: the resumed adapter differs from the uninterrupted one");

            // Negative control: the comparison is sensitive — resuming the same checkpoint with another learning rate ends elsewhere.
            o = RobustFit.Options(false, dir);
            o.ResumeFromCheckpoint = Path.Combine(dir, Checkpoints.FolderName(second));
            o.LearningRate *= 0.5;
            using var other = RobustFit.Fit(o);
            Assert.False(RobustFit.Reference(false).Adapter.AsSpan().SequenceEqual(RobustFit.AdapterBytes(other)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ResumeWithAnotherBaseModelAdapterOrPathIsRefused()
    {
        var dir = RobustFit.TempDir();
        var otherBase = RobustFit.CopyFixture("llama-tiny-seqcls");
        try
        {
            var o = RobustFit.Options(false, dir);
            o.Epochs = 1;
            RobustFit.FitCancelledAfter(o, 2);
            var before = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllBytes);

            // Same weights, but the config differs: a different base-model fingerprint.
            File.AppendAllText(Path.Combine(otherBase, "config.json"), "\n");
            var b = RobustFit.Options(false, dir); b.Epochs = 1; b.BaseModelPath = otherBase; b.ResumeFromCheckpoint = "latest";
            var e = Assert.Throws<InvalidOperationException>(() => RobustFit.Fit(b));
            Assert.Contains("different base model", e.Message);

            var a = RobustFit.Options(false, dir); a.Epochs = 1; a.TargetModules = ["q_proj"]; a.ResumeFromCheckpoint = "latest";
            e = Assert.Throws<InvalidOperationException>(() => RobustFit.Fit(a));
            Assert.Contains("different adapter options", e.Message);
            Assert.Contains("targets=q_proj,v_proj", e.Message);

            var f = RobustFit.Options(true, dir); f.Epochs = 1; f.ResumeFromCheckpoint = "latest";
            e = Assert.Throws<InvalidOperationException>(() => RobustFit.Fit(f));
            Assert.Contains("TrainingPath = PerLayer (CLI: --training-path per-layer)", e.Message);

            var s = RobustFit.Options(false, dir); s.Epochs = 1; s.Seed = 6; s.ResumeFromCheckpoint = "latest";
            e = Assert.Throws<InvalidOperationException>(() => RobustFit.Fit(s));
            Assert.Contains("Seed = 5", e.Message);

            // Refusals changed nothing on disk.
            var after = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).ToDictionary(f => f, File.ReadAllBytes);
            Assert.Equal(before.Keys.Order(), after.Keys.Order());
            foreach (var (k, v) in before) Assert.True(v.AsSpan().SequenceEqual(after[k]), k);
        }
        finally { Directory.Delete(dir, true); Directory.Delete(otherBase, true); }
    }
}
