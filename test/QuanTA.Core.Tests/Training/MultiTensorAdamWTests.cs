using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Training;

/// <summary><see cref="MultiTensorAdamW"/> against TorchSharp's own <see cref="AdamW"/>: the same ops on flat buffers, so every
/// parameter and moment must be bit-identical after any number of steps, learning-rate changes, missing gradients and a
/// save/load of the state.</summary>
public class MultiTensorAdamWTests
{
    static readonly long[][] Shapes = [[3], [4, 5], [2, 3, 4], [1], [7, 2]];

    // Parameters of mixed shapes (and, with mixedTypes, two dtypes: two flat groups), the same values for every call.
    static Parameter[] MakeParameters(bool mixedTypes)
    {
        using var g = new Generator(11);
        return Shapes.Select((s, i) => new Parameter(randn(s, generator: g).to_type(mixedTypes && i % 2 == 1 ? ScalarType.Float64 : ScalarType.Float32))).ToArray();
    }

    // Gradients drawn per step from a seed, the same for both optimizers; `skip` leaves one parameter without a gradient.
    static void SetGradients(Parameter[] ps, int step, int skip = -1)
    {
        using var g = new Generator(100 + (ulong)step);
        for (int i = 0; i < ps.Length; i++)
        {
            ps[i].grad = null;                                                             // as zero_grad(set_to_none) leaves it
            if (i == skip) continue;
            ps[i].grad = randn(ps[i].shape, generator: g).to_type(ps[i].dtype);
        }
    }

    static void AssertSame(Parameter[] a, Parameter[] b, AdamW oa, AdamW ob)
    {
        var sa = oa.state_dict().State; var sb = ob.state_dict().State;
        for (int i = 0; i < a.Length; i++)
        {
            Assert.True(a[i].equal(b[i]).all().item<bool>(), $"parameter {i} differs");
            var (x, y) = ((AdamW.State)sa[i], (AdamW.State)sb[i]);
            Assert.Equal(x.step, y.step);
            Assert.True(x.exp_avg.equal(y.exp_avg).all().item<bool>(), $"exp_avg {i} differs");
            Assert.True(x.exp_avg_sq.equal(y.exp_avg_sq).all().item<bool>(), $"exp_avg_sq {i} differs");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void StepsAreBitIdenticalToAdamW(bool mixedTypes)
    {
        var reference = MakeParameters(mixedTypes);
        var fused = MakeParameters(mixedTypes);
        using var oa = new AdamW(reference, lr: 1e-2, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.1);
        using var ob = new MultiTensorAdamW(fused, lr: 1e-2, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.1);
        for (int step = 0; step < 6; step++)
        {
            if (step == 3)                                                                  // a schedule changes the rate
                foreach (var o in new AdamW[] { oa, ob }) foreach (var pg in o.ParamGroups) pg.LearningRate = 3e-3;
            SetGradients(reference, step); SetGradients(fused, step);
            oa.step(); ob.step();
        }
        AssertSame(reference, fused, oa, ob);
        Assert.False(reference[0].equal(MakeParameters(mixedTypes)[0]).all().item<bool>());   // the steps did move them
    }

    [Fact]
    public void AStepWithAMissingGradientMatchesAdamW()
    {
        var reference = MakeParameters(false);
        var fused = MakeParameters(false);
        using var oa = new AdamW(reference, lr: 1e-2, weight_decay: 0.01);
        var log = new List<string>();
        using var ob = new MultiTensorAdamW(fused, lr: 1e-2, weight_decay: 0.01) { Log = log.Add };
        for (int step = 0; step < 5; step++)
        {
            int skip = step == 1 ? 2 : -1;                                                  // parameter 2 then lags one step
            SetGradients(reference, step, skip); SetGradients(fused, step, skip);
            oa.step(); ob.step();
        }
        AssertSame(reference, fused, oa, ob);
        Assert.Equal(4, ((AdamW.State)ob.state_dict().State[2]).step);
        Assert.Contains("no gradient", Assert.Single(log));                                 // said once, not every step
    }

    [Fact]
    public void StepsLeakNoTensors()
    {
        var ps = MakeParameters(true);                                                      // two flat groups
        using var opt = new MultiTensorAdamW(ps, lr: 1e-3, weight_decay: 0.01);
        void Step(int i)
        {
            using var scope = NewDisposeScope();
            SetGradients(ps, i);
            opt.step();
        }
        for (int i = 0; i < 3; i++) Step(i);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 3; i < 53; i++) Step(i);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void AnOptimizerMadeInsideADisposeScopeOutlivesIt()
    {
        var reference = MakeParameters(false);
        var fused = MakeParameters(false);
        using var oa = new AdamW(reference, lr: 1e-2);
        MultiTensorAdamW ob;
        using (NewDisposeScope()) ob = new MultiTensorAdamW(fused, lr: 1e-2);            // e.g. a trainer built in a step scope
        using (ob)
        {
            for (int step = 0; step < 3; step++) { SetGradients(reference, step); SetGradients(fused, step); oa.step(); ob.step(); }
            AssertSame(reference, fused, oa, ob);
        }
    }

    [Fact]
    public void LoadingAnotherOptimizersStateCopiesItAndLeavesTheOtherIntact()
    {
        var reference = MakeParameters(false);
        var first = MakeParameters(false);
        using var oa = new AdamW(reference, lr: 5e-3, weight_decay: 0.05);
        using var o1 = new MultiTensorAdamW(first, lr: 5e-3, weight_decay: 0.05);
        for (int step = 0; step < 3; step++) { SetGradients(reference, step); SetGradients(first, step); oa.step(); o1.step(); }
        var second = MakeParameters(false);
        using (no_grad()) for (int i = 0; i < second.Length; i++) second[i].copy_(first[i]);
        using var o2 = new MultiTensorAdamW(second, lr: 5e-3, weight_decay: 0.05);
        o2.load_state_dict(o1.state_dict());                                                // the object form, not a file
        for (int step = 3; step < 6; step++) { SetGradients(reference, step); SetGradients(second, step); oa.step(); o2.step(); }
        AssertSame(reference, second, oa, o2);
        SetGradients(first, 3); o1.step();                                                  // the source still works
        Assert.Equal(4, ((AdamW.State)o1.state_dict().State[0]).step);
    }

    [Fact]
    public void SavedStateResumesExactly()
    {
        var reference = MakeParameters(false);
        using var oa = new AdamW(reference, lr: 5e-3, weight_decay: 0.05);
        for (int step = 0; step < 6; step++) { SetGradients(reference, step); oa.step(); }

        var first = MakeParameters(false);
        byte[] saved;
        using (var o1 = new MultiTensorAdamW(first, lr: 5e-3, weight_decay: 0.05))
        {
            for (int step = 0; step < 3; step++) { SetGradients(first, step); o1.step(); }
            using var ms = new MemoryStream();
            using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) o1.save_state_dict(w);
            saved = ms.ToArray();
        }
        var resumed = MakeParameters(false);
        using (no_grad()) for (int i = 0; i < resumed.Length; i++) resumed[i].copy_(first[i]);
        using var o2 = new MultiTensorAdamW(resumed, lr: 5e-3, weight_decay: 0.05);
        using (var r = new BinaryReader(new MemoryStream(saved))) o2.load_state_dict(r);
        for (int step = 3; step < 6; step++) { SetGradients(resumed, step); o2.step(); }
        AssertSame(reference, resumed, oa, o2);
    }
}
