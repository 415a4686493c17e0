using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Tests;

/// <summary>Fit with the fused QuanTA path (all layers' ΔW per step, stacked trainable tensors — the GPU default) trains the
/// same model as the per-layer path: same per-step losses and the same predictions, and it saves/loads like any other.</summary>
public class FusedQuanTATests
{
    static (IReadOnlyList<double> Losses, List<float[]> Scores, QuanTAFineTuneTransformer Model) Fit(bool fused, FusedQuanTAMemory memory = FusedQuanTAMemory.Auto)
    {
        var ml = new MLContext(seed: 3);
        var train = ToyData.View(ml, ToyData.Classification(24, 1));
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(new QuanTAFineTuneOptions
            {
                BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), AxisLayout = [8, 4, 4],
                Epochs = 2, BatchSize = 4, GradientAccumulationSteps = 2, LearningRate = 3e-3, MaxSequenceLength = 32,
                FusedQuanTA = fused, FusedQuanTAMemory = memory,
            }))
            .Fit(train);
        var scores = model.Transform(ToyData.View(ml, ToyData.Classification(8, 2))).GetColumn<float[]>("Score").ToList();
        return (model.LastTransformer.TrainingLosses, scores, model.LastTransformer);
    }

    [Theory]
    [InlineData(FusedQuanTAMemory.Auto)]   // on the CPU: the fast (stacked) path
    [InlineData(FusedQuanTAMemory.Lean)]   // layerwise: W0 + ΔW rebuilt in each layer's backward
    [InlineData(FusedQuanTAMemory.Minimal)]   // layerwise, the frozen chain rebuilt too
    public void FusedAndPerLayerTrainingAgree(FusedQuanTAMemory memory)
    {
        var plain = Fit(false);
        var fused = Fit(true, memory);
        using var d1 = plain.Model; using var d2 = fused.Model;
        Assert.Equal(plain.Losses.Count, fused.Losses.Count);
        for (int i = 0; i < plain.Losses.Count; i++) Assert.True(Math.Abs(plain.Losses[i] - fused.Losses[i]) < 1e-3 * Math.Max(1, Math.Abs(plain.Losses[i])), $"step {i}: {plain.Losses[i]} vs {fused.Losses[i]}");
        Assert.True(fused.Losses[^1] < fused.Losses[0], "fused training should lower the loss");
        for (int r = 0; r < plain.Scores.Count; r++)
            for (int c = 0; c < plain.Scores[r].Length; c++)
                Assert.True(Math.Abs(plain.Scores[r][c] - fused.Scores[r][c]) < 2e-3, $"row {r} class {c}: {plain.Scores[r][c]} vs {fused.Scores[r][c]}");
    }
}

/// <summary>The Auto memory rule on the calibrated sizes (<see cref="QuanTA.Core.Adapters.QuanTABank.EstimatedStackedExtraBytes"/>).</summary>
public class FusedQuanTAMemoryRuleTests
{
    const long GB = 1_000_000_000;

    [Theory]
    [InlineData(10.7, 64.0, false)]   // LLaMA-7B q,v (64 layers of 4096², bf16) on an 80 GB GPU: the fast path fits
    [InlineData(10.7, 26.0, false)]   // the same on a 40 GB GPU (≈ 26 GB free after the weights): fast still fits (peak ≈ 33.7 GB)
    [InlineData(10.7, 18.0, true)]    // the same with less free memory: lean
    [InlineData(1.1, 20.0, false)]    // TinyLlama q,v on a 24 GB GPU: fast
    public void AutoPicksLeanOnlyWhenTheFastPathWouldCrowdTheGpu(double extraGb, double freeGb, bool lean)
        => Assert.Equal(lean, QuanTA.MLNet.Engine.FineTuneRunner.PreferLean((long)(extraGb * GB), (long)(freeGb * GB)));

    [Fact]
    public void UnknownFreeMemoryKeepsTheFastPath() => Assert.False(QuanTA.MLNet.Engine.FineTuneRunner.PreferLean(100 * GB, null));
}
