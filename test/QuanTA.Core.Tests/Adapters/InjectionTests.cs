using QuanTA.Core.Adapters;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Adapters;

public class InjectionTests(ITestOutputHelper output)
{
    static readonly QuanTAConfig Quanta = new() { Layout = [4, 4, 2], Seed = 42 };   // D = 32, 2·64 + 256 = 384 params per layer

    [Fact]
    public void InjectsByNameSuffixFreezesTheRestAndCounts()
    {
        TestUtil.Init();
        using var m = new ToyModel();
        long total0 = m.parameters().Sum(p => p.numel());
        var report = AdapterInjector.Inject(m, Quanta, TargetModules.Names("q_proj", "v_proj"));
        output.WriteLine(report.ToString());
        Assert.Equal(new[] { "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                             "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj" }, report.Layers.Select(l => l.Name));
        Assert.Equal(4 * 384, report.TrainableParameters);
        Assert.Equal(total0 + 4 * 384, report.TotalParameters);
        Assert.Equal(100.0 * 4 * 384 / (total0 + 4 * 384), report.TrainablePercent, 10);
        Assert.All(report.Layers, l => Assert.Equal((32L, 32L), (l.RankLower, l.RankUpper)));
        // only the adapters train
        var trainable = m.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.Equal(12, trainable.Count);
        Assert.All(trainable, n => Assert.Contains(".quanta.T_", n));
        Assert.Contains("model.layers.0.self_attn.q_proj.quanta.T_0", trainable);
        Assert.Contains("model.layers.1.self_attn.v_proj.quanta.S_2", m.state_dict().Keys);
        // at init the model computes exactly what it did before
        var x = randn(3, 16);
        using var _ = no_grad();
        var y = m.forward(x);
        AdapterInjector.RemoveAll(m);
        Assert.True(TestUtil.BitEqual(m.forward(x), y));
    }

    [Fact]
    public void NonSquareLayersGetADerivedLayoutAndGradientsReachOnlyAdapters()
    {
        TestUtil.Init();
        using var m = new ToyModel();
        var report = AdapterInjector.Inject(m, new QuanTAConfig { Seed = 1 }, TargetModules.Names("k_proj", "down_proj")); // 16→8, 24→16
        Assert.All(report.Layers, l => Assert.Contains(l.Name.EndsWith("k_proj") ? "layout [2,2,2,2]" : "layout [3,3,3,3]", l.Shape)); // 2⁴ = 16, ceil(24^(1/4)) = 3
        Assert.Equal(4, report.Layers.Count);
        var loss = m.forward(randn(4, 16)).square().sum();
        loss.backward();
        foreach (var (name, p) in m.named_parameters())
        {
            if (p.requires_grad) Assert.True(p.grad is not null && p.grad.abs().sum().item<float>() > 0, $"{name} got no gradient");
            else Assert.Null(p.grad);
        }
    }

    [Fact]
    public void RegexAllLinearAndExclusions()
    {
        TestUtil.Init();
        using var m = new ToyModel();
        var all = AdapterInjector.Inject(m, new LoRAConfig { Rank = 2, Seed = 3 }, TargetModules.All());
        Assert.Equal(14, all.Layers.Count);                                              // 7 per block, lm_head excluded
        Assert.DoesNotContain(all.Layers, l => l.Name.EndsWith("lm_head"));
        var re = AdapterInjector.Inject(m, Quanta, TargetModules.Regex(@"model\.layers\.1\.mlp\.(gate|up)_proj"));
        Assert.Equal(new[] { "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj" }, re.Layers.Where(l => l.Method == "quanta").Select(l => l.Name));
        Assert.Equal(2, re.Layers.Count(l => l.Method == "quanta"));
        Assert.Equal(12, re.Layers.Count(l => l.Method == "lora"));
        AdapterInjector.RemoveAll(m);
        var ex = AdapterInjector.Inject(m, Quanta, TargetModules.Names("q_proj", "v_proj") with { Exclude = ["layers.1.self_attn.v_proj"] });
        Assert.Equal(3, ex.Layers.Count);
        Assert.Equal(3, TargetModules.Parse("q_proj, v_proj,o_proj").NameList!.Count);
        Assert.True(TargetModules.Parse("all-linear").AllLinear);
        Assert.Equal("a.*", TargetModules.Parse("regex:a.*").Pattern);
    }

    [Fact]
    public void UnknownTargetIsAClearErrorListingTheLayers()
    {
        TestUtil.Init();
        using var m = new ToyModel();
        var e = Assert.Throws<ArgumentException>(() => AdapterInjector.Inject(m, Quanta, TargetModules.Names("q_proj", "query")));
        Assert.Contains("'query'", e.Message);
        Assert.Contains("q_proj", e.Message); Assert.Contains("down_proj", e.Message); Assert.Contains("lm_head", e.Message);
        Assert.Throws<ArgumentException>(() => AdapterInjector.Inject(m, Quanta, TargetModules.Regex("nothing.*")));
        // a layout too small for one layer names that layer, and the model is left untouched
        var e2 = Assert.Throws<ArgumentException>(() => AdapterInjector.Inject(m, new QuanTAConfig { Layout = [4, 4] }, TargetModules.All()));
        Assert.Contains("gate_proj", e2.Message); Assert.Contains("16→24", e2.Message);
        Assert.All(AdapterInjector.LinearLayers(m), l => Assert.Null(l.Layer.Adapter));
    }

    [Fact]
    public void MergeAllUnmergeAllAreExact()
    {
        TestUtil.Init();
        using var m = new ToyModel();
        AdapterInjector.Inject(m, Quanta, TargetModules.Names("q_proj", "v_proj", "down_proj"));
        TestUtil.Randomize(m, 0.2);
        var w0 = m.named_parameters().Where(p => p.name.EndsWith(".weight")).ToDictionary(p => p.name, p => p.parameter.detach().clone());
        using var _ = no_grad();
        var x = randn(5, 16);
        var y = m.forward(x);
        var ranks = AdapterInjector.MeasureDeltaRanks(m);
        Assert.Equal(6, ranks.Count);
        Assert.Equal(16, ranks["model.layers.0.self_attn.q_proj"]);     // 16×16 layer, randomized T: full rank
        Assert.Equal(8, ranks["model.layers.1.self_attn.v_proj"]);      // 16→8
        Assert.Equal(6, AdapterInjector.MergeAll(m));
        var ym = m.forward(x);
        double e = TestUtil.RelErr(ym, y);
        output.WriteLine($"toy model merged vs unmerged rel err {e:E2}");
        Assert.True(e < 1e-5);
        Assert.Equal(6, AdapterInjector.UnmergeAll(m));
        foreach (var (name, p) in m.named_parameters().Where(p => p.name.EndsWith(".weight")))
            Assert.True(TestUtil.BitEqual(p, w0[name]), name);
        Assert.True(TestUtil.BitEqual(m.forward(x), y));
    }

    [Fact]
    public void SeededInjectionIsReproducibleAndDiffersAcrossLayers()
    {
        TestUtil.Init();
        using var a = new ToyModel(); using var b = new ToyModel();
        AdapterInjector.Inject(a, Quanta, TargetModules.Names("q_proj"));
        AdapterInjector.Inject(b, Quanta, TargetModules.Names("q_proj"));
        var ta = a.state_dict(); var tb = b.state_dict();
        Assert.True(TestUtil.BitEqual(ta["model.layers.0.self_attn.q_proj.quanta.T_0"], tb["model.layers.0.self_attn.q_proj.quanta.T_0"]));
        Assert.False(TestUtil.BitEqual(ta["model.layers.0.self_attn.q_proj.quanta.T_0"], ta["model.layers.1.self_attn.q_proj.quanta.T_0"]));
    }

    [Theory]
    [InlineData("quanta")]
    [InlineData("lora")]
    public void SaveLoadRoundTripIntoAFreshModel(string method)
    {
        TestUtil.Init();
        IAdapterConfig cfg = method == "quanta" ? Quanta with { Rank = 3 } : new LoRAConfig { Rank = 4, Alpha = 8, Seed = 5 };
        using var a = new ToyModel();
        AdapterInjector.Inject(a, cfg, TargetModules.Names("q_proj", "v_proj", "up_proj"));
        TestUtil.Randomize(a, 0.2, seed: 99);
        var dir = Directory.CreateTempSubdirectory("adapter-test").FullName;
        try
        {
            var path = Path.Combine(dir, "adapter.safetensors");
            AdapterFile.Save(a, path);
            Assert.True(File.Exists(Path.Combine(dir, "adapter.json")));
            var json = File.ReadAllText(Path.Combine(dir, "adapter.json"));
            Assert.Contains("model.layers.1.mlp.up_proj", json);
            using var b = new ToyModel();                 // same base weights, no adapters
            var report = AdapterFile.Load(b, path);
            Assert.Equal(6, report.Layers.Count);
            Assert.Equal(AdapterInjector.Report(a).TrainableParameters, report.TrainableParameters);
            using var _ = no_grad();
            var x = randn(4, 16);
            Assert.True(TestUtil.BitEqual(b.forward(x), a.forward(x)));
            Assert.True(TestUtil.RelErr(b.forward(x), new ToyModel().forward(x)) > 1e-3);   // the update is really there
            AdapterFile.Load(b, path);                    // loading again into the now-adapted model also works
            Assert.True(TestUtil.BitEqual(b.forward(x), a.forward(x)));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LoadRefusesMismatchesNamingTensorAndShapes()
    {
        TestUtil.Init();
        var dir = Directory.CreateTempSubdirectory("adapter-test").FullName;
        try
        {
            var path = Path.Combine(dir, "lora.safetensors");
            using var a = new ToyModel();
            AdapterInjector.Inject(a, new LoRAConfig { Rank = 4, Seed = 1 }, TargetModules.Names("q_proj"));
            AdapterFile.Save(a, path);

            // different rank in the model → shape mismatch
            using var b = new ToyModel();
            AdapterInjector.Inject(b, new LoRAConfig { Rank = 2 }, TargetModules.Names("q_proj"));
            var e1 = Assert.Throws<InvalidDataException>(() => AdapterFile.Load(b, path));
            Assert.Contains("r=4", e1.Message);

            // a transposed factor of the same numel
            var sd = Safetensors.LoadStateDict(path);
            var key = "model.layers.0.self_attn.q_proj.lora.A";
            sd[key] = sd[key].t().contiguous();
            Safetensors.SaveStateDict(path, sd);
            using var c = new ToyModel();
            var e2 = Assert.Throws<InvalidDataException>(() => AdapterFile.Load(c, path));
            Assert.Contains(key, e2.Message); Assert.Contains("[16, 4]", e2.Message); Assert.Contains("[4, 16]", e2.Message);
            Assert.Contains("transposed", e2.Message);
            Assert.All(AdapterInjector.LinearLayers(c), l => Assert.Null(l.Layer.Adapter));   // nothing attached on failure

            // the model has an adapter where the file has none
            using var d = new ToyModel();
            AdapterInjector.Inject(d, new LoRAConfig { Rank = 4 }, TargetModules.Names("q_proj", "v_proj"));
            var e3 = Assert.Throws<InvalidDataException>(() => AdapterFile.Load(d, path));
            Assert.Contains("v_proj", e3.Message);

            // method mismatch
            using var e = new ToyModel();
            AdapterInjector.Inject(e, Quanta, TargetModules.Names("q_proj"));
            Assert.Contains("quanta", Assert.Throws<InvalidDataException>(() => AdapterFile.Load(e, path)).Message);

            // a model whose layer is a different size
            using var f = new ToyModel(h: 32, kv: 16);
            Assert.Contains("16→16", Assert.Throws<InvalidDataException>(() => AdapterFile.Load(f, path)).Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
