using QuanTA.Core.Adapters;
using QuanTA.Core.Quantization;
using QuanTA.Core.Tests.Adapters;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Quantization;

/// <summary>NF4 / Int8 quantization of single weights: code books, packing, error bounds, the quantized layer's gradients.</summary>
public class QuantizationTests(ITestOutputHelper output)
{
    static QuantizationTests() => TestUtil.Init();

    // The 16 NF4 levels as published in the QLoRA paper's appendix and in bitsandbytes functional.get_4bit_type("nf4").
    static readonly double[] PublishedNF4 =
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
        -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ];

    [Fact]
    public void NF4CodeBookIsThePublishedOne()
    {
        Assert.Equal(16, NF4Weight.CodeBook.Count);
        for (int i = 0; i < 16; i++) Assert.Equal((float)PublishedNF4[i], NF4Weight.CodeBook[i]);
        Assert.Equal(0f, NF4Weight.CodeBook[7]);                                       // an exact zero, 8 positive levels
    }

    [Fact]
    public void DynamicMapHasBitsAndBytesStructure()
    {
        var map = DynamicMap.CreateSigned();
        Assert.Equal(256, map.Length);
        Assert.True(map.Zip(map.Skip(1)).All(p => p.First <= p.Second), "sorted");
        Assert.Equal(1f, map[^1]);
        Assert.Contains(0f, map);
        Assert.Equal(-0.99296875f, map[0], 6);                                         // −(0.9859375 + 1) / 2: the largest mean, negated
        Assert.Equal(5.5e-7f, map.Where(v => v > 0).Min(), 9);                        // 10⁻⁶ · (0.1 + 1) / 2: the smallest exponent's only mean
    }

    [Theory]
    [InlineData(48, 64, false)]
    [InlineData(37, 29, false)]      // 1073 values: a short last block and an odd count (half a byte of padding)
    [InlineData(96, 128, true)]
    [InlineData(300, 200, true)]     // 938 blocks: several nested blocks of 256, the last one short
    public void NF4RoundTripStaysWithinTheBlockBound(int rows, int cols, bool doubleQuant)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(7);
        var w = randn(rows, cols, generator: g) * 0.05;
        w[0, 0] = tensor(0.9f);                                                        // one outlier block
        using var q = NF4Weight.Quantize(w, ScalarType.Float32, doubleQuant);
        Assert.Equal(doubleQuant, q.DoubleQuantized);
        Assert.Equal(new long[] { (rows * cols + 1) / 2, 1 }, q.Packed.shape);
        var deq = q.DequantizeFloat32();
        Assert.Equal(new long[] { rows, cols }, deq.shape);

        // Reference computed here, element by element: the exact absmax of each block of 64 and the nearest level.
        var flat = w.reshape(-1).data<float>().ToArray();
        var got = deq.reshape(-1).data<float>().ToArray();
        var absmaxQ = q.AbsmaxFloat32().data<float>().ToArray();
        double halfGap = PublishedNF4.Zip(PublishedNF4.Skip(1)).Max(p => p.Second - p.First) / 2;
        var dyn = DynamicMap.CreateSigned();
        double dynHalfGap = dyn.Zip(dyn.Skip(1)).Max(p => p.Second - p.First) / 2.0;
        var nested = q.NestedAbsmax?.data<float>().ToArray();
        double worst = 0;
        for (int b = 0; b * 64 < flat.Length; b++)
        {
            var block = flat.Skip(b * 64).Take(64).ToArray();
            double absmax = block.Max(v => Math.Abs(v));
            double absmaxErr = Math.Abs(absmaxQ[b] - absmax);
            if (!doubleQuant) Assert.Equal(absmax, absmaxQ[b], 7);
            else Assert.True(absmaxErr <= nested![b / 256] * dynHalfGap + 1e-6, $"block {b}: absmax {absmax} stored as {absmaxQ[b]}");
            for (int i = 0; i < block.Length; i++)
            {
                double v = block[i], r = got[b * 64 + i];
                double bound = absmax * halfGap + absmaxErr + 1e-6;                  // per-block bound (+ the stored absmax's error)
                Assert.True(Math.Abs(v - r) <= bound, $"value {b * 64 + i}: {v} → {r}, bound {bound}");
                if (!doubleQuant)                                                    // nearest level: no other level is closer
                {
                    double nearest = PublishedNF4.Min(c => Math.Abs(v / absmax - c)) * absmax;
                    Assert.True(Math.Abs(v - r) <= nearest + 1e-6, $"value {b * 64 + i}: not the nearest level");
                }
                worst = Math.Max(worst, Math.Abs(v - r) / absmax);
            }
        }
        output.WriteLine($"{rows}×{cols} double-quant {doubleQuant}: worst |w − ŵ| / absmax = {worst:F4} (bound {halfGap:F4})");
        Assert.True(worst > 0.01, "the round trip lost nothing: the check is too weak");
    }

    [Fact]
    public void DoubleQuantizedAbsmaxStaysWithinTheNestedBound()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        var w = randn(512, 256, generator: g) * rand(512, 1, generator: g);           // absmax spread over rows
        using var plain = NF4Weight.Quantize(w, ScalarType.Float32, doubleQuant: false);
        using var dq = NF4Weight.Quantize(w, ScalarType.Float32, doubleQuant: true);
        Assert.Equal(ScalarType.Byte, dq.Absmax.dtype);
        Assert.Equal(new long[] { (2048 + 255) / 256 }, dq.NestedAbsmax!.shape);
        var exact = plain.AbsmaxFloat32().data<float>().ToArray();
        var rebuilt = dq.AbsmaxFloat32().data<float>().ToArray();
        var nested = dq.NestedAbsmax.data<float>().ToArray();
        float offset = dq.NestedOffset;
        Assert.Equal(exact.Average(), offset, 4);                                     // offset = mean(absmax)
        var map = DynamicMap.CreateSigned().Select(v => (double)v).ToArray();
        double halfGap = map.Zip(map.Skip(1)).Max(p => p.Second - p.First) / 2;
        for (int i = 0; i < exact.Length; i++)
        {
            double bound = nested[i / 256] * halfGap + 1e-6;                            // the nested block's absmax × half the widest gap
            Assert.True(Math.Abs(exact[i] - rebuilt[i]) <= bound, $"absmax {i}: {exact[i]} → {rebuilt[i]}, bound {bound}");
            Assert.True(Math.Abs(exact[i] - offset) <= nested[i / 256] + 1e-6);
        }
        Assert.True(exact.Zip(rebuilt).Any(p => p.First != p.Second), "double quantization changed nothing");
        output.WriteLine($"nested blocks {nested.Length}, storage {dq.StorageBytes} B vs {plain.StorageBytes} B without double quantization");
        Assert.True(dq.StorageBytes < plain.StorageBytes);
    }

    [Fact]
    public void NF4PacksTwoCodesPerByteHighNibbleFirst()
    {
        // Values exactly on the levels (absmax 1): codes 0,1,…,15,15,…,0 and so on; packed bytes are (first << 4) | second.
        var codes = Enumerable.Range(0, 64).Select(i => (i / 16) % 2 == 0 ? i % 16 : 15 - i % 16).ToArray();
        var values = codes.Select(c => NF4Weight.CodeBook[c]).ToArray();
        using var w = tensor(values).reshape(1, 64);
        using var q = NF4Weight.Quantize(w, ScalarType.Float32, doubleQuant: false);
        var packed = q.Packed.reshape(-1).data<byte>().ToArray();
        for (int j = 0; j < 32; j++) Assert.Equal((byte)((codes[2 * j] << 4) | codes[2 * j + 1]), packed[j]);
        using var deq = q.DequantizeFloat32();
        Assert.Equal(values, deq.reshape(-1).data<float>().ToArray());                 // levels come back exactly
    }

    [Fact]
    public void Int8RoundTripStaysWithinHalfAStepPerRow()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var w = randn(40, 70, generator: g) * rand(40, 1, generator: g);
        using var q = Int8Weight.Quantize(w, ScalarType.Float32);
        Assert.Equal(ScalarType.Int8, q.Codes.dtype);
        var err = (q.DequantizeFloat32() - w).abs();                                   // (40, 70)
        var step = w.abs().amax([1]) / 127;                                           // (40)
        Assert.True((err <= step.unsqueeze(1) / 2 + 1e-7).all().item<bool>(), "an Int8 value is off by more than half a step");
        Assert.True((err.amax([1]) > step / 10).any().item<bool>(), "no rounding at all: the check is too weak");
    }

    [Theory]
    [InlineData(BaseQuantization.NF4)]
    [InlineData(BaseQuantization.Int8)]
    public void QuantizedLayerGivesTheGradientsOfItsDequantizedWeight(BaseQuantization kind)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(5);
        var dense = randn(24, 64, generator: g) * 0.1;
        using var layer = new AdaptableLinear(64, 24, hasBias: true, quantization: kind);
        layer.LoadWeight(dense);
        using (no_grad()) layer.bias!.copy_(randn(24, generator: g));
        Assert.Equal(0, layer.weight.numel());                                        // no dense weight is kept
        var w0 = layer.DequantizedWeight();
        Assert.True((w0 - dense).abs().max().item<float>() > 0, "not quantized");

        var x = randn(5, 64, generator: g).requires_grad_(true);
        var y = layer.forward(x);
        (y * y).sum().backward();
        var xRef = x.detach().clone().requires_grad_(true);
        var yRef = nn.functional.linear(xRef, w0, layer.bias);
        (yRef * yRef).sum().backward();
        Assert.True(TestUtil.RelErr(y, yRef) < 1e-6);
        Assert.True(TestUtil.RelErr(x.grad!, xRef.grad!) < 1e-6, $"∂L/∂x off by {TestUtil.RelErr(x.grad!, xRef.grad!)}");
    }

    [Fact]
    public void QuantizedStepsLeaveNoTensorsBehind()
    {
        using var g = new Generator(9);
        using var layer = new AdaptableLinear(64, 64, hasBias: false, quantization: BaseQuantization.NF4);
        using (var w = randn(64, 64, generator: g)) layer.LoadWeight(w);
        layer.Attach(new LoRAConfig { Rank = 2, Seed = 1 }.Create(64, 64, g));
        using var opt = optim.AdamW(layer.Adapter!.parameters(), lr: 1e-2);
        using var x = randn(8, 64, generator: g).requires_grad_(true);
        long Step()
        {
            using (var scope = NewDisposeScope())
            {
                layer.forward(layer.forward(x).tanh()).pow(2).sum().backward();     // the second call's input needs a gradient
                opt.step(); opt.zero_grad(); x.grad?.zero_();
                layer.Returned.ReleaseAll();                                          // (a model does this at its next forward)
            }
            return TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        }
        for (int i = 0; i < 3; i++) Step();
        long settled = Step();
        for (int i = 0; i < 10; i++) Step();
        Assert.Equal(settled, Step());
    }

    [Fact]
    public void MergingIntoAQuantizedBaseIsRefused()
    {
        using var g = new Generator(1);
        using var layer = new AdaptableLinear(32, 32, hasBias: false, quantization: BaseQuantization.NF4);
        using (var w = randn(32, 32, generator: g)) layer.LoadWeight(w);
        layer.Attach(new LoRAConfig { Rank = 2, Seed = 1 }.Create(32, 32, g));
        var e = Assert.Throws<InvalidOperationException>(layer.Merge);
        Assert.Contains("NF4-quantized", e.Message);
        Assert.Contains("DequantizedWeight", e.Message);
        Assert.False(layer.IsMerged);
        Assert.Equal(0, AdapterInjector.MergeAll(layer));                              // merge-all leaves it running unmerged
    }

    [Fact]
    public void AQuantizedLayerWithoutWeightsSaysSo()
    {
        using var layer = new AdaptableLinear(8, 8, hasBias: false, quantization: BaseQuantization.Int8);
        using var x = zeros(1, 8);
        var e = Assert.Throws<InvalidOperationException>(() => layer.forward(x));
        Assert.Contains("no weight yet", e.Message);
    }
}
