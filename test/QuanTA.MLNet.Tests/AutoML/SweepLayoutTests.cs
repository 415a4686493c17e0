using Microsoft.ML;
using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.MLNet.AutoML;

namespace QuanTA.MLNet.Tests.AutoML;

/// <summary>
/// Sweeps search QuanTA on every target set (issue 17, item 6): on a model like the embedded base (hidden 256, 768-wide MLP)
/// <c>all-linear</c> gets layouts that hold the MLP (factorizations of 768, or derived per layer) instead of hidden-size layouts
/// that are all rejected; an adapter whose whole space is rejected is warned about before the first trial; a sweep where
/// nothing can run throws, saying why.
/// </summary>
public sealed class SweepLayoutTests
{
    const int Layers = 4;

    // the embedded base's shape: hidden 256, MLP 768 (q/k/v/o 256×256)
    static readonly ModelShape EmbeddedLike = ModelShape.FromConfig(HfModelConfig.Parse($$"""
        { "model_type": "llama", "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": {{Layers}},
          "num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": true }
        """), sequenceClassification: false);

    static readonly QuanTAFineTuneOptions BaseOptions = new() { BaseModelPath = "unused", Task = QuanTATask.TextGeneration };

    static AdapterSpaceCheck QuanTACheck(SearchSpace space, SweepConstraint? constraint = null) =>
        Assert.Single(SweepSpaceCheck.Run(space, EmbeddedLike, false, BaseOptions, constraint ?? new(null, null)), c => c.Adapter == "QuanTA");

    [Fact]
    public void AllLinearOnTheEmbeddedBaseHadNoRunnableQuanTAConfigurationWithHiddenSizeLayouts()
    {
        // the space sweeps used before: every layout a factorization of the hidden size (256) — none holds the 768-wide MLP
        var before = QuanTACheck(QuanTASearchSpace.Create(EmbeddedLike.HiddenSize).Fix("TargetModules", "all-linear"));
        Assert.Equal(0, before.Runnable);
        Assert.Equal(before.Checked, before.Unbuildable);
        Assert.Contains("smaller than the layer", before.FirstBuildError);

        var now = QuanTACheck(QuanTASearchSpace.Create(EmbeddedLike).Fix("TargetModules", "all-linear"));
        Assert.Equal(0, now.Unbuildable);
        Assert.Equal(now.Checked, now.Runnable);
        Assert.True(now.Runnable >= 3 * 4 * 3, $"{now.Runnable} runnable QuanTA configurations");   // N × pair subsets × ranks, at least
    }

    [Fact]
    public void LayoutsFollowTheWidestTargetedLayerOrAreDerivedPerLayer()
    {
        var space = QuanTASearchSpace.Create(EmbeddedLike);
        var random = new Random(7);
        var seen = new HashSet<string>();
        for (int i = 0; i < 400; i++)
        {
            var p = space.ToObject<QuanTASweepParameters>(space.Sample(random));
            if (p.Adapter != "QuanTA") continue;
            if (p.QuanTA.AxisLayout == QuanTASearchSpace.DerivedLayout)
            {
                Assert.Null(p.ApplyTo(BaseOptions, 1).AxisLayout);                       // the trainer derives it per layer …
                Assert.Equal(p.QuanTA.AxisCount, p.ApplyTo(BaseOptions, 1).AxisCount);    // … from the drawn N
                Assert.StartsWith($"QuanTA layout=derived(N={p.QuanTA.AxisCount}) ", p.Describe());
                seen.Add("derived");
                continue;
            }
            var dims = QuanTASearchSpace.ParseLayout(p.QuanTA.AxisLayout);
            Assert.Equal(p.QuanTA.AxisCount, dims.Length);
            int widest = p.TargetModules == "all-linear" ? 768 : 256;
            Assert.Equal(widest, dims.Aggregate(1, (a, b) => a * b));
            seen.Add(p.TargetModules + " " + widest);
        }
        Assert.Equal(["all-linear 768", "derived", "q_proj,k_proj,v_proj,o_proj 256", "q_proj,v_proj 256"], seen.Order());
    }

    [Fact]
    public void DerivedLayoutsAreCountedPerLayerShape()
    {
        var p = new QuanTASweepParameters { TargetModules = "all-linear" };
        p.QuanTA.AxisLayout = QuanTASearchSpace.DerivedLayout;
        p.QuanTA.AxisCount = 3;
        var count = EmbeddedLike.Count(p.ApplyTo(BaseOptions, 1), trainsHead: false);
        // N = 3: 256 → [7,7,7] (3 tensors of 49² each), 768 → [10,10,10] (3 tensors of 100² each)
        Assert.Equal(3L * 49 * 49, AxisLayout.Derive(256, 256, 3).ParameterCount());
        Assert.Equal(3L * 100 * 100, AxisLayout.Derive(768, 256, 3).ParameterCount());
        Assert.Equal(Layers * (4 * 3L * 49 * 49 + 3 * 3L * 100 * 100), count.Trainable);
        Assert.Equal(Layers * 7, count.AdaptedLayers);
        Assert.Equal(EmbeddedLike.BaseParameters + count.Trainable, count.Total);
        // the constraint is judged on that per-layer count
        Assert.Null(new SweepConstraint(null, count.Trainable).Violation(count));
        Assert.NotNull(new SweepConstraint((double)(count.Trainable - 1) / count.Total, null).Violation(count));
    }

    [Fact]
    public void AnAllLinearSweepOnTheEmbeddedBaseRunsQuanTATrials()
    {
        var runner = new FakeRunner();
        var space = QuanTASearchSpace.Create(EmbeddedLike).Fix("TargetModules", "all-linear");
        var result = new MLContext(1).QuanTASweep(BaseOptions).SetModelShape(EmbeddedLike).SetSearchSpace(space)
            .SetTrialRunner(runner).SetBudget(12).Run();
        Assert.Empty(result.Warnings);
        Assert.Contains(runner.Calls, c => c.Parameters.Adapter == "QuanTA");
        Assert.DoesNotContain(result.Rejected, r => r.Reason.Contains("smaller than the layer"));
        foreach (var c in runner.Calls.Where(c => c.Parameters.Adapter == "QuanTA"))
            Assert.Equal(EmbeddedLike.Count(c.Options, false).Trainable, c.Count.Trainable);
    }

    [Fact]
    public void AnAdapterWhoseWholeSpaceIsRejectedIsWarnedAboutBeforeTheFirstTrial()
    {
        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("No QuanTA configuration", StringComparison.Ordinal)) lock (log) log.Add(e.Message); };
        var events = new List<string>();
        var runner = new FakeRunner { Hook = (_, _) => { events.Add("trial"); return null; } };
        // hidden-size layouts only, on all-linear: no QuanTA configuration can hold the MLP; LoRA still can
        var space = QuanTASearchSpace.Create(EmbeddedLike.HiddenSize).Fix("TargetModules", "all-linear");
        var experiment = ml.QuanTASweep(BaseOptions).SetModelShape(EmbeddedLike).SetSearchSpace(space).SetTrialRunner(runner).SetBudget(6);
        experiment.SearchSpaceWarning += w => events.Add("warning: " + w);
        var result = experiment.Run();

        var warning = Assert.Single(result.Warnings);
        Assert.Equal("warning: " + warning, events[0]);                               // before any trial
        Assert.Equal(6, events.Count(e => e == "trial"));
        Assert.StartsWith("No QuanTA configuration of the search space can run (all ", warning);
        Assert.Contains("smaller than the layer", warning);                            // the reason
        Assert.Contains("--target-modules", warning);                                  // what to change
        Assert.Contains("--axis-counts", warning);
        Assert.NotEmpty(log);                                                          // also on the ML.NET log
        Assert.All(runner.Calls, c => Assert.Equal("LoRA", c.Parameters.Adapter));
        Assert.DoesNotContain(result.Rejected, r => r.Description.StartsWith("QuanTA", StringComparison.Ordinal));
    }

    [Fact]
    public void AnAdapterEntirelyOverTheConstraintNamesItsSmallestConfigurationAndTheLimit()
    {
        var space = QuanTASearchSpace.Create(EmbeddedLike);
        var checks = SweepSpaceCheck.Run(space, EmbeddedLike, false, BaseOptions, new SweepConstraint(null, null));
        long smallestLoRA = checks.Single(c => c.Adapter == "LoRA").Smallest!.Value.Count.Trainable;
        Assert.Equal(Layers * 2 * (256 + 256), smallestLoRA);                           // r = 1 on q and v
        Assert.True(checks.Single(c => c.Adapter == "QuanTA").Smallest!.Value.Count.Trainable < smallestLoRA);

        var limit = new SweepConstraint(null, smallestLoRA - 1);
        var lora = SweepSpaceCheck.Run(space, EmbeddedLike, false, BaseOptions, limit).Single(c => c.Adapter == "LoRA");
        var warning = lora.Warning(limit)!;
        Assert.Contains("No LoRA configuration", warning);
        Assert.Contains("'LoRA r=1 ", warning);
        Assert.Contains($"{smallestLoRA:N0} trainable parameters", warning);
        Assert.Contains("--max-trainable", warning);
        Assert.Null(SweepSpaceCheck.Run(space, EmbeddedLike, false, BaseOptions, limit).Single(c => c.Adapter == "QuanTA").Warning(limit));
    }

    [Fact]
    public void ASweepWhereNothingCanRunThrowsSayingWhyBeforeTraining()
    {
        var runner = new FakeRunner();
        var e = Assert.Throws<InvalidOperationException>(() => new MLContext(1).QuanTASweep(BaseOptions).SetModelShape(EmbeddedLike)
            .SetTrialRunner(runner).SetConstraint(maxTrainableParameters: 10).Run());
        Assert.StartsWith("The sweep cannot run any configuration of its search space.", e.Message);
        Assert.Contains("No QuanTA configuration", e.Message);
        Assert.Contains("No LoRA configuration", e.Message);
        Assert.Contains("over the limit of at most 10 trainable parameters", e.Message);
        Assert.Empty(runner.Calls);
    }
}
