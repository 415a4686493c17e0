using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Quantization;

/// <summary>
/// bitsandbytes' signed 8-bit "dynamic" code book (<c>functional.create_dynamic_map(signed=True, max_exponent_bits=7,
/// total_bits=8)</c>, after Dettmers, "8-Bit Approximations for Parallelism in Deep Learning") and its blockwise
/// quantization (<c>quantize_blockwise</c> / <c>dequantize_blockwise</c>: absmax per block, nearest code), which QLoRA's
/// double quantization applies to the NF4 absmax constants in blocks of 256.
/// </summary>
public static class DynamicMap
{
    /// <summary>The 256 sorted values of the signed dynamic map, computed the way bitsandbytes computes them: for exponent
    /// i = 0…6, the midpoints of <c>linspace(0.1, 1, 2^i + 1)</c> (fp32) scaled by ±10^(i−6); then 0 and 1.</summary>
    public static float[] CreateSigned()
    {
        var data = new List<float>(256);
        for (int i = 0; i < 7; i++)
        {
            using var scope = NewDisposeScope();
            var boundaries = linspace(0.1, 1.0, (1 << i) + 1, dtype: ScalarType.Float32);        // fp32, as torch.linspace
            var means = (boundaries[..^1] + boundaries[1..]) / 2.0;                             // fp32
            double scale = Math.Pow(10, -6 + i);                                                 // Python's 10 ** (-(7 - 1) + i)
            data.AddRange((means * scale).data<float>().ToArray());
            data.AddRange((means * -scale).data<float>().ToArray());
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return [.. data];
    }

    /// <summary>Quantizes a flat fp32 tensor in blocks of <paramref name="blockSize"/>: per block absmax, values scaled into
    /// [−1, 1] and rounded to the nearest entry of the sorted <paramref name="code"/> (ties to the lower entry, as
    /// <c>torch.bucketize</c> on the midpoints in bitsandbytes' reference backend). Returns uint8 codes (n) and fp32 absmax
    /// (ceil(n / blockSize)).</summary>
    public static (Tensor Codes, Tensor Absmax) QuantizeBlockwise(Tensor values, Tensor code, int blockSize)
    {
        using var scope = NewDisposeScope();
        var flat = values.reshape(-1).to_type(ScalarType.Float32);
        long n = flat.shape[0], blocks = (n + blockSize - 1) / blockSize;
        if (blocks * blockSize != n) flat = nn.functional.pad(flat, [0, blocks * blockSize - n]);   // zeros leave every absmax unchanged
        var b = flat.view(blocks, blockSize);                                                            // (blocks, block)
        var absmax = b.abs().amax([1]);                                                                  // (blocks)
        var scaled = (b * absmax.clamp_min(1e-38).reciprocal().unsqueeze(1)).clamp(-1, 1).view(-1);
        var bounds = (code[..^1] + code[1..]) / 2;                                                       // midpoints (255)
        var q = bucketize(scaled, bounds, true, false).narrow(0, 0, n).to_type(ScalarType.Byte);
        return (q.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>code[q] · absmax[block] in fp32, (n).</summary>
    public static Tensor DequantizeBlockwise(Tensor codes, Tensor absmax, Tensor code, int blockSize)
    {
        using var scope = NewDisposeScope();
        long n = codes.numel(), blocks = absmax.shape[0];
        var v = code.index_select(0, codes.reshape(-1).to_type(ScalarType.Int32));                     // (n) fp32
        if (blocks * blockSize != n) v = nn.functional.pad(v, [0, blocks * blockSize - n]);
        var w = (v.view(blocks, blockSize) * absmax.unsqueeze(1)).view(-1).narrow(0, 0, n);
        return w.MoveToOuterDisposeScope();
    }
}
