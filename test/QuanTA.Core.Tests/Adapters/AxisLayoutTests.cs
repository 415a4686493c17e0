using QuanTA.Core.Adapters;

namespace QuanTA.Core.Tests.Adapters;

public class AxisLayoutTests
{
    [Theory]
    [InlineData(new[] { 16, 8, 8, 4 }, 43_008)]   // the paper's LLaMA-7B layout
    [InlineData(new[] { 4, 4, 4, 2 }, 960)]
    [InlineData(new[] { 16, 8, 4, 4 }, 26_880)]
    public void ParameterCountIsTheSumOfSquaredPairSizes(int[] dims, long expected)
    {
        Assert.Equal(expected, new AxisLayout(dims).ParameterCount());
        TestUtil.Init();
        using var a = new QuanTAConfig { Layout = dims }.Create(new AxisLayout(dims).D, new AxisLayout(dims).D);
        Assert.Equal(expected, a.TrainableParameterCount);
    }

    [Fact]
    public void OfficialPairOrderAndKeys()
    {
        var pairs = AxisLayout.OfficialPairs(4);
        Assert.Equal(new AxisPair[] { new(2, 3), new(1, 3), new(0, 3), new(1, 2), new(0, 2), new(0, 1) }, pairs);
        Assert.Equal(new[] { "-1 -2", "-1 -3", "-1 -4", "-2 -3", "-2 -4", "-3 -4" }, pairs.Select(p => p.OfficialKey(4)));
        Assert.Equal(new AxisPair(1, 3), AxisPair.FromOfficialKey("-1 -3", 4));
        Assert.Equal(new AxisPair[] { new(1, 2), new(0, 2), new(0, 1) }, AxisLayout.OfficialPairs(3));
        Assert.Equal(new AxisPair[] { new(0, 1) }, AxisLayout.OfficialPairs(2));
        Assert.Throws<FormatException>(() => AxisPair.FromOfficialKey("1 2", 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => AxisPair.FromOfficialKey("-1 -5", 4));
    }

    [Fact]
    public void TensorCountTakesTheFirstPairsAndCyclesForDeeperChains()
    {
        Assert.Equal(new AxisPair[] { new(2, 3), new(1, 3) }, AxisLayout.OfficialPairs(4, 2));
        var deep = AxisLayout.OfficialPairs(4, 8);
        Assert.Equal(8, deep.Length);
        Assert.Equal(new AxisPair(2, 3), deep[6]); Assert.Equal(new AxisPair(1, 3), deep[7]);
        var l = new QuanTAConfig { Layout = [4, 4, 4, 2], TensorCount = 8 }.ResolveLayout(128, 128);
        Assert.Equal(8, l.TensorCount);
        Assert.Equal(960 + 64 + 64, l.ParameterCount());
        var custom = new QuanTAConfig { Layout = [4, 4, 4, 2], Pairs = [new(0, 1), new(0, 1), new(2, 3)] }.ResolveLayout(128, 128);
        Assert.Equal(new AxisPair[] { new(0, 1), new(0, 1), new(2, 3) }, custom.Pairs);
    }

    [Theory]
    [InlineData(4096, 4096, 4, 8)]       // 4096^(1/4) = 8 exactly, not 9 from round-off
    [InlineData(4097, 100, 4, 9)]
    [InlineData(11008, 4096, 4, 11)]     // ceil(11008^(1/4)) = ceil(10.24) = 11
    [InlineData(4096, 1024, 3, 16)]
    [InlineData(128, 64, 2, 12)]         // ceil(sqrt(128)) = 12
    [InlineData(1000, 1000, 3, 10)]      // 10³ = 1000 exactly
    [InlineData(1, 1, 4, 1)]
    public void DefaultLayoutIsIntegerExactCeilRoot(int inF, int outF, int n, int d)
    {
        var l = AxisLayout.Derive(inF, outF, n);
        Assert.Equal(Enumerable.Repeat(d, n), l.Dims);
        Assert.True(l.D >= Math.Max(inF, outF));
        Assert.Equal(n * (n - 1) / 2, l.TensorCount);
        var cfg = new QuanTAConfig { AxisCount = n }.ResolveLayout(inF, outF);
        Assert.Equal(l.Dims, cfg.Dims);
    }

    [Fact]
    public void ValidationErrorsAreClear()
    {
        var e1 = Assert.Throws<ArgumentException>(() => new AxisLayout([64]));
        Assert.Contains("N ≥ 2", e1.Message);
        var e2 = Assert.Throws<ArgumentException>(() => new AxisLayout([4, 0, 4]));
        Assert.Contains("Axis 1", e2.Message); Assert.Contains("positive", e2.Message);
        Assert.Throws<ArgumentException>(() => new AxisLayout([4, -2]));
        var e3 = Assert.Throws<ArgumentException>(() => new QuanTAConfig { Layout = [4, 4, 4] }.ResolveLayout(128, 100, "model.layers.0.self_attn.q_proj"));
        Assert.Contains("D = 64", e3.Message); Assert.Contains("128→100", e3.Message); Assert.Contains("q_proj", e3.Message);
        var e4 = Assert.Throws<ArgumentOutOfRangeException>(() => new AxisLayout([4, 4, 4], [new AxisPair(1, 3)]));
        Assert.Contains("(1,3)", e4.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new AxisLayout([4, 4, 4], [new AxisPair(2, 1)]));
        Assert.Throws<ArgumentException>(() => new QuanTAConfig { AxisCount = 1 }.ResolveLayout(10, 10));
        Assert.Throws<ArgumentException>(() => new QuanTAConfig { Rank = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new QuanTAConfig { TensorCount = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new QuanTAConfig { Dropout = 1.0 }.Validate());
        Assert.Throws<ArgumentException>(() => new LoRAConfig { Rank = 0 }.Validate());
    }

    [Fact]
    public void RankBoundsFollowTheTheorem()
    {
        var l = new AxisLayout([16, 8, 8, 4]);
        Assert.Equal((4096L, 4096L), l.RankBounds());                 // full-rank tensors → full-rank operator
        // rank 8 per tensor: R_α·D/k_α with k = 32, 64, 64, 128, 128, 128 → 1024, 512, 512, 256, 256, 256
        Assert.Equal((0L, 256L), l.RankBounds(8));
        var two = new AxisLayout([8, 8]);                             // one tensor on everything: rank = r exactly
        Assert.Equal((5L, 5L), two.RankBounds(5));
        var l3 = new AxisLayout([4, 4, 2]);                           // pairs (1,2), (0,2), (0,1): k = 8, 8, 16; D = 32
        // R = 7 each: R·D/k = 28, 28, 14 → lower 28+28+14 − 2·32 = 6, upper min = 14
        Assert.Equal((6L, 14L), l3.RankBounds(7));
    }
}
