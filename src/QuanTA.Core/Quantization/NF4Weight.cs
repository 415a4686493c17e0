using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Quantization;

/// <summary>
/// A weight in 4-bit NormalFloat (NF4), laid out exactly as bitsandbytes stores it (<c>Params4bit</c> + <c>QuantState</c>):
/// <code>
///   flat = W.reshape(-1)                                      row-major (out · in) values, blocks of 64 (the last may be short)
///   absmax[b] = max |flat[64b … 64b+63]|                       fp32 (blocks)
///   code[i]  = argmin_k |flat[i] / absmax[b] − NF4[k]|          nearest of the 16 levels (ties to the lower level)
///   packed[j] = code[2j] &lt;&lt; 4 | code[2j+1]                      uint8 (ceil(n/2), 1): first value in the high nibble
/// double quantization (QLoRA): offset = mean(absmax); absmax − offset is quantized blockwise (blocks of 256) with the
///   signed 8-bit dynamic map → uint8 absmax (blocks), fp32 nested_absmax (ceil(blocks/256)), nested_quant_map (256)
/// dequantize: W = NF4[code] · (dynamic[qabsmax] · nested_absmax + offset)       fp32, then cast to the compute dtype
/// </code>
/// Following bitsandbytes' reference (default, pure-torch) backend: <c>backends/default/ops.py</c> quantize_4bit /
/// dequantize_4bit and <c>functional.py</c> quantize_4bit(compress_statistics=True).
/// </summary>
public sealed class NF4Weight : QuantizedWeight
{
    /// <summary>Values per absmax block (bitsandbytes' and QLoRA's default).</summary>
    public const int BlockSize = 64;
    /// <summary>Absmax constants per block of the double quantization.</summary>
    public const int NestedBlockSize = 256;

    /// <summary>The 16 NF4 levels, copied from bitsandbytes <c>functional.get_4bit_type("nf4")</c> (quantiles of N(0, 1),
    /// "create_normal_map(offset=0.9677083, use_extra_value=True)", normalized to [−1, 1]).</summary>
    public static readonly IReadOnlyList<float> CodeBook =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    Tensor _packed, _absmax, _quantMap;
    Tensor? _nestedAbsmax, _nestedQuantMap, _pairTable;

    NF4Weight(long outFeatures, long inFeatures, ScalarType computeDType, Tensor packed, Tensor absmax, Tensor quantMap,
        Tensor? nestedAbsmax, Tensor? nestedQuantMap, float nestedOffset) : base(outFeatures, inFeatures, computeDType)
    {
        _packed = packed; _absmax = absmax; _quantMap = quantMap;
        _nestedAbsmax = nestedAbsmax; _nestedQuantMap = nestedQuantMap; NestedOffset = nestedOffset;
    }

    /// <inheritdoc/>
    public override BaseQuantization Kind => BaseQuantization.NF4;
    /// <inheritdoc/>
    public override Device Device => _packed.device;
    /// <inheritdoc/>
    public override long StorageBytes => Bytes(_packed) + Bytes(_absmax) + Bytes(_quantMap) + Bytes(_nestedAbsmax) + Bytes(_nestedQuantMap);
    /// <summary>Number of absmax blocks, ceil(out · in / 64).</summary>
    public long Blocks => (ElementCount + BlockSize - 1) / BlockSize;
    /// <summary>True when the absmax constants are double-quantized (uint8 + nested fp32 constants).</summary>
    public bool DoubleQuantized => _nestedAbsmax is not null;
    /// <summary>bitsandbytes' <c>weight</c>: uint8 (ceil(n/2), 1), two codes per byte, the first in the high nibble.</summary>
    public Tensor Packed => _packed;
    /// <summary>bitsandbytes' <c>weight.absmax</c>: fp32 (blocks), or uint8 (blocks) when double-quantized.</summary>
    public Tensor Absmax => _absmax;
    /// <summary>bitsandbytes' <c>weight.quant_map</c>: the 16 levels, fp32.</summary>
    public Tensor QuantMap => _quantMap;
    /// <summary>bitsandbytes' <c>weight.nested_absmax</c>: fp32 (ceil(blocks/256)), or null.</summary>
    public Tensor? NestedAbsmax => _nestedAbsmax;
    /// <summary>bitsandbytes' <c>weight.nested_quant_map</c>: the 8-bit dynamic map, fp32 (256), or null.</summary>
    public Tensor? NestedQuantMap => _nestedQuantMap;
    /// <summary>bitsandbytes' <c>nested_offset</c>: the mean of the absmax constants, subtracted before their quantization.</summary>
    public float NestedOffset { get; }

    static long Bytes(Tensor? t) => t is null ? 0 : t.numel() * t.ElementSize;

    /// <summary>Quantizes a dense (out, in) weight (any floating dtype) on its own device.</summary>
    public static NF4Weight Quantize(Tensor weight, ScalarType computeDType, bool doubleQuant = true)
    {
        if (weight.dim() != 2) throw new ArgumentException($"Expected an (out, in) weight; got [{string.Join(", ", weight.shape)}].", nameof(weight));
        using var scope = NewDisposeScope();
        var device = weight.device;
        var quantMap = tensor(CodeBook.ToArray(), device: device);                                  // (16) fp32
        var (codes, absmax) = DynamicMap.QuantizeBlockwise(weight, quantMap, BlockSize);            // uint8 (n), fp32 (blocks)
        long n = codes.shape[0];
        var q = codes.to_type(ScalarType.Int32);
        if (n % 2 == 1) q = nn.functional.pad(q, [0, 1], value: 7);                                   // pad with the level 0.0
        var pairs = q.view(-1, 2);                                                                    // (ceil(n/2), 2)
        var packed = (pairs.select(1, 0) * 16 + pairs.select(1, 1)).to_type(ScalarType.Byte).unsqueeze(1);   // (ceil(n/2), 1)
        Tensor storedAbsmax = absmax;
        Tensor? nestedAbsmax = null, nestedMap = null;
        float offset = 0;
        if (doubleQuant)
        {
            var offsetT = absmax.mean();                                                              // fp32 scalar
            offset = offsetT.item<float>();
            nestedMap = tensor(DynamicMap.CreateSigned(), device: device);                            // (256) fp32
            (storedAbsmax, nestedAbsmax) = DynamicMap.QuantizeBlockwise(absmax - offsetT, nestedMap, NestedBlockSize);
        }
        var w = new NF4Weight(weight.shape[0], weight.shape[1], computeDType, packed.DetachFromDisposeScope(),
            storedAbsmax.DetachFromDisposeScope(), quantMap.DetachFromDisposeScope(), nestedAbsmax?.DetachFromDisposeScope(),
            nestedMap?.DetachFromDisposeScope(), offset);
        return w;
    }

    /// <summary>
    /// Adopts the tensors of a bitsandbytes NF4 state (copied to <paramref name="device"/>; the caller keeps and frees its own).
    /// Shapes are checked against (out, in); <paramref name="name"/> (the weight's checkpoint key) is named in errors.
    /// </summary>
    public static NF4Weight FromBitsAndBytes(string name, long outFeatures, long inFeatures, ScalarType computeDType, Device device,
        Tensor packed, Tensor absmax, Tensor quantMap, Tensor? nestedAbsmax, Tensor? nestedQuantMap, float nestedOffset)
    {
        long n = outFeatures * inFeatures, blocks = (n + BlockSize - 1) / BlockSize;
        void Check(bool ok, string what) { if (!ok) throw new InvalidDataException($"Checkpoint tensor '{name}{what}' does not fit an NF4 weight of shape [{outFeatures}, {inFeatures}] in blocks of {BlockSize}."); }
        Check(packed.dtype == ScalarType.Byte && packed.numel() == (n + 1) / 2, $" (uint8, {(n + 1) / 2} bytes expected; found {packed.dtype} [{string.Join(", ", packed.shape)}])");
        Check(quantMap.numel() == 16, $".quant_map (16 values expected; found {quantMap.numel()})");
        Check(absmax.numel() == blocks, $".absmax ({blocks} values expected; found {absmax.numel()})");
        if (nestedAbsmax is null != nestedQuantMap is null)
            throw new InvalidDataException($"Checkpoint tensor '{name}.{(nestedAbsmax is null ? "nested_absmax" : "nested_quant_map")}' is missing (the other nested tensor is present).");
        if (nestedAbsmax is not null)
        {
            Check(absmax.dtype == ScalarType.Byte, $".absmax (uint8 expected with nested_absmax; found {absmax.dtype})");
            Check(nestedAbsmax.numel() == (blocks + NestedBlockSize - 1) / NestedBlockSize, $".nested_absmax ({(blocks + NestedBlockSize - 1) / NestedBlockSize} values expected; found {nestedAbsmax.numel()})");
            Check(nestedQuantMap!.numel() == 256, $".nested_quant_map (256 values expected; found {nestedQuantMap.numel()})");
        }
        Tensor F32(Tensor t) { using var o = Own(t, device); return o.reshape(-1).to_type(ScalarType.Float32); }
        Tensor Shaped(Tensor t, params long[] shape) { using var r = t.reshape(shape); return Own(r, device); }
        return new NF4Weight(outFeatures, inFeatures, computeDType, Shaped(packed, -1, 1),
            nestedAbsmax is null ? F32(absmax) : Shaped(absmax, -1), F32(quantMap),
            nestedAbsmax is null ? null : F32(nestedAbsmax), nestedQuantMap is null ? null : F32(nestedQuantMap), nestedOffset);
    }

    /// <summary>The absmax constant of every block, fp32 (blocks): dequantized first when double-quantized.</summary>
    public Tensor AbsmaxFloat32()
    {
        if (_nestedAbsmax is null) return _absmax.detach();                                          // a new wrapper of the stored constants
        using var scope = NewDisposeScope();
        var a = DynamicMap.DequantizeBlockwise(_absmax, _nestedAbsmax, _nestedQuantMap!, NestedBlockSize) + NestedOffset;
        return a.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor DequantizeFloat32()
    {
        using var scope = NewDisposeScope();
        long n = ElementCount, blocks = Blocks;
        _pairTable ??= PairTable().DetachFromDisposeScope();                                          // (256, 2) fp32
        var v = _pairTable.index_select(0, _packed.view(-1).to_type(ScalarType.Int32)).view(-1);      // (2·ceil(n/2)) levels
        if (v.shape[0] != blocks * BlockSize) v = nn.functional.pad(v.narrow(0, 0, n), [0, blocks * BlockSize - n]);
        using var absmax = AbsmaxFloat32();                                                          // (blocks)
        var w = (v.view(blocks, BlockSize) * absmax.unsqueeze(1)).view(-1).narrow(0, 0, n).view(OutFeatures, InFeatures);
        return w.MoveToOuterDisposeScope();
    }

    /// <summary>(256, 2): for every byte, the levels of its high and low nibble, so one gather decodes two values.</summary>
    Tensor PairTable()
    {
        using var scope = NewDisposeScope();
        var map = _quantMap.to(CPU).data<float>().ToArray();
        var table = new float[512];
        for (int b = 0; b < 256; b++) { table[2 * b] = map[b >> 4]; table[2 * b + 1] = map[b & 15]; }
        return tensor(table, [256, 2], device: Device).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override void MoveTo(Device device)
    {
        Move(ref _packed, device); Move(ref _absmax, device); Move(ref _quantMap, device);
        if (_nestedAbsmax is not null) { var t = _nestedAbsmax; Move(ref t, device); _nestedAbsmax = t; }
        if (_nestedQuantMap is not null) { var t = _nestedQuantMap; Move(ref t, device); _nestedQuantMap = t; }
        _pairTable?.Dispose(); _pairTable = null;
    }

    /// <inheritdoc/>
    protected override void DisposeTensors()
    {
        _packed.Dispose(); _absmax.Dispose(); _quantMap.Dispose();
        _nestedAbsmax?.Dispose(); _nestedQuantMap?.Dispose(); _pairTable?.Dispose();
    }
}
