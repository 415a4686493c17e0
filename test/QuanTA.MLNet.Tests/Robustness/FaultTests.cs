using System.Security.Cryptography;
using System.Text.Json.Nodes;
using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.PyBridge;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary>
/// The fault matrix of issue 9: each fault ends in a clear exception, and nothing already saved (earlier checkpoints, the
/// base model) is lost or altered.
/// </summary>
public class FaultTests
{
    /// <summary>A full 12-step Fit with a checkpoint every 2 steps (all kept).</summary>
    static string CheckpointedRun()
    {
        var dir = RobustFit.TempDir();
        var o = RobustFit.Options(false, dir);
        o.CheckpointEverySteps = 2;
        using var m = RobustFit.Fit(o);
        return dir;
    }

    static Dictionary<string, byte[]> Snapshot(string dir, params string[] except) =>
        Checkpoints.List(dir).Where(c => !except.Contains(Path.GetFileName(c)))
            .SelectMany(c => Directory.GetFiles(c)).ToDictionary(f => f, File.ReadAllBytes);

    static void AssertUnchanged(Dictionary<string, byte[]> before)
    {
        foreach (var (f, bytes) in before)
            Assert.True(File.Exists(f) && bytes.AsSpan().SequenceEqual(File.ReadAllBytes(f)), $"{f} was lost or changed");
    }

    [Fact]
    public void CorruptCheckpointIsDetectedAndLatestFallsBackToTheNewestValidOne()
    {
        var dir = CheckpointedRun();
        try
        {
            var last = Path.Combine(dir, Checkpoints.FolderName(12));
            var adapter = Path.Combine(last, Checkpoints.AdapterFile);
            var bytes = File.ReadAllBytes(adapter);
            bytes[bytes.Length / 2] ^= 0x5A;                       // one flipped bit pattern in the tensor data
            File.WriteAllBytes(adapter, bytes);
            var others = Snapshot(dir, Checkpoints.FolderName(12));

            var o = RobustFit.Options(false, dir);
            o.ResumeFromCheckpoint = last;
            var e = Assert.Throws<CheckpointCorruptException>(() => RobustFit.Fit(o));
            Assert.Contains("adapter.safetensors does not match its recorded SHA-256", e.Message);
            AssertUnchanged(others);

            // "latest" skips the corrupt checkpoint-12, resumes from checkpoint-10 and re-trains steps 11–12 to the same result.
            o = RobustFit.Options(false, dir);
            o.ResumeFromCheckpoint = "latest";
            using var resumed = RobustFit.Fit(o);
            Assert.True(RobustFit.Reference(false).Adapter.AsSpan().SequenceEqual(RobustFit.AdapterBytes(resumed)));
            Checkpoints.Verify(last);                              // re-saved, valid again
            AssertUnchanged(others);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void WrongDTypeInACheckpointTensorIsRefusedBeforeAnythingIsLoaded()
    {
        var dir = CheckpointedRun();
        try
        {
            var ckpt = Path.Combine(dir, Checkpoints.FolderName(6));
            var adapter = Path.Combine(ckpt, Checkpoints.AdapterFile);
            string changed;
            {
                var tensors = Safetensors.LoadStateDict(adapter);
                changed = tensors.Keys.First(k => tensors[k].dtype == torch.ScalarType.Float32);
                tensors[changed] = tensors[changed].to_type(torch.ScalarType.Float64);   // same values, wrong dtype
                Safetensors.SaveStateDict(adapter, tensors);
                foreach (var t in tensors.Values) t.Dispose();
            }
            // Re-sign the file so the hash check passes and the dtype check is what must catch it.
            var statePath = Path.Combine(ckpt, Checkpoints.StateFile);
            var state = JsonNode.Parse(File.ReadAllText(statePath))!;
            state["Sha256"]![Checkpoints.AdapterFile] = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(adapter)));
            File.WriteAllText(statePath, state.ToJsonString());
            var others = Snapshot(dir);

            var o = RobustFit.Options(false, dir);
            o.ResumeFromCheckpoint = ckpt;
            var e = Assert.Throws<CheckpointCorruptException>(() => RobustFit.Fit(o));
            Assert.Contains($"lacks '{changed}'", e.Message);
            Assert.Contains("Float32", e.Message);
            AssertUnchanged(others);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData(0.5)]      // tensor data cut off
    [InlineData(0.0)]      // only a few bytes: not even the header length
    public void TruncatedSafetensorsInTheBaseModelIsAClearError(double keep)
    {
        var copy = RobustFit.CopyFixture("llama-tiny-seqcls");
        try
        {
            var weights = Path.Combine(copy, "model.safetensors");
            var original = File.ReadAllBytes(weights);
            File.WriteAllBytes(weights, original[..Math.Max(5, (int)(original.Length * keep))]);
            var o = RobustFit.Options(false);
            o.BaseModelPath = copy;
            var e = Record.Exception(() => RobustFit.Fit(o));
            Assert.NotNull(e);
            Assert.True(e is IOException or InvalidDataException, $"{e.GetType().Name}: {e.Message}");
            Assert.True(e.Message.Contains("model.safetensors") && e.Message.Contains("truncated or corrupt"), $"{e.GetType().Name}: {e.Message}");
            Assert.True(original.AsSpan().SequenceEqual(File.ReadAllBytes(ToyData.Fixture("llama-tiny-seqcls/model.safetensors"))));
        }
        finally { Directory.Delete(copy, true); }
    }

    [Fact]
    public void DiskFullDuringACheckpointKeepsEarlierCheckpointsAndLeavesNoPartialFolder()
    {
        var dir = RobustFit.TempDir();
        try
        {
            int opened = 0;
            // The 3rd checkpoint's optimizer file hits a full disk after 100 bytes.
            Checkpoints.OpenWriteOverride = path =>
            {
                var fs = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
                return path.EndsWith(Checkpoints.OptimizerFile, StringComparison.Ordinal) && ++opened == 3 ? new FullDiskStream(fs, 100) : fs;
            };
            var o = RobustFit.Options(false, dir);
            o.CheckpointEverySteps = 1;
            IOException e;
            try { e = Assert.ThrowsAny<IOException>(() => RobustFit.Fit(o)); }
            finally { Checkpoints.OpenWriteOverride = null; }
            Assert.Contains($"Could not write checkpoint", e.Message);
            Assert.Contains("No space left on device", e.Message);
            Assert.Contains("earlier checkpoints are intact", e.Message);
            Assert.Equal([Checkpoints.FolderName(1), Checkpoints.FolderName(2)], Checkpoints.List(dir).Select(Path.GetFileName));
            foreach (var c in Checkpoints.List(dir)) Checkpoints.Verify(c);
            Assert.Empty(Directory.GetDirectories(dir, ".tmp-*"));

            // Once space is back, the run resumes from step 2 and ends where an uninterrupted run does.
            o = RobustFit.Options(false, dir);
            o.CheckpointEverySteps = 1; o.KeepLastCheckpoints = 2; o.ResumeFromCheckpoint = "latest";
            using var resumed = RobustFit.Fit(o);
            Assert.True(RobustFit.Reference(false).Adapter.AsSpan().SequenceEqual(RobustFit.AdapterBytes(resumed)));
            Assert.Equal(2, Checkpoints.List(dir).Count);          // keep-last-K pruning
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AbsurdLearningRateDivergesNamingTheStepAndKeepsTheLastGoodCheckpoint()
    {
        var dir = RobustFit.TempDir();
        try
        {
            var o = RobustFit.Options(false, dir);
            o.LearningRate = 1e30;
            o.CheckpointEverySteps = 1;
            var e = Assert.Throws<TrainingDivergedException>(() => RobustFit.Fit(o));
            Assert.InRange(e.Step, 2, RobustFit.TotalSteps);
            Assert.Contains($"diverged at optimizer step {e.Step}", e.Message);
            Assert.Contains("lower learning rate", e.Message);
            Assert.NotNull(e.LastGoodCheckpoint);
            Assert.Equal(e.Step - 1, Checkpoints.Verify(e.LastGoodCheckpoint!).Step);
            foreach (var c in Checkpoints.List(dir)) Checkpoints.Verify(c);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>A stream that fails like a full disk once <c>limit</c> bytes were written.</summary>
    sealed class FullDiskStream(Stream inner, long limit) : Stream
    {
        long _written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _written;
        public override long Position { get => _written; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (_written + buffer.Length > limit) throw new IOException("No space left on device");
            inner.Write(buffer);
            _written += buffer.Length;
        }
        protected override void Dispose(bool disposing) { if (disposing) inner.Dispose(); base.Dispose(disposing); }
    }
}
