using QuanTA.Core.Adapters;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Adapters;

/// <summary>Issue 17 item 7: the pain points of PEFT users (bf16 merges that are not W0 + ΔW, transposed adapter tensors that
/// load silently), tightened into exact checks.</summary>
public class PeerPainPointTests(ITestOutputHelper output)
{
    /// <summary>Two bf16 layers in a module tree, as a backbone has them.</summary>
    static TorchSharp.Modules.Sequential Bf16Model(IAdapterConfig cfg)
    {
        var m = nn.Sequential(("up", new AdaptableLinear(32, 48, hasBias: true, dtype: ScalarType.BFloat16)),
                              ("down", new AdaptableLinear(48, 32, hasBias: false, dtype: ScalarType.BFloat16)));
        using (no_grad())
        using (var g = new Generator(11))
            foreach (var p in m.parameters()) p.copy_(randn(p.shape, generator: g).mul_(0.5));
        AdapterInjector.Inject(m, cfg, TargetModules.All());
        return m;
    }

    [Theory]
    [InlineData("quanta")]
    [InlineData("lora")]
    public void Bf16MergeIsOneRoundingOfW0PlusDeltaAndHundredMergeUnmergeCyclesRestoreW0BitForBit(string method)
    {
        TestUtil.Init();
        IAdapterConfig cfg = method == "quanta" ? new QuanTAConfig { Layout = [4, 4, 4], Seed = 3 } : new LoRAConfig { Rank = 4, Alpha = 8, Seed = 3 };
        using var m = Bf16Model(cfg);
        var layers = AdapterInjector.LinearLayers(m);
        foreach (var (_, l) in layers) TestUtil.Randomize(l.Adapter!, 0.2, seed: 5);   // a trained-looking ΔW (LoRA's B starts at 0)
        var w0 = layers.ToDictionary(l => l.Name, l => l.Layer.weight.detach().clone());
        // the expected merge: W0 (bf16) widened to fp32, + ΔW computed in fp32, one rounding to bf16
        Dictionary<string, Tensor> expected;
        using (no_grad())
            expected = layers.ToDictionary(l => l.Name, l => (w0[l.Name].to_type(ScalarType.Float32) + l.Layer.Adapter!.DeltaWeight()).to_type(ScalarType.BFloat16));
        int twoRoundings = 0;
        using (no_grad())
            foreach (var (name, l) in layers)   // what an in-place bf16 merge computes: ΔW rounded, then the sum rounded again
                twoRoundings += (int)(w0[name] + l.Adapter!.DeltaWeight().to_type(ScalarType.BFloat16)).ne(expected[name]).sum().item<long>();
        output.WriteLine($"{method}: {twoRoundings} weights differ between one rounding and an in-place bf16 merge");

        var x = randn(3, 32).to_type(ScalarType.BFloat16);
        Tensor y0;
        using (no_grad()) y0 = m.call(x);
        for (int cycle = 0; cycle < 100; cycle++)
        {
            Assert.Equal(2, AdapterInjector.MergeAll(m));
            foreach (var (name, l) in layers)
            {
                Assert.Equal(ScalarType.BFloat16, l.weight.dtype);
                Assert.True(TestUtil.BitEqual(l.weight, expected[name]), $"cycle {cycle}, {name}: merged weight is not round(W0 + ΔW)");
            }
            Assert.Equal(2, AdapterInjector.UnmergeAll(m));
            foreach (var (name, l) in layers)
                Assert.True(TestUtil.BitEqual(l.weight, w0[name]), $"cycle {cycle}, {name}: unmerge did not restore W0 bit for bit");
        }
        using (no_grad()) Assert.True(TestUtil.BitEqual(m.call(x), y0));
        Assert.False(TestUtil.BitEqual(expected["up"], w0["up"]));   // the update is really there
    }

    static readonly QuanTAConfig Quanta = new() { Layout = [4, 4, 2], Seed = 42 };   // pairs (1,2) [4,2,4,2], (0,2) [4,2,4,2], (0,1) [4,4,4,4]

    /// <summary>Saves a q_proj QuanTA adapter whose T moved a little from its init S (as training leaves it), lets
    /// <paramref name="damage"/> rewrite the file's tensors, and loads it into a fresh model.</summary>
    static Exception? LoadDamaged(int? rank, Action<Dictionary<string, Tensor>> damage)
    {
        var dir = Directory.CreateTempSubdirectory("adapter-transposed").FullName;
        try
        {
            var path = Path.Combine(dir, "adapter.safetensors");
            using (var a = new ToyModel())
            {
                AdapterInjector.Inject(a, Quanta with { Rank = rank }, TargetModules.Names("q_proj"));
                using (no_grad())
                using (var g = new Generator(9))
                    foreach (var p in a.parameters().Where(p => p.requires_grad)) p.add_(randn(p.shape, generator: g).mul_(0.02));
                AdapterFile.Save(a, path);
            }
            var sd = Safetensors.LoadStateDict(path);
            damage(sd);
            Safetensors.SaveStateDict(path, sd);
            using var b = new ToyModel();
            var e = Record.Exception(() => AdapterFile.Load(b, path));
            if (e is not null) Assert.All(AdapterInjector.LinearLayers(b), l => Assert.Null(l.Layer.Adapter));   // nothing attached
            return e;
        }
        finally { Directory.Delete(dir, true); }
    }

    const string Q = "model.layers.0.self_attn.q_proj.quanta.";

    [Fact]
    public void TransposedQuanTATensorsInAnAdapterFileAreRefusedNamingTheTensorAndBothShapes()
    {
        TestUtil.Init();
        // untouched: loads
        Assert.Null(LoadDamaged(null, _ => { }));
        Assert.Null(LoadDamaged(3, _ => { }));

        // T_0 [4,2,4,2] transposed as its 8×8 matrix: the same shape, found from the values
        var e = Assert.IsType<InvalidDataException>(LoadDamaged(null, sd => sd[Q + "T_0"] = sd[Q + "T_0"].permute(2, 3, 0, 1).contiguous()));
        output.WriteLine(e.Message);
        Assert.Contains($"'{Q}T_0'", e.Message); Assert.Contains("transposed", e.Message);
        Assert.Contains("shape [4, 2, 4, 2] in", e.Message); Assert.Contains("expects [4, 2, 4, 2]", e.Message);
        Assert.Contains($"'{Q}S_0'", e.Message);

        // T_0 with its pair's axes (4 and 2) swapped: the shape changes to [2,4,2,4]
        e = Assert.IsType<InvalidDataException>(LoadDamaged(null, sd => sd[Q + "T_0"] = sd[Q + "T_0"].permute(1, 0, 3, 2).contiguous()));
        Assert.Contains($"'{Q}T_0'", e.Message); Assert.Contains("[2, 4, 2, 4]", e.Message); Assert.Contains("[4, 2, 4, 2]", e.Message);
        Assert.Contains("transposed", e.Message);

        // T_2 [4,4,4,4] (a pair of equal axes) with the axes swapped, and transposed both ways: the same shape
        foreach (long[] perm in new long[][] { [1, 0, 3, 2], [3, 2, 1, 0], [2, 3, 0, 1] })
        {
            e = Assert.IsType<InvalidDataException>(LoadDamaged(null, sd => sd[Q + "T_2"] = sd[Q + "T_2"].permute(perm).contiguous()));
            Assert.Contains($"'{Q}T_2'", e.Message); Assert.Contains("shape [4, 4, 4, 4] in", e.Message); Assert.Contains("expects [4, 4, 4, 4]", e.Message);
        }

        // low rank: U transposed changes its shape; U and V swapped and transposed (U·V transposed) keep theirs
        e = Assert.IsType<InvalidDataException>(LoadDamaged(3, sd => sd[Q + "T_1_U"] = sd[Q + "T_1_U"].t().contiguous()));
        Assert.Contains($"'{Q}T_1_U'", e.Message); Assert.Contains("[3, 8]", e.Message); Assert.Contains("[8, 3]", e.Message);
        e = Assert.IsType<InvalidDataException>(LoadDamaged(3, sd =>
        {
            var (u, v) = (sd[Q + "T_1_U"], sd[Q + "T_1_V"]);
            sd[Q + "T_1_U"] = v.t().contiguous(); sd[Q + "T_1_V"] = u.t().contiguous();
        }));
        output.WriteLine(e.Message);
        Assert.Contains($"'{Q}T_1_U' and '{Q}T_1_V'", e.Message); Assert.Contains("[8, 3] and [3, 8]", e.Message);
        Assert.Contains("transposed", e.Message);

        // not detectable (documented): T and S transposed together are consistent with each other
        Assert.Null(LoadDamaged(null, sd =>
        {
            sd[Q + "T_0"] = sd[Q + "T_0"].permute(2, 3, 0, 1).contiguous(); sd[Q + "S_0"] = sd[Q + "S_0"].permute(2, 3, 0, 1).contiguous();
        }));
    }
}
