using QuanTA.Core.Adapters;
using QuanTA.Core.Runtime;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Core.Tests.Adapters;

/// <summary>
/// The ΔW engine (<see cref="QuanTAChainBlocks.Delta"/>: blocks, Kronecker starts, either orientation, L layers at once) pinned
/// to the adapter's per-pair reference (<see cref="QuanTAAdapter.ReferenceDeltaWeight"/>: the chain applied pair by pair to the
/// D×D identity, then cropped), in values and in gradients, for L = 1 (merge / export / the layerwise step) and L &gt; 1 (the
/// stacked bank).
/// </summary>
public class QuanTAChainEngineTests(ITestOutputHelper output)
{
    static QuanTAChainEngineTests() => TestUtil.Init();

    /// <summary>Layouts with odd and mixed local dims, square / padded-input / narrow-output shapes, repeated and hand-picked
    /// pair chains, and block caps from one pair per block to one block for the whole chain.</summary>
    public static TheoryData<string, int, int, int> Cases => new()
    {
        { "2,3,2", 10, 9, 1024 },            // N = 3, odd dims, out < in, D = 12 pads both
        { "3,5,2", 30, 17, 1024 },           // D = 30 = in: narrow output
        { "3,5,2", 17, 30, 4 },              // padded input, one pair per block
        { "5,3", 15, 15, 1024 },             // N = 2: one tensor, the operator itself
        { "4,2,2,4", 64, 64, 8 },            // square, several blocks: Kronecker start then blocks
        { "4,2,2,4", 64, 64, 16 },           // square, the Kronecker start fused with the next block
        { "3,4,2,4", 96, 50, 32 },           // rows orientation on a narrow output, sliced Kronecker start
        { "2,4,4", 16, 32, 1 },              // cap 1: every pair alone
        { "3,3,3", 27, 20, 9 },
        { "4,4,2|7", 30, 20, 16 },           // 7 tensors: the official pairs cycled (repeats)
        { "2,3,4|(1,2)(0,1)(1,2)(0,2)", 24, 24, 12 },   // a hand-picked chain with a repeated pair
    };

    /// <summary>D = 1296 (the official layout of a 768-wide layer) exceeds the default cap: the default DeltaWeight itself runs
    /// several blocks and a sliced Kronecker start (one layer only: its D×D reference is the slow part).</summary>
    public static TheoryData<string, int, int, int> LargeCase => new() { { "6,6,6,6", 768, 768, QuanTAChainBlocks.DefaultBlockCap } };

    static AxisLayout Layout(string spec)
    {
        var parts = spec.Split('|');
        var dims = parts[0].Split(',').Select(int.Parse).ToArray();
        if (parts.Length == 1) return new AxisLayout(dims);
        if (int.TryParse(parts[1], out var count)) return new AxisLayout(dims, AxisLayout.OfficialPairs(dims.Length, count));
        var pairs = parts[1].Trim('(', ')').Split(")(").Select(p => p.Split(',').Select(int.Parse).ToArray()).Select(p => new AxisPair(p[0], p[1]));
        return new AxisLayout(dims, pairs.ToArray());
    }

    static QuanTAAdapter[] Adapters(AxisLayout layout, int inF, int outF, int count, ScalarType dtype, int? rank = null)
    {
        var adapters = new QuanTAAdapter[count];
        for (int l = 0; l < count; l++)
        {
            adapters[l] = new QuanTAAdapter(inF, outF, layout, rank, generator: new Generator((ulong)(10 + l)));
            TestUtil.Randomize(adapters[l], 0.3, 100 + l);                                   // T ≠ S
            adapters[l].to(dtype);
        }
        return adapters;
    }

    /// <summary>Σ W ⊙ ΔW for a fixed random W: a loss whose gradient w.r.t. ΔW is W, to compare gradients through ΔW.</summary>
    static Tensor Probe(Tensor delta, long seed)
    {
        using var g = new Generator((ulong)seed);
        return (delta * randn(delta.shape, dtype: delta.dtype, generator: g)).sum();
    }

    [Theory, MemberData(nameof(Cases)), MemberData(nameof(LargeCase))]
    public void DeltaWeightEqualsThePerPairReferenceInValuesAndGradients(string spec, int inF, int outF, int cap)
    {
        var layout = Layout(spec);
        foreach (var (dtype, tol) in new[] { (ScalarType.Float32, 1e-6), (ScalarType.Float64, 1e-12) })
            foreach (var rank in new int?[] { null, 2 })
            {
                if (layout.D > QuanTAChainBlocks.DefaultBlockCap && (dtype, rank) != (ScalarType.Float32, null)) continue;   // the large case: fp32, full rank only (time)
                using var scope = NewDisposeScope();
                var a = Adapters(layout, inF, outF, 1, dtype, rank)[0];
                var parameters = a.parameters().ToArray();
                var engine = a.DeltaWeightInBlocks(cap);                                      // L = 1
                var reference = a.ReferenceDeltaWeight();
                Assert.Equal(new long[] { outF, inF }, engine.shape);
                Assert.Equal(dtype, engine.dtype);
                double e = TestUtil.RelErr(engine, reference);
                var gEngine = autograd.grad([Probe(engine, 5)], parameters);
                var gReference = autograd.grad([Probe(reference, 5)], parameters);
                double worst = 0;
                for (int i = 0; i < parameters.Length; i++)
                {
                    Assert.True(gReference[i].abs().max().to_type(ScalarType.Float64).item<double>() > 0, $"{spec} parameter {i} has a zero reference gradient");
                    worst = Math.Max(worst, TestUtil.RelErr(gEngine[i], gReference[i]));
                }
                if (cap == QuanTAChainBlocks.DefaultBlockCap) Assert.True(TestUtil.BitEqual(a.DeltaWeight(), engine));
                output.WriteLine($"[{spec}] {inF}→{outF} cap {cap} {dtype} rank {rank?.ToString() ?? "full"}: ΔW rel err {e:E2}, worst gradient rel err {worst:E2}");
                Assert.True(e < tol, $"[{spec}] {dtype} rank {rank}: ΔW rel err {e}");
                Assert.True(worst < 10 * tol, $"[{spec}] {dtype} rank {rank}: gradient rel err {worst}");
                a.Dispose();
            }
    }

    [Theory, MemberData(nameof(Cases))]
    public void StackedEngineEqualsEachLayersReferenceInBothOrientations(string spec, int inF, int outF, int cap)
    {
        const int L = 3;
        var layout = Layout(spec);
        using var outer = NewDisposeScope();
        var adapters = Adapters(layout, inF, outF, L, ScalarType.Float32);
        // each layer's reference ΔW and its gradient for the probe's slice l (the same W, so it is the stacked gradient's slice l)
        Tensor probeW;
        using (var g = new Generator(6)) probeW = randn([L, outF, inF], generator: g);
        var references = new Tensor[L];
        var referenceGrads = new IList<Tensor>[L];
        for (int l = 0; l < L; l++)
        {
            references[l] = adapters[l].ReferenceDeltaWeight();
            referenceGrads[l] = autograd.grad([(references[l] * probeW[l]).sum()], Enumerable.Range(0, layout.TensorCount).Select(adapters[l].TensorT).ToArray());
        }
        var stackedS = Enumerable.Range(0, layout.TensorCount).Select(i => stack(adapters.Select(a => a.TensorS(i)).ToArray())).ToArray();
        foreach (bool columns in new[] { true, false })
            foreach (bool checkpoint in new[] { false, true })
            {
                using var scope = NewDisposeScope();
                var plan = QuanTAChainBlocks.MakePlan(layout, cap, inF, outF, columns);
                var stackedT = Enumerable.Range(0, layout.TensorCount)
                    .Select(i => stack(adapters.Select(a => a.TensorT(i).detach()).ToArray()).requires_grad_(true)).ToArray();   // (L, d_m, d_n, d_m, d_n)
                var returned = new ReturnedGradients();
                var ops = QuanTAChainBlocks.BlockOperators(plan, stackedT, ScalarType.Float32, CPU, checkpoint ? returned : null);
                Tensor minusS;
                using (no_grad()) minusS = QuanTAChainBlocks.NegatedRaw(plan, QuanTAChainBlocks.BlockOperators(plan, stackedS, ScalarType.Float32, CPU));
                var delta = QuanTAChainBlocks.Delta(plan, ops, () => minusS);                   // (L, out, in)
                Assert.Equal(new long[] { L, outF, inF }, delta.shape);
                var grads = autograd.grad([(delta * probeW).sum()], stackedT);
                returned.ReleaseAll();
                plan.ReleaseCachedIndices();
                double worstValue = 0, worstGrad = 0;
                for (int l = 0; l < L; l++)
                {
                    worstValue = Math.Max(worstValue, TestUtil.RelErr(delta[l], references[l]));
                    for (int i = 0; i < layout.TensorCount; i++) worstGrad = Math.Max(worstGrad, TestUtil.RelErr(grads[i][l], referenceGrads[l][i]));
                }
                output.WriteLine($"[{spec}] {inF}→{outF} cap {cap} {(columns ? "columns" : "rows")}{(checkpoint ? ", checkpointed" : "")}: " +
                                 $"worst ΔW rel err {worstValue:E2}, worst gradient rel err {worstGrad:E2}");
                Assert.True(worstValue < 1e-6, $"[{spec}] columns {columns}: ΔW rel err {worstValue}");
                Assert.True(worstGrad < 1e-5, $"[{spec}] columns {columns}: gradient rel err {worstGrad}");
            }
        foreach (var a in adapters) a.Dispose();
    }

    sealed class Layers : nn.Module<Tensor, Tensor>
    {
        public readonly AdaptableLinear[] Items;
        public Layers(params (int In, int Out)[] shapes) : base("Layers")
        {
            Items = shapes.Select(s => new AdaptableLinear(s.In, s.Out, true)).ToArray();
            for (int i = 0; i < Items.Length; i++) register_module($"l{i}", Items[i]);
        }
        public override Tensor forward(Tensor x) => throw new NotSupportedException();
    }

    [Theory]
    [InlineData(QuanTATrainingPath.Stacked)]
    [InlineData(QuanTATrainingPath.StackedRecompute)]
    [InlineData(QuanTATrainingPath.Layerwise)]
    [InlineData(QuanTATrainingPath.LayerwiseUncached)]
    public void TheBanksPathsGiveTheReferenceWeight(QuanTATrainingPath path)
    {
        bool layerwise = path != QuanTATrainingPath.Stacked;
        // Stacked: each layer's ΔW slice; the others: the layer's output x (W0 + ΔW)ᵀ + b built by its step.
        using var m = new Layers((27, 27), (27, 10), (12, 27), (27, 27));
        using (no_grad()) { using var g = new Generator(3); foreach (var l in m.Items) { l.weight.copy_(randn(l.weight.shape, generator: g)); l.bias!.copy_(randn(l.bias.shape, generator: g)); } }
        AdapterInjector.Inject(m, new QuanTAConfig { Layout = [3, 3, 3], Seed = 4 }, TargetModules.All());
        TestUtil.Randomize(m, 0.3, 12);
        using var bank = QuanTABank.Create(m, path, blockCap: 9, recomputeChunk: 1);
        using var scope = NewDisposeScope();
        bank.Materialize(ScalarType.Float32);
        using var gx = new Generator(8);
        foreach (var l in m.Items)
        {
            var a = (QuanTAAdapter)l.Adapter!;
            var reference = a.ReferenceDeltaWeight();
            double e;
            if (layerwise)
            {
                var x = randn(4, l.InFeatures, generator: gx);
                e = TestUtil.RelErr(l.forward(x), nn.functional.linear(x, l.weight + reference, l.bias));
            }
            else e = TestUtil.RelErr(a.StepDelta!, reference);
            output.WriteLine($"{QuanTATrainingPaths.Name(path)} {l.InFeatures}→{l.OutFeatures}: rel err {e:E2}");
            Assert.True(e < 1e-6, $"{l.InFeatures}->{l.OutFeatures}: {e}");
        }
        bank.Clear();
    }

    [Fact]
    public void PairEquationIsTheOneBuilderAndMatchesTheOfficialSingleEinsum()
    {
        Assert.Equal("zABCD,YZBD->zAYCZ", AxisLayout.PairEquation(4, 1, 3));
        Assert.Equal("lzABC,lYZAB->lzYZC", AxisLayout.PairEquation(3, 0, 1, stacked: true));
        // official N = 3 string, operands in the official order "-1 -2", "-1 -3", "-2 -3" (quanta/tuners/quanta.py)
        const string official = "...abc,efbc,diaf,ghde->...ghi";
        using var adapter = new QuanTAAdapter(30, 30, new AxisLayout([2, 5, 3]), generator: new Generator(3));
        TestUtil.Randomize(adapter);
        using var _ = no_grad();
        var x = randn(4, 30);
        var yT = einsum(official, [x.view(4, 2, 5, 3), .. Enumerable.Range(0, 3).Select(adapter.TensorT)]).reshape(4, 30);
        var ours = x.matmul(adapter.Operator().t());                                      // the per-pair chain on the identity
        adapter.ComputePath = QuanTAComputePath.Chain;                                    // and on the tokens
        Assert.True(TestUtil.RelErr(ours, yT) < 1e-6, $"operator: {TestUtil.RelErr(ours, yT)}");
        var yS = einsum(official, [x.view(4, 2, 5, 3), .. Enumerable.Range(0, 3).Select(adapter.TensorS)]).reshape(4, 30);
        Assert.True(TestUtil.RelErr(adapter.Delta(x), yT - yS) < 1e-5, $"chain forward: {TestUtil.RelErr(adapter.Delta(x), yT - yS)}");
    }
}
