using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Adapters;
using QuanTA.Core.Training;

namespace QuanTA.MLNet.Tests;

/// <summary>Every QuanTA training path trains the same model: the fused ones (Stacked — the GPU default —, Layerwise,
/// LayerwiseUncached) give the per-layer path's per-step losses and predictions, and the path is decided and logged once per fit.</summary>
public class FusedQuanTATests
{
    static (IReadOnlyList<double> Losses, List<float[]> Scores, QuanTAFineTuneTransformer Model, List<string> Log) Fit(QuanTATrainingPath path, bool checkpoint = false)
    {
        var ml = new MLContext(seed: 3);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        var train = ToyData.View(ml, ToyData.Classification(24, 1));
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(new QuanTAFineTuneOptions
            {
                BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), AxisLayout = [8, 4, 4],
                Epochs = 2, BatchSize = 4, GradientAccumulationSteps = 2, LearningRate = 3e-3, MaxSequenceLength = 32,
                TrainingPath = path, GradientCheckpointing = checkpoint,
            }))
            .Fit(train);
        var scores = model.Transform(ToyData.View(ml, ToyData.Classification(8, 2))).GetColumn<float[]>("Score").ToList();
        return (model.LastTransformer.TrainingLosses, scores, model.LastTransformer, log);
    }

    [Theory]
    [InlineData(QuanTATrainingPath.Stacked)]             // one batched chain, W0 + ΔW kept per layer
    [InlineData(QuanTATrainingPath.StackedRecompute)]    // batched chain without a graph, re-run per chunk in the backward
    [InlineData(QuanTATrainingPath.Layerwise)]           // W0 + ΔW rebuilt in each layer's backward
    [InlineData(QuanTATrainingPath.LayerwiseUncached)]   // layerwise, the frozen chain rebuilt too
    public void FusedAndPerLayerTrainingAgree(QuanTATrainingPath path)
    {
        var plain = Fit(QuanTATrainingPath.PerLayer);
        var fused = Fit(path);
        using var d1 = plain.Model; using var d2 = fused.Model;
        Assert.Equal(plain.Losses.Count, fused.Losses.Count);
        for (int i = 0; i < plain.Losses.Count; i++) Assert.True(Math.Abs(plain.Losses[i] - fused.Losses[i]) < 1e-3 * Math.Max(1, Math.Abs(plain.Losses[i])), $"step {i}: {plain.Losses[i]} vs {fused.Losses[i]}");
        Assert.True(fused.Losses[^1] < fused.Losses[0], "fused training should lower the loss");
        for (int r = 0; r < plain.Scores.Count; r++)
            for (int c = 0; c < plain.Scores[r].Length; c++)
                Assert.True(Math.Abs(plain.Scores[r][c] - fused.Scores[r][c]) < 2e-3, $"row {r} class {c}: {plain.Scores[r][c]} vs {fused.Scores[r][c]}");
        var line = Assert.Single(fused.Log, m => m.Contains("QuanTA training path:"));   // decided and logged once per fit
        Assert.Contains($"QuanTA training path: {QuanTATrainingPaths.Name(path)} (as requested)", line);
    }

    [Theory]
    [InlineData(QuanTATrainingPath.PerLayer)]
    [InlineData(QuanTATrainingPath.Layerwise)]
    public void GradientCheckpointingTrainsTheSameModel(QuanTATrainingPath path)
    {
        var plain = Fit(path);
        var checkpointed = Fit(path, checkpoint: true);
        using var d1 = plain.Model; using var d2 = checkpointed.Model;
        Assert.Equal(plain.Losses.Count, checkpointed.Losses.Count);
        for (int i = 0; i < plain.Losses.Count; i++)
            Assert.True(Math.Abs(plain.Losses[i] - checkpointed.Losses[i]) < 1e-4 * Math.Max(1, Math.Abs(plain.Losses[i])), $"step {i}: {plain.Losses[i]} vs {checkpointed.Losses[i]}");
        Assert.Single(checkpointed.Log, m => m.Contains("Gradient checkpointing: 2 decoder layers"));
        Assert.DoesNotContain(plain.Log, m => m.Contains("Gradient checkpointing"));
    }

    [Fact]
    public void AutoOnTheCpuTakesThePerLayerPathAndSaysWhy()
    {
        var auto = Fit(QuanTATrainingPath.Auto);
        using var d = auto.Model;
        var line = Assert.Single(auto.Log, m => m.Contains("QuanTA training path:"));
        Assert.Contains("QuanTA training path: per-layer (Auto off the GPU", line);
    }
}

/// <summary>The Auto rule (<see cref="QuanTATrainingPaths.Resolve"/>) on the calibrated sizes
/// (<see cref="QuanTABank.EstimatedStackedExtraBytes"/>).</summary>
public class TrainingPathRuleTests
{
    const long GB = 1_000_000_000;

    [Theory]
    [InlineData(10.7, 2.8, 64.0, QuanTATrainingPath.Stacked)]            // LLaMA-7B q,v (64 layers of 4096², bf16) on an 80 GB GPU: stacked fits
    [InlineData(10.7, 2.8, 26.0, QuanTATrainingPath.Stacked)]            // the same on a 40 GB GPU (≈ 26 GB free after the weights): still fits
    [InlineData(10.7, 2.8, 18.0, QuanTATrainingPath.StackedRecompute)]   // the same with less free memory: stacked-recompute
    [InlineData(10.7, 2.8, 4.0, QuanTATrainingPath.Layerwise)]           // and with even less: layerwise
    [InlineData(1.1, 0.3, 20.0, QuanTATrainingPath.Stacked)]             // TinyLlama q,v on a 24 GB GPU
    public void AutoOnAGpuTakesTheFastestPathThatFits(double extraGb, double recomputeGb, double freeGb, QuanTATrainingPath expected)
    {
        var choice = QuanTATrainingPaths.Resolve(QuanTATrainingPath.Auto, onCuda: true, () => (long)(extraGb * GB), () => (long)(freeGb * GB),
            () => (long)(recomputeGb * GB));
        Assert.Equal(expected, choice.Path);
        Assert.Contains("MiB free", choice.Reason);
    }

    [Fact]
    public void UnknownFreeMemoryKeepsStacked()
        => Assert.Equal(QuanTATrainingPath.Stacked, QuanTATrainingPaths.Resolve(QuanTATrainingPath.Auto, true, () => 100 * GB, () => null,
            () => throw new InvalidOperationException("not needed")).Path);

    [Fact]
    public void AnExplicitPathIsKeptAndTheCpuNeverReadsGpuMemory()
    {
        static long NotNeeded() => throw new InvalidOperationException("not needed");
        foreach (var path in Enum.GetValues<QuanTATrainingPath>().Where(p => p != QuanTATrainingPath.Auto))
            Assert.Equal(path, QuanTATrainingPaths.Resolve(path, true, NotNeeded, () => NotNeeded(), NotNeeded).Path);
        var cpu = QuanTATrainingPaths.Resolve(QuanTATrainingPath.Auto, false, NotNeeded, () => NotNeeded(), NotNeeded);
        Assert.Equal(QuanTATrainingPath.PerLayer, cpu.Path);
    }

    [Fact]
    public void PathNamesAreTheCliSpellings()
        => Assert.Equal(["auto", "per-layer", "stacked", "stacked-recompute", "layerwise", "layerwise-uncached"],
            Enum.GetValues<QuanTATrainingPath>().Select(p => p == QuanTATrainingPath.Auto ? "auto" : QuanTATrainingPaths.Name(p)));
}
