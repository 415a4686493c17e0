using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Runtime;
using QuanTA.MLNet.AutoML;
using QuanTA.MLNet.Engine;

namespace QuanTA.MLNet.Tests.AutoML;

public class SearchSpaceTests
{
    [Fact]
    public void AttributesAreReadIntoOptionsWithDottedNestedNames()
    {
        var space = SearchSpace.FromType<QuanTASweepParameters>();
        var names = space.Options.Select(o => o.Name).ToList();
        Assert.Equal(["Adapter", "QuanTA.AxisCount", "QuanTA.AxisLayout", "QuanTA.PairSubset", "QuanTA.Rank", "LoRA.Rank", "LoRA.Alpha",
            "TargetModules", "LearningRate", "Epochs", "CosineSchedule"], names);
        var lr = Assert.IsType<RangeOption>(space["LearningRate"]);
        Assert.True(lr.LogBase);
        Assert.Equal((1e-4, 3e-2, typeof(double)), (lr.Min, lr.Max, lr.ValueType));
        var epochs = Assert.IsType<RangeOption>(space["Epochs"]);
        Assert.Equal(typeof(int), epochs.ValueType);
        Assert.IsType<BooleanOption>(space["CosineSchedule"]);
        Assert.Equal([1, 2, 4, 8, 16], Assert.IsType<ChoiceOption>(space["LoRA.Rank"]).Candidates.Cast<int>());
        Assert.Equal(3, (int)space.Default()["Epochs"]);
        Assert.Throws<KeyNotFoundException>(() => space["NoSuchParameter"]);
    }

    [Theory]
    [InlineData(128, 2, new[] { "16,8", "32,4", "64,2" })]
    [InlineData(128, 3, new[] { "8,4,4", "8,8,2", "16,4,2", "32,2,2" })]
    [InlineData(128, 4, new[] { "4,4,4,2", "8,4,2,2", "16,2,2,2" })]
    [InlineData(96, 3, new[] { "4,4,6", "6,4,4" })]   // checked below for validity, not order
    public void FactorizationsAreAllValidNonIncreasingAndBalancedFirst(int size, int n, string[] expected)
    {
        var list = QuanTASearchSpace.Factorizations(size, n);
        foreach (var d in list)
        {
            Assert.Equal(n, d.Length);
            Assert.Equal(size, d.Aggregate(1, (a, b) => a * b));
            Assert.All(d, x => Assert.True(x >= 2));
            Assert.True(d.Zip(d.Skip(1)).All(p => p.First >= p.Second), string.Join(",", d));
        }
        Assert.Equal(list.Count, list.Select(QuanTASearchSpace.FormatLayout).Distinct().Count());
        if (size == 128) Assert.Equal(expected, list.Select(QuanTASearchSpace.FormatLayout));
        else Assert.Contains("6,4,4", list.Select(QuanTASearchSpace.FormatLayout));
        // brute force: every non-increasing factorization is found
        int brute = 0;
        if (n == 3)
            for (int a = 2; a <= size; a++) for (int b = 2; b <= a; b++) for (int c = 2; c <= b; c++) if (a * b * c == size) brute++;
        if (n == 3) Assert.Equal(brute, list.Count);
    }

    [Fact]
    public void PaperLayoutIsAmongTheGeneratedCandidatesFor4096()
    {
        var list = QuanTASearchSpace.Factorizations(4096, 4).Select(QuanTASearchSpace.FormatLayout).ToList();
        Assert.Equal("8,8,8,8", list[0]);       // most balanced first
        Assert.Contains("16,8,8,4", list);      // the paper's LLaMA-7B layout
        Assert.Equal(4, QuanTASearchSpace.Factorizations(4096, 4, max: 4).Count);
    }

    [Fact]
    public void GeneratedSpaceFollowsTheHiddenSizeAndAxisCount()
    {
        var random = new Random(5);
        foreach (int hidden in new[] { 128, 4096, 96 })
        {
            var space = QuanTASearchSpace.Create(hidden);
            var seenN = new HashSet<int>();
            for (int i = 0; i < 200; i++)
            {
                var v = space.Sample(random);
                var dims = QuanTASearchSpace.ParseLayout((string)v["QuanTA.AxisLayout"]);
                Assert.Equal((int)v["QuanTA.AxisCount"], dims.Length);
                Assert.Equal(hidden, dims.Aggregate(1, (a, b) => a * b));
                seenN.Add(dims.Length);
            }
            Assert.Equal([2, 3, 4], seenN.Order());
        }
        // a hidden size with no 4-factor split drops N = 4
        var small = QuanTASearchSpace.Create(12);
        Assert.Equal([2, 3], Assert.IsType<ChoiceOption>(small["QuanTA.AxisCount"]).Candidates.Cast<int>());
        Assert.Throws<ArgumentException>(() => QuanTASearchSpace.Create(7, [2, 3]));
    }

    [Fact]
    public void LogScaleRangeIsUniformInLogAndIntegerRangeCoversBothEnds()
    {
        var lr = new RangeOption(1e-4, 1e-2, null, logBase: true, typeof(double));
        var random = new Random(1);
        var xs = Enumerable.Range(0, 4000).Select(_ => (double)lr.Sample(random, new Dictionary<string, object>())).ToList();
        Assert.All(xs, x => Assert.InRange(x, 1e-4, 1e-2));
        double belowMid = xs.Count(x => x < 1e-3) / (double)xs.Count;   // geometric middle
        Assert.InRange(belowMid, 0.45, 0.55);
        var epochs = new RangeOption(1, 3, null, false, typeof(int));
        var es = Enumerable.Range(0, 3000).Select(_ => (int)epochs.Sample(random, new Dictionary<string, object>())).ToList();
        Assert.Equal([1, 2, 3], es.Distinct().Order());
        Assert.All(new[] { 1, 2, 3 }, e => Assert.InRange(es.Count(x => x == e), 850, 1150));
    }

    [Fact]
    public void DrawnParametersMapOntoValidFineTuneOptions()
    {
        var space = QuanTASearchSpace.Create(128);
        var random = new Random(3);
        var baseOptions = new QuanTAFineTuneOptions { BaseModelPath = "x", BatchSize = 7 };
        bool sawQuanTA = false, sawLoRA = false;
        for (int i = 0; i < 100; i++)
        {
            var raw = space.Sample(random);
            var p = space.ToObject<QuanTASweepParameters>(raw);
            Assert.Equal(raw["QuanTA.AxisLayout"], p.QuanTA.AxisLayout);
            Assert.Equal(raw["LearningRate"], p.LearningRate);
            var o = p.ApplyTo(baseOptions, epochs: 2);
            o.Validate();
            Assert.Equal((2, 7, p.LearningRate), (o.Epochs, o.BatchSize, o.LearningRate));
            if (o.Adapter == AdapterMethod.QuanTA)
            {
                sawQuanTA = true;
                var layout = new AxisLayout(o.AxisLayout!, o.Pairs!.Select(x => new AxisPair(x.Item1, x.Item2)).ToArray());
                Assert.Equal(128, layout.D);
                int n = layout.AxisCount;
                int expected = p.QuanTA.PairSubset switch { "all" => n * (n - 1) / 2, "double" => n * (n - 1), _ => n - 1 };
                Assert.Equal(expected, layout.TensorCount);
                Assert.Equal(p.QuanTA.Rank == 0 ? null : p.QuanTA.Rank, o.Rank);
                Assert.StartsWith("QuanTA layout=" + p.QuanTA.AxisLayout, p.Describe());
            }
            else
            {
                sawLoRA = true;
                Assert.Equal((p.LoRA.Rank, p.LoRA.Alpha), (o.LoRARank, o.LoRAAlpha));
                Assert.DoesNotContain("layout", p.Describe());
            }
        }
        Assert.True(sawQuanTA && sawLoRA);
        Assert.Equal(8, baseOptions.LoRARank);   // the base options are not changed
    }

    [Fact]
    public void FixPinsAParameterAndBadValuesAreNamed()
    {
        var space = QuanTASearchSpace.Create(128).Fix("Adapter", "LoRA").Fix("LoRA.Rank", 2);
        var random = new Random(2);
        for (int i = 0; i < 20; i++)
        {
            var p = space.ToObject<QuanTASweepParameters>(space.Sample(random));
            Assert.Equal(("LoRA", 2), (p.Adapter, p.LoRA.Rank));
        }
        var e = Assert.Throws<ArgumentException>(() => QuanTASearchSpace.ParseLayout("8,0,4"));
        Assert.Contains("8,0,4", e.Message);
        Assert.Throws<ArgumentException>(() => new RangeOption(1e-3, 1e-1, null, true, typeof(string)));
        Assert.Throws<ArgumentException>(() => new RangeOption(0, 1, null, true, typeof(double)));
    }

    /// <summary>The count computed from config.json equals what injection into the real model reports (trainable and total).</summary>
    [Theory]
    [InlineData("llama-tiny-seqcls", "quanta", "8,4,4", "all", 0, "q_proj,v_proj")]
    [InlineData("llama-tiny-seqcls", "quanta", "4,4,4,2", "adjacent", 4, "q_proj,k_proj,v_proj,o_proj")]
    [InlineData("llama-tiny-seqcls", "quanta", "derived", "adjacent", 0, "all-linear")]   // a layout per layer shape (128 and 384)
    [InlineData("llama-tiny-seqcls", "quanta", "8,8,6", "all", 4, "all-linear")]          // the widest layer's, padding the rest
    [InlineData("llama-tiny-seqcls", "lora", "", "", 0, "all-linear")]
    [InlineData("qwen2-tiny", "quanta", "16,8", "double", 8, "q_proj,v_proj")]
    [InlineData("qwen2-tiny", "lora", "", "", 0, "q_proj,k_proj,v_proj,o_proj")]
    [InlineData("llama-tiny", "lora", "", "", 0, "all-linear")]
    public void ParameterCountFromConfigMatchesInjection(string fixture, string method, string layout, string pairs, int rank, string targets)
    {
        TorchRuntime.Initialize();
        var dir = ToyData.Fixture(fixture);
        bool seqCls = fixture.EndsWith("seqcls", StringComparison.Ordinal);
        var p = new QuanTASweepParameters { Adapter = method == "lora" ? "LoRA" : "QuanTA", TargetModules = targets };
        if (method == "quanta") { p.QuanTA.AxisLayout = layout; p.QuanTA.PairSubset = pairs; p.QuanTA.Rank = rank; }
        else p.LoRA.Rank = 4;
        var o = p.ApplyTo(new QuanTAFineTuneOptions { BaseModelPath = dir }, 1);
        var count = ModelShape.FromConfig(dir).Count(o, trainsHead: false);

        using var model = seqCls ? (TorchSharp.torch.nn.Module)LlamaForSequenceClassification.FromPretrained(dir) : CausalLM.FromPretrained(dir);
        var report = AdapterInjector.Inject(model, CoreBackend.AdapterConfig(o, 1), TargetModules.Parse(targets));
        Assert.Equal(report.TrainableParameters, count.Trainable);
        Assert.Equal(report.TotalParameters, count.Total);
        Assert.Equal(report.Layers.Count, count.AdaptedLayers);
        Assert.True(count.Trainable > 0);
    }

    [Fact]
    public void ALayoutThatCannotHoldATargetIsAnArgumentException()
    {
        var dir = ToyData.Fixture("llama-tiny-seqcls");
        var p = new QuanTASweepParameters { TargetModules = "all-linear" };
        p.QuanTA.AxisLayout = "8,4,4";   // D = 128 < 384 (the MLP width)
        var e = Assert.Throws<ArgumentException>(() => ModelShape.FromConfig(dir).Count(p.ApplyTo(new QuanTAFineTuneOptions { BaseModelPath = dir }, 1), true));
        Assert.Contains("mlp", e.Message);
    }
}
