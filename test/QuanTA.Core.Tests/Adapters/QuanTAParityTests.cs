using QuanTA.Core.Adapters;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Adapters;

/// <summary>Parity with tensors produced by the official QuanTA layer (test/fixtures/quanta-layer, layout [4,4,4,2]).</summary>
public class QuanTAParityTests(ITestOutputHelper output)
{
    static readonly int[] FixtureLayout = [4, 4, 4, 2];
    public static TheoryData<string> Cases => new() { "sq128", "gqa128to64", "in64out128" };

    static (AdaptableLinear Layer, QuanTAAdapter Adapter, Tensor X, Tensor Y, Tensor Dw) Build(Dictionary<string, Tensor> f, string c)
    {
        var w0 = f[$"{c}.W0"];
        int outF = (int)w0.shape[0], inF = (int)w0.shape[1];
        var layer = new AdaptableLinear(inF, outF, hasBias: false);
        using (no_grad()) layer.weight.copy_(w0);
        var adapter = new QuanTAAdapter(inF, outF, new AxisLayout(FixtureLayout));
        var t = f.Where(kv => kv.Key.StartsWith($"{c}.T[")).ToDictionary(kv => kv.Key[(c.Length + 3)..^1], kv => kv.Value);
        var s = f.Where(kv => kv.Key.StartsWith($"{c}.S[")).ToDictionary(kv => kv.Key[(c.Length + 3)..^1], kv => kv.Value);
        Assert.Equal(6, t.Count); Assert.Equal(6, s.Count);
        adapter.CopyFromOfficial(t, s);
        layer.Attach(adapter);
        return (layer, adapter, f[$"{c}.x"], f[$"{c}.y_after_perturb"], f[$"{c}.delta_T_minus_S"]);
    }

    [Theory, MemberData(nameof(Cases))]
    public void DeltaWeightAndForwardMatchTheOfficialLayer(string c)
    {
        TestUtil.Init();
        var f = TestUtil.LoadQuanTAFixture();
        var (layer, adapter, x, y, dw) = Build(f, c);
        using var _ = no_grad();
        double eDw = TestUtil.RelErr(adapter.DeltaWeight(), dw);
        adapter.ComputePath = QuanTAComputePath.Chain;
        double eChain = TestUtil.RelErr(layer.forward(x), y);
        adapter.ComputePath = QuanTAComputePath.Materialize;
        double eMat = TestUtil.RelErr(layer.forward(x), y);
        // the fixture's own identity: y = x W0ᵀ + x ΔWᵀ
        double eIdentity = TestUtil.RelErr(x.matmul(f[$"{c}.W0"].t()) + x.matmul(dw.t()), y);
        output.WriteLine($"{c}: rel err ΔW {eDw:E2}, forward (chain) {eChain:E2}, forward (materialized) {eMat:E2}, fixture identity {eIdentity:E2}");
        Assert.True(eDw <= 1e-5, $"ΔW rel err {eDw}");
        Assert.True(eChain <= 1e-5, $"forward (chain) rel err {eChain}");
        Assert.True(eMat <= 1e-5, $"forward (materialized) rel err {eMat}");
        // the update is not trivially small: ΔW is a sizeable fraction of y
        Assert.True(TestUtil.RelErr(x.matmul(f[$"{c}.W0"].t()), y) > 1e-2);
    }

    [Theory, MemberData(nameof(Cases))]
    public void MergedEqualsUnmergedAndUnmergeRestoresW0Exactly(string c)
    {
        TestUtil.Init();
        var f = TestUtil.LoadQuanTAFixture();
        var (layer, _, x, y, _) = Build(f, c);
        using var _g = no_grad();
        var w0 = layer.weight.detach().clone();
        var yUnmerged = layer.forward(x);
        layer.Merge();
        Assert.True(layer.IsMerged);
        var yMerged = layer.forward(x);
        double e = TestUtil.RelErr(yMerged, yUnmerged);
        output.WriteLine($"{c}: merged vs unmerged rel err {e:E2}; merged vs official {TestUtil.RelErr(yMerged, y):E2}");
        Assert.True(e <= 1e-5, $"merged vs unmerged {e}");
        Assert.False(TestUtil.BitEqual(layer.weight, w0), "merged weight should differ from W0");
        for (int cycle = 0; cycle < 3; cycle++) { layer.Unmerge(); Assert.True(TestUtil.BitEqual(layer.weight, w0)); layer.Merge(); }
        layer.Unmerge();
        Assert.True(TestUtil.BitEqual(layer.weight, w0), "unmerge must restore W0 bit for bit");
    }

    [Fact]
    public void PerPairChainEqualsTheOfficialSingleEinsum()
    {
        TestUtil.Init();
        // official N=4 string, operands in the official order: "-1 -2", "-1 -3", "-1 -4", "-2 -3", "-2 -4", "-3 -4"
        const string official = "...abcd,ghcd,flbh,epal,jkfg,ioek,mnij->...mnop";
        using var adapter = new QuanTAAdapter(96, 96, new AxisLayout([3, 4, 2, 4]), generator: new Generator(3));
        TestUtil.Randomize(adapter);
        using var _ = no_grad();
        var x = randn(5, 96);
        var keys = new[] { "-1 -2", "-1 -3", "-1 -4", "-2 -3", "-2 -4", "-3 -4" };
        Assert.Equal(keys, adapter.Layout.Pairs.Select(p => p.OfficialKey(4)));
        var ops = new List<Tensor> { x.view(5, 3, 4, 2, 4) };
        ops.AddRange(Enumerable.Range(0, 6).Select(adapter.TensorT));
        var yT = einsum(official, [.. ops]).reshape(5, 96);
        var mT = adapter.Operator();                                   // (D, D)
        double e = TestUtil.RelErr(x.matmul(mT.t()), yT);
        output.WriteLine($"per-pair chain vs official einsum: {e:E2}");
        Assert.True(e <= 1e-6);
    }
}
