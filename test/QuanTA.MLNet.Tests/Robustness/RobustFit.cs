using System.Collections.Concurrent;
using Microsoft.ML;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary>
/// Small, deterministic classification Fits on the tiny seq-cls fixture (24 rows, batch 4 → 6 steps per epoch, 2 epochs = 12
/// steps) for the checkpoint / resume / fault tests, and the result of an uninterrupted Fit per training path (computed once).
/// </summary>
internal static class RobustFit
{
    public const int StepsPerEpoch = 6, Epochs = 2, TotalSteps = StepsPerEpoch * Epochs;

    public static QuanTAFineTuneOptions Options(bool fused, string? checkpointDir = null) => new()
    {
        BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), AxisLayout = [8, 4, 4],
        Epochs = Epochs, BatchSize = 4, LearningRate = 3e-3, MaxSequenceLength = 32, Seed = 5,
        TrainingPath = fused ? QuanTA.Core.Training.QuanTATrainingPath.Stacked : QuanTA.Core.Training.QuanTATrainingPath.PerLayer,
        CheckpointDirectory = checkpointDir, KeepLastCheckpoints = 0,
    };

    public static IDataView Train(MLContext ml) => ToyData.View(ml, ToyData.Classification(24, 1));

    /// <summary>Fits MapValueToKey → QuanTA and returns the QuanTA transformer (the caller disposes it).</summary>
    public static QuanTAFineTuneTransformer Fit(QuanTAFineTuneOptions o, IDataView? train = null)
    {
        var ml = new MLContext(seed: 3);
        var chain = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(o))
            .Fit(train ?? Train(ml));
        return chain.LastTransformer;
    }

    /// <summary>Exported adapter (+ head) bytes: equal bytes = bitwise equal trained tensors.</summary>
    public static byte[] AdapterBytes(QuanTAFineTuneTransformer model)
    {
        var dir = TempDir();
        try
        {
            var path = Path.Combine(dir, "adapter.safetensors");
            model.ExportAdapter(path);
            var head = Path.ChangeExtension(path, ".head.safetensors");
            return [.. File.ReadAllBytes(path), .. File.Exists(head) ? File.ReadAllBytes(head) : []];
        }
        finally { Directory.Delete(dir, true); }
    }

    static readonly ConcurrentDictionary<bool, Lazy<(byte[] Adapter, double[] Losses)>> References = new();

    /// <summary>The adapter and per-step losses of one uninterrupted 12-step Fit without checkpoints.</summary>
    public static (byte[] Adapter, double[] Losses) Reference(bool fused) => References.GetOrAdd(fused, f => new(() =>
    {
        using var m = Fit(Options(f));
        return (AdapterBytes(m), m.TrainingLosses.ToArray());
    })).Value;

    /// <summary>Fit with a CancellationToken cancelled right after optimizer step <paramref name="cancelAfter"/>.</summary>
    public static OperationCanceledException FitCancelledAfter(QuanTAFineTuneOptions o, int cancelAfter)
    {
        using var cts = new CancellationTokenSource();
        o.CancellationToken = cts.Token;
        o.Progress = new SyncProgress(p => { if (p.Step >= cancelAfter && p.ValidationLoss is null) cts.Cancel(); });
        return Assert.ThrowsAny<OperationCanceledException>(() => { using var _ = Fit(o); });
    }

    public static string TempDir()
    {
        var d = Path.Combine(Path.GetTempPath(), "quanta-robust-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>A copy of a fixture model folder (to damage or alter).</summary>
    public static string CopyFixture(string name)
    {
        var dst = TempDir();
        foreach (var f in Directory.GetFiles(ToyData.Fixture(name))) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    public sealed class SyncProgress(Action<QuanTAProgress> report) : IProgress<QuanTAProgress>
    {
        public void Report(QuanTAProgress value) => report(value);
    }
}
