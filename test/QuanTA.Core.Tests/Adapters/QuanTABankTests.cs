using QuanTA.Core.Runtime;
using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Core.Tests.Adapters;

/// <summary>The fused all-layers materialization (GPU fast path) computes exactly what each adapter computes alone.</summary>
public class QuanTABankTests
{
    static QuanTABankTests() => TestUtil.Init();

    sealed class Stack : nn.Module<Tensor, Tensor>
    {
        public readonly AdaptableLinear[] Layers;
        public Stack(params (int In, int Out)[] shapes) : base("Stack")
        {
            Layers = shapes.Select(s => new AdaptableLinear(s.In, s.Out, true)).ToArray();
            for (int i = 0; i < Layers.Length; i++) register_module($"l{i}", Layers[i]);
        }
        public override Tensor forward(Tensor x) => throw new NotSupportedException();
    }

    static Stack Build()
    {
        // square, out < in (GQA-like: transposed chain), in < out (padded input), and a second square layer in the same group
        var m = new Stack((32, 32), (32, 8), (16, 32), (32, 32));
        using (no_grad()) { using var g = new Generator(3); foreach (var l in m.Layers) { l.weight.copy_(randn(l.weight.shape, generator: g)); l.bias!.copy_(randn(l.bias.shape, generator: g)); } }
        AdapterInjector.Inject(m, new QuanTAConfig { Layout = [2, 4, 4], Seed = 5 }, TargetModules.All());
        TestUtil.Randomize(m, 0.3, 11); // T ≠ S
        return m;
    }

    [Fact]
    public void BankDeltaEqualsEachAdaptersDeltaWeight()
    {
        using var m = Build();
        using var bank = QuanTABank.Create(m);
        Assert.Equal(4, bank.AdapterCount);
        Assert.Equal(3, bank.GroupCount);
        using var scope = NewDisposeScope();
        bank.Materialize(ScalarType.Float32);
        foreach (var l in m.Layers)
        {
            var a = (QuanTAAdapter)l.Adapter!;
            Assert.True(TestUtil.RelErr(a.StepDelta!, a.DeltaWeight()) < 1e-6, $"{l.InFeatures}->{l.OutFeatures}");
        }
        bank.Clear();
        Assert.All(m.Layers, l => Assert.Null(l.Adapter!.StepDelta));
    }

    [Fact]
    public void TheFrozenChainOfManyLayersIsBuiltInBatchesWithoutChangingAnyDelta()
    {
        // 19 layers of one shape: one group whose cached S chain is built in batches of 8, 8 and 3 layers
        int n = 2 * QuanTABank.FrozenChainLayersPerBatch + 3;
        using var m = new Stack(Enumerable.Repeat((32, 32), n).ToArray());
        using (no_grad()) { using var g = new Generator(4); foreach (var l in m.Layers) l.weight.copy_(randn(l.weight.shape, generator: g)); }
        AdapterInjector.Inject(m, new QuanTAConfig { Layout = [2, 4, 4], Seed = 6 }, TargetModules.All());
        TestUtil.Randomize(m, 0.3, 12);
        using var bank = QuanTABank.Create(m, QuanTATrainingPath.Layerwise);
        Assert.Equal(1, bank.GroupCount);
        using var scope = NewDisposeScope();
        bank.Materialize(ScalarType.Float32);
        foreach (var (l, i) in m.Layers.Select((l, i) => (l, i)))
        {
            var a = (QuanTAAdapter)l.Adapter!;
            var step = (QuanTALayerwiseStep)a.StepLinear!;                                  // reads layer i's slice of the cache
            Assert.True(TestUtil.RelErr(step.Delta([.. step.Inputs]), a.DeltaWeight()) < 1e-6, $"layer {i}");
        }
        bank.Clear();
    }

    [Fact]
    public void FusedForwardAndGradientsMatchThePerLayerPath()
    {
        using var m = Build();
        using var bank = QuanTABank.Create(m);
        using var g = new Generator(9);
        var xs = m.Layers.Select(l => randn(5, l.InFeatures, generator: g)).ToArray();
        var adapters = m.Layers.Select(l => (QuanTAAdapter)l.Adapter!).ToArray();
        int nT = adapters[0].Layout.TensorCount;

        // Per-layer path: gradients land on each adapter's own T_i.
        Tensor lossPlain;
        using (var s1 = NewDisposeScope())
        {
            var loss = m.Layers.Select((l, i) => l.forward(xs[i]).pow(2).sum()).Aggregate((a, b) => a + b);
            loss.backward();
            lossPlain = loss.detach().clone().DetachFromDisposeScope();
        }
        var plainGrads = adapters.Select(a => Enumerable.Range(0, nT).Select(i => a.TensorT(i).grad!.clone()).ToArray()).ToArray();

        // Fused path: gradients land on the bank's stacked parameters; slice l of group g = layer l of that group.
        using (var s2 = NewDisposeScope())
        {
            bank.Materialize(ScalarType.Float32);
            var deltas = adapters.Select(a => a.StepDelta!).ToArray();
            var loss = m.Layers.Select((l, i) => l.forward(xs[i]).pow(2).sum()).Aggregate((a, b) => a + b);
            // Each layer used its ΔW once and let go of it, so the stacked ΔW is not held through the backward pass.
            Assert.All(adapters, a => Assert.Null(a.StepDelta));
            Assert.All(deltas, d => Assert.True(d.IsInvalid));
            loss.backward();
            bank.Clear();
            Assert.True(TestUtil.RelErr(loss, lossPlain) < 1e-6);
        }
        var stacked = bank.OptimizerParameters(m).Where(p => p.Name.StartsWith("quanta_bank")).Select(p => p.Parameter).ToArray();
        Assert.Equal(3 * nT, stacked.Length);
        // Layers 0 and 3 share group 0 (32→32), layer 1 is group 1 (32→8), layer 2 group 2 (16→32).
        (int Group, int Slice)[] where = [(0, 0), (1, 0), (2, 0), (0, 1)];
        for (int l = 0; l < adapters.Length; l++)
            for (int i = 0; i < nT; i++)
            {
                var fused = stacked[where[l].Group * nT + i].grad![where[l].Slice];
                Assert.True(TestUtil.RelErr(fused, plainGrads[l][i]) < 1e-5, $"layer {l} tensor {i}");
            }
        // Only the stacked tensors (not the adapters' aliased T_i) are handed to the optimizer.
        Assert.Equal(stacked.Length, bank.OptimizerParameters(m).Count);
    }

    [Fact]
    public void StackedPathRefusesASecondForwardWithoutMaterialize()
    {
        // Each layer uses its ΔW once; a second backpropagated forward in the same micro-batch would silently train the
        // adapters' own tensors instead of the bank's, so it is refused with a message that says what to do.
        using var m = Build();
        using var bank = QuanTABank.Create(m);
        using var scope = NewDisposeScope();
        var x = randn(3, 32);
        bank.Materialize(ScalarType.Float32);
        using (no_grad()) m.Layers[0].forward(x);                                             // a forward without a graph leaves ΔW
        Assert.NotNull(m.Layers[0].Adapter!.StepDelta);
        m.Layers[0].forward(x).sum().backward();
        var e = Assert.Throws<InvalidOperationException>(() => m.Layers[0].forward(x));
        Assert.Contains("Materialize", e.Message);
        using (no_grad()) Assert.Equal(new long[] { 3, 32 }, m.Layers[0].forward(x).shape);   // evaluation without a graph is fine
        bank.Materialize(ScalarType.Float32);                                                 // and the next micro-batch is too
        m.Layers[0].forward(x).sum().backward();
        bank.Clear();
        m.Layers[0].forward(x).sum().backward();                                              // after Clear: the layer's own path
    }

    [Fact]
    public void StackedRecomputeRefusesASecondForwardAndReportsABackwardThatMissedALayerOfAChunk()
    {
        using var m = Build();                                                   // group 0: layers 0 and 3, one chunk of two
        using var bank = QuanTABank.Create(m, QuanTATrainingPath.StackedRecompute, recomputeChunk: 2);
        using var scope = NewDisposeScope();
        using var gen = new Generator(8);
        var x = randn(3, 32, generator: gen);
        bank.Materialize(ScalarType.Float32);
        Tensor expected;
        using (no_grad()) expected = m.Layers[0].forward(x);                     // evaluation without a graph: the merged weight
        var y0 = m.Layers[0].forward(x);
        Assert.True(TestUtil.RelErr(y0, expected) < 1e-6);
        Assert.Contains("Materialize", Assert.Throws<InvalidOperationException>(() => m.Layers[0].forward(x)).Message);
        var y3 = m.Layers[3].forward(x);
        y0.sum().backward();                                                     // layer 3's output never reaches a loss
        var before = Assert.Throws<InvalidOperationException>(bank.CheckBackwardComplete);   // before the optimizer step
        Assert.Contains("1 of the 2 layers", before.Message);
        bank.Clear();
        bank.Materialize(ScalarType.Float32);                                    // reported once: the next micro-batch runs
        y0 = m.Layers[0].forward(x);
        m.Layers[3].forward(x);
        y0.sum().backward();                                                     // again, and this time nobody checks before Clear
        bank.Clear();
        var e = Assert.Throws<InvalidOperationException>(() => bank.Materialize(ScalarType.Float32));
        Assert.Contains("1 of the 2 layers", e.Message);
        Assert.Contains("--training-path stacked", e.Message);
        bank.Materialize(ScalarType.Float32);                                    // reported once; the next micro-batch runs
        (m.Layers[0].forward(x).sum() + m.Layers[3].forward(x).sum()).backward();
        bank.CheckBackwardComplete();                                            // complete: nothing to report
        Assert.All(bank.Parameters.Take(3), p => Assert.True(p.grad is not null));            // group 0 (layers 0 and 3) has 3 tensors
        using (no_grad()) Assert.False(((QuanTARecomputeStep)m.Layers[0].Adapter!.StepLinear!).IsLive);   // released after its backward
        bank.Clear();
        bank.Materialize(ScalarType.Float32);                                    // a complete backward leaves nothing to report
        bank.Clear();
    }

    [Fact]
    public void SeveralIncompleteChunksOfOneBackwardAreReportedOnce()
    {
        using var m = new Stack(Enumerable.Repeat((32, 32), 4).ToArray());   // one group, chunks {0, 1} and {2, 3}
        AdapterInjector.Inject(m, new QuanTAConfig { Layout = [2, 4, 4], Seed = 5 }, TargetModules.All());
        using var bank = QuanTABank.Create(m, QuanTATrainingPath.StackedRecompute, recomputeChunk: 2);
        using var scope = NewDisposeScope();
        using var gen = new Generator(14);
        var x = randn(3, 32, generator: gen);
        bank.Materialize(ScalarType.Float32);
        var y0 = m.Layers[0].forward(x); m.Layers[1].forward(x);
        var y2 = m.Layers[2].forward(x); m.Layers[3].forward(x);
        (y0.sum() + y2.sum()).backward();                                        // each chunk gets 1 of its 2 layers
        Assert.Contains("2 chunks are incomplete", Assert.Throws<InvalidOperationException>(bank.CheckBackwardComplete).Message);
        bank.CheckBackwardComplete();                                            // reported: not again
        bank.Clear();
        bank.Materialize(ScalarType.Float32);                                    // nor by the next micro-batch
        bank.Clear();
    }

    [Fact]
    public void StackedRecomputeRefusesAForwardAfterItsChunksBackwardAndFreesTheMergedWeight()
    {
        // Once a chunk's backward released it, a backpropagated forward of its layer is refused (as on the stacked path), not sent
        // down the layer's own path, whose tensors the bank's optimizer never sees; and W0 + ΔW is not kept alive by any view.
        using var m = Build();
        using var bank = QuanTABank.Create(m, QuanTATrainingPath.StackedRecompute, recomputeChunk: 1);
        using var scope = NewDisposeScope();
        using var gen = new Generator(9);
        var x = randn(3, 32, generator: gen);
        bank.Materialize(ScalarType.Float32);
        int before = scope.DisposablesCount;
        m.Layers[1].forward(x).sum().backward();                                  // group 1: one layer, one chunk, released now
        var merged = scope.DisposablesView.Skip(before).OfType<Tensor>()
            .Where(t => !t.IsInvalid && t.shape.SequenceEqual(new long[] { 8, 32 }) && !t.requires_grad).ToList();
        Assert.Empty(merged);                                                     // no (out, in) view of W0 + ΔW survives the chunk
        Assert.Contains("Materialize", Assert.Throws<InvalidOperationException>(() => m.Layers[1].forward(x)).Message);
        Assert.Null(((QuanTAAdapter)m.Layers[1].Adapter!).TensorT(0).grad);      // nothing went to the adapter's own tensors
        using (no_grad()) Assert.Equal(new long[] { 3, 8 }, m.Layers[1].forward(x).shape);   // evaluation takes the layer's own path
        bank.Clear();
    }

    [Theory]
    [InlineData(QuanTATrainingPath.Stacked)]
    [InlineData(QuanTATrainingPath.StackedRecompute)]
    public void AnFp32BaseTrainedInBFloat16PromotesLikeTheStackedPath(QuanTATrainingPath path)
    {
        using var m = Build();                                                    // fp32 weights
        using var bank = QuanTABank.Create(m, path, recomputeChunk: 1);           // layer 0's chunk completes with its own backward
        using var scope = NewDisposeScope();
        using var gen = new Generator(10);
        var x = randn(3, 32, generator: gen);
        bank.Materialize(ScalarType.BFloat16);
        var y = m.Layers[0].forward(x);
        Assert.Equal(ScalarType.Float32, y.dtype);                                // fp32 W0 + bf16 ΔW runs in fp32
        y.sum().backward();
        Assert.True(bank.Parameters.First().grad!.abs().max().item<float>() > 0);
        bank.Clear();
    }

    [Theory]
    [InlineData(QuanTATrainingPath.StackedRecompute, 1024, 5, 1)]   // one layer per chunk
    [InlineData(QuanTATrainingPath.StackedRecompute, 1024, 5, 2)]   // group 0's two layers in one chunk (the first finishes its backward last)
    [InlineData(QuanTATrainingPath.StackedRecompute, 8, 200, 4)]    // several blocks; a chunk larger than any group
    [InlineData(QuanTATrainingPath.Layerwise, 1024, 5)]
    [InlineData(QuanTATrainingPath.LayerwiseUncached, 1024, 5)]
    [InlineData(QuanTATrainingPath.Layerwise, 8, 5)]      // one pair per block: several blocks, so the token gradients run through a chain
    [InlineData(QuanTATrainingPath.LayerwiseUncached, 16, 5)]
    [InlineData(QuanTATrainingPath.Layerwise, 8, 200)]    // many tokens: the layers take the ΔW route (gᵀx, then the chain's backward)
    [InlineData(QuanTATrainingPath.LayerwiseUncached, 8, 200)]
    public void FusedPathsGiveTheSameLossAndGradientsAsTheStackedGraph(QuanTATrainingPath layerwisePath, int blockCap, int rows, int chunk = 4)
    {
        // Two micro-batches; layer 1 takes layer 0's output (its input needs a gradient), the others take plain inputs.
        using var g = new Generator(21);
        var xs = Enumerable.Range(0, 2).Select(_ => new[] { randn(rows, 32, generator: g), randn(rows, 32, generator: g), randn(rows, 16, generator: g) }).ToArray();
        (double Loss, Tensor[] Grads, Tensor InputGrad) Run(QuanTATrainingPath path)
        {
            bool layerwise = path != QuanTATrainingPath.Stacked;
            using var m = Build();
            using var bank = QuanTABank.Create(m, path, blockCap: blockCap, recomputeChunk: chunk);
            var plan = QuanTAChainBlocks.MakePlan(new AxisLayout([2, 4, 4]), blockCap, 32, 32);
            // which route the square layers take: from the tokens with several blocks and few tokens, else through ΔW
            Assert.Equal(blockCap < 32 && rows < 20, QuanTAChainBlocks.TokenGradientsCheaper(plan, rows));
            Assert.Equal(path, bank.Path);
            Assert.Equal(path is QuanTATrainingPath.Stacked or QuanTATrainingPath.Layerwise, bank.CachesFrozenOperator);
            double total = 0;
            var input0 = xs[0][0].clone().requires_grad_(true);
            foreach (var micro in xs)
            {
                using var scope = NewDisposeScope();
                bank.Materialize(ScalarType.Float32);
                Assert.All(m.Layers, l => Assert.Equal(layerwise, l.Adapter!.StepDelta is null));   // no stacked ΔW slice on the other paths
                var x0 = micro == xs[0] ? input0 : micro[0];
                var h = m.Layers[0].forward(x0);                                  // 32 → 32
                var loss = m.Layers[1].forward(h.tanh()).pow(2).sum()             // 32 → 8 (transposed chain), input needs a gradient
                         + m.Layers[2].forward(micro[2]).pow(2).sum()             // 16 → 32 (padded input)
                         + m.Layers[3].forward(micro[1]).sin().sum();             // 32 → 32, second layer of group 0
                loss.div(2).backward();
                total += loss.item<float>();
            }
            bank.Clear();
            Assert.All(m.Layers, l => Assert.Null(l.Adapter!.StepLinear));
            return (total, bank.Parameters.Select(p => p.grad!.clone().DetachFromDisposeScope()).ToArray(), input0.grad!.clone().DetachFromDisposeScope());
        }
        var stacked = Run(QuanTATrainingPath.Stacked);
        var lean = Run(layerwisePath);
        Assert.Equal(stacked.Loss, lean.Loss, 4);
        Assert.True(TestUtil.RelErr(lean.InputGrad, stacked.InputGrad) < 1e-5, $"input gradient: {TestUtil.RelErr(lean.InputGrad, stacked.InputGrad)}");
        Assert.Equal(stacked.Grads.Length, lean.Grads.Length);
        for (int i = 0; i < stacked.Grads.Length; i++)
        {
            Assert.True(stacked.Grads[i].abs().max().item<float>() > 0, $"stacked tensor {i} has a zero gradient");
            Assert.True(TestUtil.RelErr(lean.Grads[i], stacked.Grads[i]) < 1e-5, $"stacked tensor {i}: {TestUtil.RelErr(lean.Grads[i], stacked.Grads[i])}");
        }
    }

    [Theory]
    [InlineData(3, QuanTATrainingPath.Layerwise)]
    [InlineData(200, QuanTATrainingPath.Layerwise)]  // many tokens: the ΔW route
    [InlineData(3, QuanTATrainingPath.StackedRecompute)]
    public void CustomBackwardStepsLeaveNoTensorsBehind(int rows, QuanTATrainingPath path)
    {
        // The custom backward hands gradients to libtorch; their wrappers are freed by the bank, not left to the GC.
        using var m = Build();
        using var bank = QuanTABank.Create(m, path, blockCap: 8, recomputeChunk: 1);
        Assert.Equal(rows < 20, QuanTAChainBlocks.TokenGradientsCheaper(
            QuanTAChainBlocks.MakePlan(new AxisLayout([2, 4, 4]), 8, 32, 32), rows));
        using var opt = optim.AdamW(bank.OptimizerParameters(m).Select(p => p.Parameter), lr: 1e-3);
        using var g = new Generator(2);
        var xs = m.Layers.Select(l => randn(rows, l.InFeatures, generator: g).requires_grad_(true)).ToArray();
        long Step()
        {
            using (var scope = NewDisposeScope())
            {
                bank.Materialize(ScalarType.Float32);
                m.Layers.Select((l, i) => l.forward(xs[i]).pow(2).sum()).Aggregate((a, b) => a + b).backward();
                opt.step(); opt.zero_grad();
                bank.Clear();
            }
            return TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        }
        for (int i = 0; i < 3; i++) Step();                               // optimizer state appears in the first steps
        long settled = Step();
        for (int i = 0; i < 20; i++) Step();
        Assert.Equal(settled, Step());
    }

    [Theory]
    [InlineData(QuanTATrainingPath.Auto)]
    [InlineData(QuanTATrainingPath.PerLayer)]
    public void ABankServesOnlyTheFusedPaths(QuanTATrainingPath path)
    {
        var e = Assert.Throws<ArgumentException>(() => QuanTABank.Create(Build(), path));
        Assert.Contains(path.ToString(), e.Message);
    }

    [Fact]
    public void AdaptersSeeTheBanksUpdatedValues()
    {
        using var m = Build();
        using var bank = QuanTABank.Create(m);
        var a = (QuanTAAdapter)m.Layers[3].Adapter!;
        using (no_grad()) foreach (var p in bank.Parameters) p.add_(1.0);
        using var scope = NewDisposeScope();
        bank.Materialize(ScalarType.Float32);
        Assert.True(TestUtil.RelErr(a.StepDelta!, a.DeltaWeight()) < 1e-6);
        bank.Clear();
    }

    [Fact]
    public void AtInitTheFusedUpdateIsExactlyZeroInBFloat16()
    {
        using var m = new Stack((32, 32), (32, 8));
        AdapterInjector.Inject(m, new QuanTAConfig { Layout = [2, 4, 4], Seed = 1 }, TargetModules.All());
        using var bank = QuanTABank.Create(m);
        using var scope = NewDisposeScope();
        bank.Materialize(ScalarType.BFloat16);
        foreach (var l in m.Layers) Assert.Equal(0.0, l.Adapter!.StepDelta!.abs().max().item<BFloat16>().ToSingle());
    }
}

/// <summary>The blocked chain (pairs grouped into blocks that act as one GEMM) equals the per-pair chain for every block size.</summary>
public class QuanTAChainBlockTests
{
    static QuanTAChainBlockTests() => TestUtil.Init();

    [Theory]
    [InlineData(1)]     // one pair per block (the plain chain)
    [InlineData(8)]
    [InlineData(16)]    // [2,2,2,4]: blocks {2,3}+{1,2,3}, {0,3}, {1,2}+{0,1,2}+{0,1,2}
    [InlineData(1024)]  // everything in one block
    public void BlockedDeltaEqualsTheAdaptersDeltaWeight(int cap)
    {
        foreach (var (inF, outF) in new[] { (32, 32), (32, 12), (20, 32) })
        {
            using var layer = new AdaptableLinear(inF, outF, false);
            AdapterInjector.Inject(layer, new QuanTAConfig { Layout = [2, 2, 2, 4], Seed = 2 }, TargetModules.All());
            TestUtil.Randomize(layer, 0.3, 5);
            var a = (QuanTAAdapter)layer.Adapter!;
            using var bank = QuanTABank.Create(layer, blockCap: cap);
            using var scope = NewDisposeScope();
            bank.Materialize(ScalarType.Float32);
            Assert.True(TestUtil.RelErr(a.StepDelta!, a.DeltaWeight()) < 1e-6, $"cap {cap}, {inF}->{outF}");
            bank.Clear();
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(1024)]  // one block: the start is the whole chain (M_T − M_S by one subtraction)
    public void DeltaWithoutGraphEqualsTheAdaptersDeltaWeightInBothOrientations(int cap)
    {
        var lay = new AxisLayout([2, 2, 2, 4]);
        foreach (var (inF, outF) in new[] { (32, 32), (32, 12), (20, 32) })
            foreach (var columns in new[] { true, false })
            {
                using var layer = new AdaptableLinear(inF, outF, false);
                AdapterInjector.Inject(layer, new QuanTAConfig { Layout = [2, 2, 2, 4], Seed = 3 }, TargetModules.All());
                TestUtil.Randomize(layer, 0.3, 7);                                                 // T ≠ S
                var a = (QuanTAAdapter)layer.Adapter!;
                using var scope = NewDisposeScope();
                var plan = QuanTAChainBlocks.MakePlan(lay, cap, inF, outF, columns);
                Tensor[] Ops(Func<int, Tensor> tensor) => QuanTAChainBlocks.BlockOperators(plan,
                    Enumerable.Range(0, lay.TensorCount).Select(i => tensor(i).unsqueeze(0)).ToArray(), ScalarType.Float32, CPU);
                using var _ = no_grad();
                var delta = QuanTAChainBlocks.DeltaWithoutGraph(plan, Ops(a.TensorT), Ops(a.TensorS))[0];
                Assert.True(TestUtil.RelErr(delta, a.DeltaWeight()) < 1e-6, $"cap {cap}, {inF}->{outF}, columns {columns}");
            }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(1024)]  // one block: the start is the whole chain (autograd runs it all)
    public void HandDifferentiatedLastBlockGivesAutogradsTensorGradients(int cap)
    {
        var lay = new AxisLayout([2, 2, 2, 4]);
        using var gen = new Generator(13);
        foreach (var (inF, outF) in new[] { (32, 32), (32, 12), (20, 32) })
            foreach (var columns in new[] { true, false })
            {
                using var scope = NewDisposeScope();
                var plan = QuanTAChainBlocks.MakePlan(lay, cap, inF, outF, columns);
                var tensors = lay.Pairs.Select(p => randn([2, lay.Dims[p.M], lay.Dims[p.N], lay.Dims[p.M], lay.Dims[p.N]], generator: gen) * 0.3).ToArray();
                Tensor[] ops;
                using (no_grad()) ops = QuanTAChainBlocks.BlockOperators(plan, tensors, ScalarType.Float32, CPU);   // L = 2 layers
                var g = randn([2, outF, inF], generator: gen);
                var leaves = ops.Select(o => o.detach().requires_grad_(true)).ToArray();
                var reference = autograd.grad([QuanTAChainBlocks.ApplyPlan(plan, leaves)], leaves, [g]);
                var ours = QuanTAChainBlocks.TensorGradients(plan, ops, g);
                Assert.Equal(reference.Count, ours.Length);
                for (int i = 0; i < ours.Length; i++)
                    Assert.True(TestUtil.RelErr(ours[i], reference[i]) < 1e-5, $"cap {cap}, {inF}->{outF}, columns {columns}, block {i}: {TestUtil.RelErr(ours[i], reference[i])}");
            }
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(1, false)]
    [InlineData(16, true)]      // blocks K = 8, 8, 16: the Kronecker start skips the first block applied
    [InlineData(16, false)]
    [InlineData(1024, false)]   // one block: the Kronecker start is the whole operator
    public void BothOrientationsWithAKroneckerStartGiveTheOperator(int cap, bool columns)
    {
        var lay = new AxisLayout([2, 2, 2, 4]);
        using var a = new QuanTAAdapter(32, 32, lay, generator: new Generator(4));
        using var layer = new AdaptableLinear(32, 32, false);
        layer.Attach(a);
        TestUtil.Randomize(layer, 0.3, 6);
        using var scope = NewDisposeScope();
        var blocks = QuanTAChainBlocks.Partition(lay, cap);
        Assert.Equal((columns, true), QuanTAChainBlocks.Plan(lay, blocks, 32, 32, columns));   // basis = D: Kronecker start
        var t = Enumerable.Range(0, lay.TensorCount).Select(i => a.TensorT(i).unsqueeze(0)).ToArray();   // L = 1
        var m = QuanTAChainBlocks.CroppedOperator(lay, t, 32, 32, cap, ScalarType.Float32, CPU, columns)[0];
        Assert.True(TestUtil.RelErr(m, a.Operator()) < 1e-6, $"cap {cap}, columns {columns}");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void MergedKroneckerStartHasTheSameGradientsAsPairByPair(bool columns)
    {
        // cap 16 on [2,2,2,4]: the first two blocks applied cover every axis, so the Kronecker start and the next block are
        // one contraction; cap 1 applies pair by pair. Same operator, same gradient w.r.t. the stacked tensors (L = 2).
        var lay = new AxisLayout([2, 2, 2, 4]);
        using var g = new Generator(8);
        var t0 = Enumerable.Range(0, lay.TensorCount).Select(i => randn([2, .. lay.TensorShape(i)], generator: g).mul_(0.4)).ToArray();
        var probe = randn(2, 32, 32, generator: g);
        (Tensor M, Tensor[] Grads) Run(int cap)
        {
            var t = t0.Select(x => x.clone().requires_grad_(true)).ToArray();
            var m = QuanTAChainBlocks.CroppedOperator(lay, t, 32, 32, cap, ScalarType.Float32, CPU, columns);
            (m * probe).sum().backward();
            return (m.detach(), t.Select(x => x.grad!).ToArray());
        }
        var merged = Run(16);
        var pairwise = Run(1);
        Assert.True(TestUtil.RelErr(merged.M, pairwise.M) < 1e-6);
        for (int i = 0; i < lay.TensorCount; i++)
            Assert.True(TestUtil.RelErr(merged.Grads[i], pairwise.Grads[i]) < 1e-5, $"tensor {i}: {TestUtil.RelErr(merged.Grads[i], pairwise.Grads[i])}");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void CheckpointedBlockOperatorsGiveTheSameValuesAndGradients(bool columns)
    {
        // [4,2,2,4] with cap 16: blocks of two and three pairs; the checkpointed node keeps only the pair tensors and rebuilds
        // the products in its backward. Same operators and gradients as the pair-by-pair graph, no tensors left behind.
        var lay = new AxisLayout([4, 2, 2, 4]);
        var plan = QuanTAChainBlocks.MakePlan(lay, 16, 64, 64, columns);
        Assert.Contains(plan.Blocks, b => b.PairIndices.Length > 1);
        using var g = new Generator(12);
        var t0 = Enumerable.Range(0, lay.TensorCount).Select(i => randn([3, .. lay.TensorShape(i)], generator: g).mul_(0.4)).ToArray();
        var returned = new ReturnedGradients();
        (Tensor[] Ops, Tensor[] Grads) Run(bool checkpoint)
        {
            using var scope = NewDisposeScope();
            var t = t0.Select(x => x.clone().requires_grad_(true)).ToArray();
            var ops = QuanTAChainBlocks.BlockOperators(plan, t, ScalarType.Float32, CPU, checkpoint ? returned : null);
            ops.Select((o, i) => o.pow(2).mul(i + 1).sum()).Aggregate((a, b) => a + b).backward();
            return (ops.Select(o => o.detach().clone().DetachFromDisposeScope()).ToArray(), t.Select(x => x.grad!.clone().DetachFromDisposeScope()).ToArray());
        }
        var plain = Run(false);
        var checkpointed = Run(true);
        returned.ReleaseAll();
        long live = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var again = Run(true);                                                            // a second step: nothing accumulates
        returned.ReleaseAll();
        Assert.Equal(live + again.Ops.Length + again.Grads.Length, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        for (int b = 0; b < plain.Ops.Length; b++)
            Assert.True(TestUtil.RelErr(checkpointed.Ops[b], plain.Ops[b]) < 1e-6, $"block {b}");
        for (int i = 0; i < lay.TensorCount; i++)
        {
            Assert.True(plain.Grads[i].abs().max().item<float>() > 0);
            Assert.True(TestUtil.RelErr(checkpointed.Grads[i], plain.Grads[i]) < 1e-5, $"tensor {i}: {TestUtil.RelErr(checkpointed.Grads[i], plain.Grads[i])}");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TenAxisLayoutsGetDistinctEinsumLetters(bool columns)
    {
        // 10 axes, cap 512: the first two blocks applied cover every axis in both orientations, so the merged Kronecker start
        // runs and needs 2·10 + (shared axes) distinct einsum subscripts ('a' + axis for inputs and 'j' + axis for outputs clash).
        var lay = new AxisLayout(Enumerable.Repeat(2, 10).ToArray());
        using var a = new QuanTAAdapter(1024, 1024, lay, generator: new Generator(4));
        using var layer = new AdaptableLinear(1024, 1024, false);
        layer.Attach(a);
        TestUtil.Randomize(layer, 0.3, 6);
        using var scope = NewDisposeScope();
        var t = Enumerable.Range(0, lay.TensorCount).Select(i => a.TensorT(i).unsqueeze(0)).ToArray();
        var plan = QuanTAChainBlocks.MakePlan(lay, 512, 1024, 1024, columns);
        Assert.Equal(10, plan.Blocks[plan.Order[0]].Axes.Union(plan.Blocks[plan.Order[1]].Axes).Count());   // the merged start is taken
        var m = QuanTAChainBlocks.CroppedOperator(lay, t, 1024, 1024, 512, ScalarType.Float32, CPU, columns)[0];
        Assert.True(TestUtil.RelErr(m, a.Operator()) < 1e-5, $"columns {columns}: {TestUtil.RelErr(m, a.Operator())}");
    }

    [Fact]
    public void PlanPicksTheOrientationWhoseFirstBlockIsLargest()
    {
        // LLaMA-7B q/v, [16,8,8,4]: blocks K = 256, 64, 1024 in chain order; rows start with the 1024 block for free.
        var paper = new AxisLayout([16, 8, 8, 4]);
        Assert.Equal((false, true), QuanTAChainBlocks.Plan(paper, QuanTAChainBlocks.Partition(paper, 1024), 4096, 4096));
        // TinyLlama v (2048 → 256): only the 256 row basis vectors are run; their first block (512) is a sliced Kronecker start
        // (basis < D: not the full one).
        var tiny = new AxisLayout([16, 8, 4, 4]);
        Assert.Equal((false, false), QuanTAChainBlocks.Plan(tiny, QuanTAChainBlocks.Partition(tiny, 1024), 2048, 256));
        // A padded input (in = 1024 < out = D): columns 1024·(704 − 128) (its first block, 128, is a sliced Kronecker start),
        // rows with the free 512-block 2048·192 → rows.
        Assert.Equal((false, true), QuanTAChainBlocks.Plan(tiny, QuanTAChainBlocks.Partition(tiny, 1024), 1024, 2048));
    }

    [Fact]
    public void PartitionGroupsConsecutivePairsUpToTheCap()
    {
        var blocks = QuanTAChainBlocks.Partition(new AxisLayout([2, 2, 2, 4]), 16);
        Assert.Equal(new[] { "1,2,3:0,1", "0,3:2", "0,1,2:3,4,5" },
            blocks.Select(b => $"{string.Join(",", b.Axes)}:{string.Join(",", b.PairIndices)}"));
        var paper = QuanTAChainBlocks.Partition(new AxisLayout([16, 8, 8, 4]), 1024);
        Assert.Equal(3, paper.Count);
    }
}
