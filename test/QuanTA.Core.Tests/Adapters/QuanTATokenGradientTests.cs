using QuanTA.Core.Adapters;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Adapters;

/// <summary>∂L/∂R_B from the tokens (<see cref="QuanTAChainBlocks.TokenGradients"/>) against autograd through crop(M); the
/// route choice; the sliced Kronecker start's cached indices.</summary>
public class QuanTATokenGradientTests
{
    /// <summary>One layer's block operators (from random pair tensors), an input (rows, in) and an output gradient (rows, out).</summary>
    static (Tensor[] Ops, Tensor X, Tensor Dy) RandomLayer(QuanTAChainBlocks.ChainPlan plan, int rows, ulong seed)
    {
        var lay = plan.Layout;
        using var g = new Generator(seed);
        var pairs = Enumerable.Range(0, lay.TensorCount).Select(i => randn([1, .. lay.TensorShape(i)], generator: g).mul_(0.4)).ToArray();
        var ops = QuanTAChainBlocks.BlockOperators(plan, pairs, ScalarType.Float32, CPU).Select(o => o.squeeze(0).detach()).ToArray();
        return (ops, randn(rows, plan.In, generator: g), randn(rows, plan.Out, generator: g));
    }

    [Theory]
    [InlineData(64, 64, 16, true)]     // square, several blocks, columns
    [InlineData(64, 64, 16, false)]    // square, rows (ops transposed and reversed on the tokens)
    [InlineData(64, 16, 16, null)]     // out < D: the output gradient is padded
    [InlineData(40, 64, 16, null)]     // in < D: the input is padded
    [InlineData(64, 64, 1024, null)]   // one block
    [InlineData(64, 64, 4, null)]      // one pair per block
    public void TokenGradientsEqualAutogradThroughTheCroppedOperator(int inF, int outF, int cap, bool? columns)
    {
        var plan = QuanTAChainBlocks.MakePlan(new AxisLayout([4, 2, 2, 4]), cap, inF, outF, columns);
        using var scope = NewDisposeScope();
        var (ops, x, dy) = RandomLayer(plan, rows: 7, seed: 31);

        var leaves = ops.Select(o => o.clone().requires_grad_(true)).ToArray();
        var m = QuanTAChainBlocks.ApplyPlan(plan, leaves.Select(o => o.unsqueeze(0)).ToArray()).squeeze(0);   // crop(M) (out, in)
        var expected = autograd.grad([x.mm(m.t()).mul(dy).sum()], leaves);                                     // ∂⟨dy, x crop(M)ᵀ⟩/∂R_B

        Tensor[] actual;
        using (no_grad()) actual = QuanTAChainBlocks.TokenGradients(plan, ops, x, dy);
        Assert.Equal(ops.Length, actual.Length);
        for (int b = 0; b < ops.Length; b++)
        {
            Assert.Equal(ops[b].shape, actual[b].shape);
            Assert.True(expected[b].abs().max().item<float>() > 0, $"block {b} has a zero gradient");
            Assert.True(TestUtil.RelErr(actual[b], expected[b]) < 1e-5, $"block {b}: {TestUtil.RelErr(actual[b], expected[b])}");
        }
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(64, 16)]
    public void TokenGradientsInBFloat16StayCloseToFloat32(int inF, int outF)
    {
        // On the GPU the route runs in the compute dtype (bf16): same gradients as fp32 within bf16 rounding (8 bits).
        var plan = QuanTAChainBlocks.MakePlan(new AxisLayout([4, 2, 2, 4]), 16, inF, outF);
        using var scope = NewDisposeScope();
        var (ops, x, dy) = RandomLayer(plan, rows: 33, seed: 32);
        Tensor[] full, half;
        using (no_grad())
        {
            full = QuanTAChainBlocks.TokenGradients(plan, ops, x, dy);
            half = QuanTAChainBlocks.TokenGradients(plan, ops.Select(o => o.to_type(ScalarType.BFloat16)).ToArray(),
                x.to_type(ScalarType.BFloat16), dy.to_type(ScalarType.BFloat16));
        }
        for (int b = 0; b < ops.Length; b++)
        {
            Assert.Equal(ScalarType.BFloat16, half[b].dtype);
            double err = TestUtil.RelErr(half[b].to_type(ScalarType.Float32), full[b]);
            Assert.True(err < 0.03, $"block {b}: {err}");
        }
    }

    [Fact]
    public void EachLayerTakesTheRouteWithFewerMultiplyAdds()
    {
        // LLaMA-7B q/v, 4 × 512 tokens: the token route (tokens·D·ΣK) beats gᵀx (tokens·D²) plus the chain over D×D.
        var paper = new AxisLayout([16, 8, 8, 4]);
        Assert.True(QuanTAChainBlocks.TokenGradientsCheaper(QuanTAChainBlocks.MakePlan(paper, 1024, 4096, 4096), 2048));
        // TinyLlama: q_proj (square) takes the token route; v_proj (2048 → 256) the ΔW route, whose chain runs on 256 rows only.
        var tiny = new AxisLayout([16, 8, 4, 4]);
        Assert.True(QuanTAChainBlocks.TokenGradientsCheaper(QuanTAChainBlocks.MakePlan(tiny, 1024, 2048, 2048), 4096));
        Assert.False(QuanTAChainBlocks.TokenGradientsCheaper(QuanTAChainBlocks.MakePlan(tiny, 1024, 2048, 256), 4096));
        // A small square layer in three blocks (K = 8, 8, 16; the rows plan applies the 16-block first, as its Kronecker
        // start): tokens·32·(3·32 − 16 − 8) against tokens·32² + 2·32·32·16, so few tokens → token route, many → ΔW route.
        var small = new AxisLayout([2, 4, 4]);
        var plan = QuanTAChainBlocks.MakePlan(small, 8, 32, 32);
        Assert.Equal([16L, 8, 8], plan.BlockSizes);
        Assert.True(QuanTAChainBlocks.TokenGradientsCheaper(plan, 5));
        Assert.False(QuanTAChainBlocks.TokenGradientsCheaper(plan, 5000));
        // Between the two: when ΔW is built anyway for ∂L/∂x the ΔW route shares it (2 chain passes), else it pays 3.
        // 30 tokens: token 30·32·72 = 69,120; ΔW 30·32² + 2·32·32·16 = 63,488 (shared) or 79,872 (not).
        Assert.False(QuanTAChainBlocks.TokenGradientsCheaper(plan, 30, rebuildsDelta: true));
        Assert.True(QuanTAChainBlocks.TokenGradientsCheaper(plan, 30, rebuildsDelta: false));
        // One block: the Kronecker start is the whole chain, so the ΔW route costs only gᵀx — a tie with the token route,
        // which goes to ΔW.
        Assert.False(QuanTAChainBlocks.TokenGradientsCheaper(QuanTAChainBlocks.MakePlan(small, 1024, 32, 32), 5));
    }

    [Fact]
    public void TheSlicedStartsIndicesAreCachedPerPlanAndShapeAndFreedOnRelease()
    {
        // 16 → 32 with D = 32: the columns run on 16 basis vectors, so the first block is a sliced Kronecker start.
        var lay = new AxisLayout([2, 4, 4]);
        var plan = QuanTAChainBlocks.MakePlan(lay, 8, 16, 32, columnsOverride: true);
        Assert.False(plan.Kronecker);
        var first = plan.StartIndex(CPU);
        Assert.Same(first.RowIndex, plan.StartIndex(CPU).RowIndex);                      // made once
        Assert.Equal(16, first.RowIndex.shape[0]);
        var narrower = plan with { In = 8 };                                             // a copy shares the cache, not its entries
        Assert.Equal(8, narrower.StartIndex(CPU).RowIndex.shape[0]);
        Assert.Equal(16, plan.StartIndex(CPU).RowIndex.shape[0]);
        var (_, positions) = QuanTAChainBlocks.StartIndices(lay, plan.Blocks[plan.Order[0]].Axes, 16);
        Assert.Equal(positions.Length, positions.Distinct().Count());                    // no two entries written to one place
        Assert.All(positions.Select((p, i) => (p, row: i / (positions.Length / 16))), x => Assert.InRange(x.p, x.row * 32L, x.row * 32L + 31));
        plan.ReleaseCachedIndices();                                                     // what the bank's Dispose calls
        Assert.True(first.RowIndex.IsInvalid && first.Positions.IsInvalid);
    }
}
