using QuanTA.Core.Adapters;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Adapters;

/// <summary>Math checks of the QuanTA and LoRA adapters beyond the fixtures: gradients, ranks, compute paths, dtypes, init.</summary>
public class QuanTAAdapterTests(ITestOutputHelper output)
{
    /// <summary>Central finite differences in fp64 on a few entries of every trainable tensor.</summary>
    static void CheckGradients(Adapter adapter, int inF, ITestOutputHelper output, string label)
    {
        adapter.to(ScalarType.Float64);
        using var g = new Generator(11);
        var x = randn([3, 2, inF], dtype: ScalarType.Float64, generator: g);
        var w = randn([3, 2, adapter.OutFeatures], dtype: ScalarType.Float64, generator: g);
        Func<double> loss = () => { using var _ = no_grad(); using var s = NewDisposeScope(); return (adapter.Delta(x) * w).sum().item<double>(); };
        x.requires_grad = true;
        var l = (adapter.Delta(x) * w).sum();
        l.backward();
        using (no_grad())   // the input's gradient is w ΔW (upstream layers depend on it)
            Assert.True(TestUtil.RelErr(x.grad!, w.matmul(adapter.DeltaWeight())) < 1e-10, $"{label}: input gradient");
        x.requires_grad = false;
        const double eps = 1e-6;
        double worst = 0;
        foreach (var (name, p) in adapter.named_parameters())
        {
            var grad = p.grad!.detach().clone().flatten();
            var flat = p.detach().view(-1);
            long n = flat.shape[0];
            foreach (long idx in new[] { 0L, n / 3, n / 2, n - 1 })
            {
                double orig = flat[idx].item<double>();
                using (no_grad()) flat[idx] = orig + eps;
                double lp = loss();
                using (no_grad()) flat[idx] = orig - eps;
                double lm = loss();
                using (no_grad()) flat[idx] = orig;
                double fd = (lp - lm) / (2 * eps), an = grad[idx].item<double>();
                double err = Math.Abs(fd - an) / Math.Max(1e-3, Math.Abs(an));
                worst = Math.Max(worst, err);
                Assert.True(err < 1e-5, $"{label} {name}[{idx}]: autograd {an} vs finite difference {fd}");
            }
        }
        output.WriteLine($"{label}: worst relative gradient error vs finite differences {worst:E2}");
    }

    [Theory]
    [InlineData(QuanTAComputePath.Chain, null)]
    [InlineData(QuanTAComputePath.Materialize, null)]
    [InlineData(QuanTAComputePath.Chain, 3)]
    public void GradientsOfTMatchFiniteDifferences(QuanTAComputePath path, int? rank)
    {
        TestUtil.Init();
        using var a = new QuanTAAdapter(10, 9, new AxisLayout([2, 3, 2]), rank, generator: new Generator(5)) { ComputePath = path };
        TestUtil.Randomize(a);
        CheckGradients(a, 10, output, $"QuanTA {path} rank {rank?.ToString() ?? "full"}");
    }

    [Fact]
    public void LoRAGradientsMatchFiniteDifferences()
    {
        TestUtil.Init();
        using var a = new LoRAAdapter(10, 7, 3, 6, generator: new Generator(5));
        TestUtil.Randomize(a);
        CheckGradients(a, 10, output, "LoRA");
    }

    [Fact]
    public void AtInitTheUpdateIsExactlyZero()
    {
        TestUtil.Init();
        using var q = new QuanTAConfig { Layout = [4, 4, 4, 2], Seed = 1 }.Create(100, 90);
        using var l = new LoRAConfig { Rank = 4, Seed = 1 }.Create(100, 90);
        using var _ = no_grad();
        var x = randn(4, 100);
        foreach (var a in new Adapter[] { q, l })
        {
            Assert.Equal(0.0, a.DeltaWeight().abs().max().item<float>());
            Assert.Equal(0.0, a.Delta(x).abs().max().item<float>());
        }
    }

    [Fact]
    public void InitIsTheOfficialUniformAndSIsAFrozenCopy()
    {
        TestUtil.Init();
        using var a = new QuanTAAdapter(4096, 4096, new AxisLayout([16, 8, 8, 4]), generator: new Generator(2));
        Assert.Equal(43_008, a.TrainableParameterCount);
        for (int i = 0; i < a.Layout.TensorCount; i++)
        {
            var t = a.TensorT(i); double k = a.Layout.TensorSide(i), bound = Math.Sqrt(3 / k);
            Assert.True(t.abs().max().item<float>() <= bound);
            Assert.InRange(t.abs().max().item<float>(), 0.9 * bound, bound);            // spans the interval
            Assert.InRange(t.var().item<float>(), 0.8 / k, 1.2 / k);                    // variance of U(±√(3/k)) is 1/k
            Assert.True(TestUtil.BitEqual(t, a.TensorS(i)));
            Assert.False(a.TensorS(i).requires_grad);
        }
        Assert.Equal(6, a.parameters().Count());
        Assert.Equal(6, a.buffers().Count());
        Assert.Contains("T_0", a.state_dict().Keys); Assert.Contains("S_5", a.state_dict().Keys);
    }

    [Fact]
    public void RandomQuanTAUpdateIsFullRankAndLoRAIsAtMostR()
    {
        TestUtil.Init();
        using var q = new QuanTAAdapter(128, 128, new AxisLayout([4, 4, 4, 2]), generator: new Generator(3));
        using var l = new LoRAAdapter(128, 128, 4, 8, generator: new Generator(3));
        TestUtil.Randomize(q); TestUtil.Randomize(l);
        using var _ = no_grad();
        long rq = MatrixRank.Of(q.DeltaWeight());
        long rl = MatrixRank.Of(l.DeltaWeight());
        var (lo, hi) = q.Layout.RankBounds();
        output.WriteLine($"rank ΔW: QuanTA {rq} (bounds of M_T [{lo},{hi}]), LoRA r=4: {rl}");
        Assert.Equal(128, rq);
        Assert.Equal(4, rl);
        Assert.Equal((128L, 128L), (lo, hi));
        q.to(ScalarType.Float64);                       // a product of 6 random factors is ill-conditioned: measure M_T in fp64
        Assert.Equal(128, MatrixRank.Of(q.Operator()));
        Assert.Equal(128, MatrixRank.Of(q.DeltaWeight()));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void RankOptionFactorsEachTensorAndRespectsTheTheoremBounds(int r)
    {
        TestUtil.Init();
        var layout = new AxisLayout([4, 4, 2]);                                         // k = 16, 8, 8; D = 32
        using var a = new QuanTAAdapter(32, 32, layout, rank: r, generator: new Generator(4));
        Assert.Equal(layout.ParameterCount(r), a.TrainableParameterCount);
        Assert.Equal(3 * 2 * 0 + 2L * 16 * r + 2L * 8 * Math.Min(r, 8) * 2, a.TrainableParameterCount);
        using var _ = no_grad();
        for (int i = 0; i < 3; i++)
        {
            var k = layout.TensorSide(i);
            Assert.Equal(Math.Min(r, k), MatrixRank.Of(a.TensorT(i).reshape(k, k)));
        }
        long rank = MatrixRank.Of(a.Operator());
        var (lo, hi) = layout.RankBounds(r);
        output.WriteLine($"r={r}: rank(M_T) = {rank}, theorem bounds [{lo}, {hi}]");
        Assert.InRange(rank, lo, hi);
        Assert.Equal(Math.Min(r * 32 / 16, r * 32 / 8), hi);                            // min_α R_α·D/k_α
    }

    [Theory]
    [InlineData(100, 90, 3)]
    [InlineData(64, 128, 1)]
    [InlineData(128, 50, 4000)]
    public void ChainAndMaterializedPathsAgree(int inF, int outF, int tokens)
    {
        TestUtil.Init();
        using var a = new QuanTAAdapter(inF, outF, new AxisLayout([4, 4, 4, 2]), generator: new Generator(9));
        TestUtil.Randomize(a, 0.2);
        using var _ = no_grad();
        var x = randn(tokens, inF);
        a.ComputePath = QuanTAComputePath.Chain; var yc = a.Delta(x);
        a.ComputePath = QuanTAComputePath.Materialize; var ym = a.Delta(x);
        a.ComputePath = QuanTAComputePath.Auto; var ya = a.Delta(x);
        double e = TestUtil.RelErr(ym, yc);
        output.WriteLine($"{inF}→{outF}, {tokens} tokens: chain vs materialized rel err {e:E2}");
        Assert.True(e <= 1e-5);
        Assert.True(TestUtil.RelErr(ya, yc) <= 1e-5);
        Assert.Equal(new long[] { tokens, outF }, yc.shape);
    }

    [Fact]
    public void Bf16InputComputesInBf16AndStaysCloseToFp32()
    {
        TestUtil.Init();
        foreach (var a in new Adapter[] { new QuanTAAdapter(96, 80, new AxisLayout([4, 4, 3, 2]), generator: new Generator(1)),
                                          new LoRAAdapter(96, 80, 4, 8, generator: new Generator(1)) })
        {
            TestUtil.Randomize(a, 0.2);
            using var _ = no_grad();
            var x = randn(2, 5, 96);
            var y32 = a.Delta(x);
            var y16 = a.Delta(x.to_type(ScalarType.BFloat16));
            Assert.Equal(ScalarType.BFloat16, y16.dtype);
            Assert.Equal(ScalarType.Float32, a.parameters().First().dtype);            // master params stay fp32
            double e = TestUtil.RelErr(y16, y32);
            output.WriteLine($"{a.Method}: bf16 vs fp32 rel err {e:E2}");
            Assert.True(e < 3e-2, $"{a.Method} bf16 rel err {e}");
            a.Dispose();
        }
    }

    [Fact]
    public void AdaptableLinearInBf16WithQuanTAMergesAndUnmergesExactly()
    {
        TestUtil.Init();
        var layer = new AdaptableLinear(64, 48, hasBias: true, dtype: ScalarType.BFloat16);
        using (no_grad()) { layer.weight.copy_(randn(48, 64)); layer.bias!.copy_(randn(48)); }
        var w0 = layer.weight.detach().clone();
        layer.Attach(new QuanTAConfig { Layout = [4, 4, 4], Seed = 3 }.Create(64, 48));
        TestUtil.Randomize(layer.Adapter!, 0.2);
        using var _ = no_grad();
        var x = randn(3, 64).to_type(ScalarType.BFloat16);
        var y = layer.forward(x);
        layer.Merge(); var ym = layer.forward(x); layer.Unmerge();
        Assert.True(TestUtil.RelErr(ym, y) < 3e-2);
        Assert.True(TestUtil.BitEqual(layer.weight, w0));
    }

    [Fact]
    public void DisposeScopeLoopDoesNotLeakTensors()
    {
        TestUtil.Init();
        using var a = new QuanTAAdapter(64, 64, new AxisLayout([4, 4, 4]), generator: new Generator(1));
        using var l = new LoRAAdapter(64, 64, 4, 8, generator: new Generator(1));
        var x = randn(8, 64);
        void Step()
        {
            using var scope = NewDisposeScope();
            foreach (var p in a.parameters().Concat(l.parameters())) p.grad?.zero_();
            var loss = a.Delta(x).square().mean() + l.Delta(x).square().mean() + a.DeltaWeight().sum() + l.DeltaWeight().sum();
            loss.backward();
        }
        for (int i = 0; i < 3; i++) Step();   // grads allocated
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 30; i++) Step();
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        output.WriteLine($"live tensors before {before}, after 30 steps {after}");
        Assert.Equal(before, after);
    }

    [Fact]
    public void OperatorFollowsTheRowMajorAxisConvention()
    {
        TestUtil.Init();
        using var _ = no_grad();
        // N = 2, one pair: M_T is the tensor itself as a (d0·d1)×(d0·d1) matrix
        using var a2 = new QuanTAAdapter(12, 12, new AxisLayout([3, 4]), generator: new Generator(1));
        Assert.True(TestUtil.RelErr(a2.Operator(), a2.TensorT(0).reshape(12, 12)) < 1e-7);
        // N = 3, pair (1,2) only: I_{d0} ⊗ T;  pair (0,1) only: T ⊗ I_{d2}  (axis 0 most significant)
        using var b = new QuanTAAdapter(24, 24, new AxisLayout([2, 3, 4], [new AxisPair(1, 2)]), generator: new Generator(2));
        Assert.True(TestUtil.RelErr(b.Operator(), kron(eye(2), b.TensorT(0).reshape(12, 12))) < 1e-7);
        using var c = new QuanTAAdapter(24, 24, new AxisLayout([2, 3, 4], [new AxisPair(0, 1)]), generator: new Generator(3));
        Assert.True(TestUtil.RelErr(c.Operator(), kron(c.TensorT(0).reshape(6, 6), eye(4))) < 1e-7);
        // a chain is applied first-pair-first: M = T_2 · T_1
        using var d = new QuanTAAdapter(24, 24, new AxisLayout([2, 3, 4], [new AxisPair(1, 2), new AxisPair(0, 1)]), generator: new Generator(4));
        var m1 = kron(eye(2), d.TensorT(0).reshape(12, 12)); var m2 = kron(d.TensorT(1).reshape(6, 6), eye(4));
        Assert.True(TestUtil.RelErr(d.Operator(), m2.matmul(m1)) < 1e-6);
    }

    [Fact]
    public void DeeperChainsWithRepeatedPairsAreConsistent()
    {
        TestUtil.Init();
        var cfg = new QuanTAConfig { Layout = [4, 4, 2], TensorCount = 7, Seed = 8 };   // 3 pairs, cycled: 7 tensors
        using var a = (QuanTAAdapter)cfg.Create(30, 20);
        Assert.Equal(7, a.Layout.TensorCount);
        Assert.Equal(a.Layout.Pairs[0], a.Layout.Pairs[3]);
        TestUtil.Randomize(a, 0.2);
        using var _ = no_grad();
        var dw = a.DeltaWeight();                                                        // (20, 30)
        var full = (a.Operator() - a.Operator(frozen: true)).narrow(0, 0, 20).narrow(1, 0, 30);
        Assert.True(TestUtil.RelErr(dw, full) < 1e-6);
        var x = randn(6, 30);
        a.ComputePath = QuanTAComputePath.Chain; var yc = a.Delta(x);
        Assert.True(TestUtil.RelErr(yc, x.matmul(dw.t())) < 1e-5);
    }

    [Fact]
    public void MatrixRankCountsSingularValuesAboveTheDtypeTolerance()
    {
        TestUtil.Init();
        Assert.Equal(2, MatrixRank.Of(diag(tensor(new float[] { 1f, 1e-3f, 0f }))));
        Assert.Equal(1, MatrixRank.Of(diag(tensor(new float[] { 1f, 1e-8f, 0f }))));               // below fp32 noise
        Assert.Equal(2, MatrixRank.Of(diag(tensor(new double[] { 1, 1e-8, 0 }))));                  // fp64 resolves it
        Assert.Equal(0, MatrixRank.Of(zeros(4, 5)));
        Assert.Equal(3, MatrixRank.Of(randn(6, 3).matmul(randn(3, 7))));
        Assert.Throws<ArgumentException>(() => MatrixRank.Of(zeros(3)));
    }
}
