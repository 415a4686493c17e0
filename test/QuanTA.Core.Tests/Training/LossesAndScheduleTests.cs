using QuanTA.Core.Runtime;
using QuanTA.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Training;

[Collection(TrainingCollection.Name)]
public class LossesAndScheduleTests
{
    public LossesAndScheduleTests() => TorchRuntime.Initialize();

    /// <summary>−log softmax(row)[label], computed with plain doubles (independent of libtorch).</summary>
    static double Nll(float[] logits, int offset, int vocab, long label)
    {
        var max = double.NegativeInfinity;
        for (var v = 0; v < vocab; v++) max = Math.Max(max, logits[offset + v]);
        var sum = 0.0;
        for (var v = 0; v < vocab; v++) sum += Math.Exp(logits[offset + v] - max);
        return -(logits[offset + label] - max - Math.Log(sum));
    }

    [Fact]
    public void CausalLMLossShiftsIgnoresMinus100AndAveragesOverTargetTokens()
    {
        const int B = 2, T = 5, V = 7;
        using var gen = new Generator(3);
        using var logits = randn(B, T, V, generator: gen) * 3;
        long[] labels = { -100, -100, 4, 1, 6,      // prompt of 2 tokens, 3 target tokens
                          -100, 2, 0, -100, -100 }; // 2 target tokens, then padding
        using var lab = tensor(labels).reshape(B, T);
        using var loss = Losses.CausalLM(logits, lab, out var n);

        var l = logits.data<float>().ToArray();
        double total = 0; var count = 0;
        for (var b = 0; b < B; b++)
            for (var t = 0; t < T - 1; t++)
            {
                var target = labels[b * T + t + 1];          // position t predicts token t+1
                if (target == -100) continue;
                total += Nll(l, (b * T + t) * V, V, target); count++;
            }
        Assert.Equal(5, count);                               // labels at t=0 are never targets: 3 + 2
        Assert.Equal(count, n);
        Assert.Equal(ScalarType.Float32, loss.dtype);
        Assert.Equal(total / count, loss.item<float>(), 5);
    }

    [Fact]
    public void CausalLMLossUpcastsBf16LogitsAndRejectsBadInput()
    {
        using var gen = new Generator(4);
        using var logits = randn(1, 4, 5, generator: gen);
        using var lab = tensor(new long[] { 1, 2, 3, 4 }).reshape(1, 4);
        using var ref32 = Losses.CausalLM(logits, lab, out _);
        using var bf = logits.to_type(ScalarType.BFloat16);
        using var lbf = Losses.CausalLM(bf, lab, out _);
        Assert.Equal(ScalarType.Float32, lbf.dtype);
        Assert.Equal(ref32.item<float>(), lbf.item<float>(), 1);

        using var none = tensor(new long[] { 1, -100, -100, -100 }).reshape(1, 4);
        Assert.Contains("no target token", Assert.Throws<ArgumentException>(() => Losses.CausalLM(logits, none, out _)).Message);
        using var outOfVocab = tensor(new long[] { 1, 2, 9, 4 }).reshape(1, 4);
        Assert.Contains("0..4", Assert.Throws<ArgumentException>(() => Losses.CausalLM(logits, outOfVocab, out _)).Message);
        using var wrongShape = tensor(new long[] { 1, 2, 3 }).reshape(1, 3);
        Assert.Throws<ArgumentException>(() => Losses.CausalLM(logits, wrongShape, out _));
        using var ints = tensor(new[] { 1, 2, 3, 4 }).reshape(1, 4);
        Assert.Contains("int64", Assert.Throws<ArgumentException>(() => Losses.CausalLM(logits, ints, out _)).Message);
    }

    [Fact]
    public void ClassificationCrossEntropyMatchesTheDefinition()
    {
        using var gen = new Generator(5);
        using var logits = randn(3, 4, generator: gen);
        long[] labels = { 2, 0, 3 };
        using var lab = tensor(labels);
        using var loss = Losses.Classification(logits, lab);
        var l = logits.data<float>().ToArray();
        var expected = Enumerable.Range(0, 3).Average(i => Nll(l, i * 4, 4, labels[i]));
        Assert.Equal(expected, loss.item<float>(), 5);
        using var bad = tensor(new long[] { 2, 0, 4 });
        Assert.Contains("0..3", Assert.Throws<ArgumentException>(() => Losses.Classification(logits, bad)).Message);
    }

    [Fact]
    public void PromptMaskedLabelsCoverOnlyTargetTokensWithLeftOrRightPadding()
    {
        // right padding: row 0 = [p p a a 0], row 1 = [p a a a a]; left padding: row 0 = [0 p p a a]
        using var ids = tensor(new long[] { 5, 6, 7, 8, 0, 5, 7, 8, 9, 3 }).reshape(2, 5);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 0, 1, 1, 1, 1, 1 }).reshape(2, 5);
        using var labels = Losses.PromptMaskedLabels(ids, mask, new[] { 2, 1 });
        Assert.Equal(new long[] { -100, -100, 7, 8, -100, -100, 7, 8, 9, 3 }, labels.data<long>().ToArray());

        using var idsL = tensor(new long[] { 0, 5, 6, 7, 8 }).reshape(1, 5);
        using var maskL = tensor(new long[] { 0, 1, 1, 1, 1 }).reshape(1, 5);
        using var labelsL = Losses.PromptMaskedLabels(idsL, maskL, new[] { 2 });
        Assert.Equal(new long[] { -100, -100, -100, 7, 8 }, labelsL.data<long>().ToArray());
    }

    [Theory]
    // HF get_linear_schedule_with_warmup(num_warmup_steps=2, num_training_steps=10): lambda(s)
    [InlineData(LearningRateSchedule.Linear, 0, 0.0)]
    [InlineData(LearningRateSchedule.Linear, 1, 0.5)]
    [InlineData(LearningRateSchedule.Linear, 2, 1.0)]
    [InlineData(LearningRateSchedule.Linear, 6, 0.5)]
    [InlineData(LearningRateSchedule.Linear, 9, 0.125)]
    [InlineData(LearningRateSchedule.Linear, 10, 0.0)]
    // HF get_cosine_schedule_with_warmup: 0.5 (1 + cos(π progress)), progress = (s-2)/8
    [InlineData(LearningRateSchedule.Cosine, 1, 0.5)]
    [InlineData(LearningRateSchedule.Cosine, 4, 0.85355339059327373)]
    [InlineData(LearningRateSchedule.Cosine, 6, 0.5)]
    [InlineData(LearningRateSchedule.Cosine, 8, 0.14644660940672627)]
    [InlineData(LearningRateSchedule.Constant, 1, 0.5)]
    [InlineData(LearningRateSchedule.Constant, 9, 1.0)]
    public void ScheduleFactorsMatchHuggingFaceFormulas(LearningRateSchedule schedule, long step, double expected)
        => Assert.Equal(expected, LearningRates.Factor(schedule, step, warmupSteps: 2, totalSteps: 10), 12);

    [Fact]
    public void WarmupRatioRoundsUpAsHuggingFaceDoes()
    {
        Assert.Equal(3, LearningRates.WarmupSteps(new TrainerOptions { WarmupRatio = 0.1 }, 25));
        Assert.Equal(5, LearningRates.WarmupSteps(new TrainerOptions { WarmupRatio = 0.1, WarmupSteps = 5 }, 25));
        Assert.Equal(1e-4, LearningRates.At(new TrainerOptions(), 0, 100));     // paper default: 1e-4, linear, no warmup
    }

    [Fact]
    public void ExampleBatchingShufflesReproduciblyPerEpochAndSkips()
    {
        var examples = Enumerable.Range(0, 10).ToArray();
        var src = BatchSource.FromExamples(examples, 3, shuffle: true, seed: 1);
        Assert.Equal(4, src.BatchesPerEpoch);
        var e0 = src.GetBatches(0, 0).Select(b => b.ToArray()).ToList();
        Assert.Equal(e0, src.GetBatches(0, 0).Select(b => b.ToArray()).ToList());
        Assert.Equal(e0.Skip(2), src.GetBatches(0, 2).Select(b => b.ToArray()));
        Assert.NotEqual(e0, src.GetBatches(1, 0).Select(b => b.ToArray()).ToList());
        Assert.Equal(examples, e0.SelectMany(b => b).Order());
        Assert.Equal(new[] { 3, 3, 3, 1 }, e0.Select(b => b.Length));
    }
}
