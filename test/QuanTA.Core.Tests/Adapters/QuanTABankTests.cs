using QuanTA.Core.Adapters;
using TorchSharp;
using static TorchSharp.torch;

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
        var bank = QuanTABank.Create(m);
        Assert.Equal(4, bank.AdapterCount);
        Assert.Equal(3, bank.GroupCount);
        using var scope = NewDisposeScope();
        bank.Materialize(ScalarType.Float32);
        foreach (var l in m.Layers)
        {
            var a = (QuanTAAdapter)l.Adapter!;
            Assert.True(TestUtil.RelErr(a.StepDeltaWeight!, a.DeltaWeight()) < 1e-6, $"{l.InFeatures}->{l.OutFeatures}");
        }
        bank.Clear();
        Assert.All(m.Layers, l => Assert.Null(l.Adapter!.StepDeltaWeight));
    }

    [Fact]
    public void FusedForwardAndGradientsMatchThePerLayerPath()
    {
        using var m = Build();
        var bank = QuanTABank.Create(m);
        using var g = new Generator(9);
        var xs = m.Layers.Select(l => randn(5, l.InFeatures, generator: g)).ToArray();

        Tensor[] Run(bool fused)
        {
            foreach (var p in m.parameters()) p.grad?.zero_();
            using var scope = NewDisposeScope();
            if (fused) bank.Materialize(ScalarType.Float32);
            var loss = m.Layers.Select((l, i) => l.forward(xs[i]).pow(2).sum()).Aggregate((a, b) => a + b);
            loss.backward();
            bank.Clear();
            return m.parameters().Where(p => p.requires_grad).Select(p => p.grad!.clone().DetachFromDisposeScope())
                .Append(loss.detach().clone().DetachFromDisposeScope()).ToArray();
        }

        var plain = Run(false);
        var fused = Run(true);
        Assert.Equal(plain.Length, fused.Length);
        for (int i = 0; i < plain.Length; i++) Assert.True(TestUtil.RelErr(fused[i], plain[i]) < 1e-5, $"tensor {i}: {TestUtil.RelErr(fused[i], plain[i])}");
    }

    [Fact]
    public void AtInitTheFusedUpdateIsExactlyZeroInBFloat16()
    {
        using var m = new Stack((32, 32), (32, 8));
        AdapterInjector.Inject(m, new QuanTAConfig { Layout = [2, 4, 4], Seed = 1 }, TargetModules.All());
        var bank = QuanTABank.Create(m);
        using var scope = NewDisposeScope();
        bank.Materialize(ScalarType.BFloat16);
        foreach (var l in m.Layers) Assert.Equal(0.0, l.Adapter!.StepDeltaWeight!.abs().max().item<BFloat16>().ToSingle());
    }
}
