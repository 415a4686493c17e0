using System.Buffers.Binary;

namespace QuanTA.Core.Export.Gguf;

/// <summary>The ggml tensor types this writer produces, with their <c>ggml_type</c> codes.</summary>
public enum GgmlType : uint
{
    /// <summary>IEEE-754 single, 4 bytes per element.</summary>
    F32 = 0,
    /// <summary>IEEE-754 half, 2 bytes per element.</summary>
    F16 = 1,
    /// <summary>Blocks of 32 elements: an fp16 scale d = absmax/127, then 32 int8 values round(x/d); 34 bytes per block.</summary>
    Q8_0 = 8,
    /// <summary>bfloat16 (the top 16 bits of an fp32, rounded to nearest even), 2 bytes per element.</summary>
    BF16 = 30,
}

/// <summary>Fills <paramref name="destination"/> with a tensor's values starting at element <paramref name="first"/>
/// (row-major order); <see cref="GgmlTensorEncoding.EncodeChunked"/> calls it once per chunk.</summary>
public delegate void ValueReader(long first, Span<float> destination);

/// <summary>
/// Encodes fp32 values as ggml tensor data, exactly as ggml's reference code does: fp16 and bf16 round to nearest even
/// (bf16 NaNs stay quiet NaNs, like <c>ggml_compute_fp32_to_bf16</c>); Q8_0 follows <c>quantize_row_q8_0_ref</c>
/// (d = absmax/127 in fp32, id = 1/d, q = roundf(x·id) rounding halves away from zero, d stored as fp16).
/// </summary>
public static class GgmlTensorEncoding
{
    /// <summary>Elements per Q8_0 block.</summary>
    public const int Q8_0BlockSize = 32;
    /// <summary>Bytes per Q8_0 block (fp16 scale + 32 int8).</summary>
    public const int Q8_0BlockBytes = 2 + Q8_0BlockSize;

    /// <summary>Bytes that <paramref name="elements"/> values take as <paramref name="type"/>.</summary>
    /// <exception cref="ArgumentException">Q8_0 with a count that is not a multiple of 32.</exception>
    public static long ByteCount(GgmlType type, long elements) => type switch
    {
        GgmlType.F32 => elements * 4,
        GgmlType.F16 or GgmlType.BF16 => elements * 2,
        GgmlType.Q8_0 => elements % Q8_0BlockSize == 0 ? elements / Q8_0BlockSize * Q8_0BlockBytes
            : throw new ArgumentException($"Q8_0 needs a multiple of {Q8_0BlockSize} elements per row; got {elements}."),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported ggml type"),
    };

    /// <summary>Encodes <paramref name="values"/> (row-major, rows of the innermost dimension) as <paramref name="type"/>.</summary>
    public static byte[] Encode(ReadOnlySpan<float> values, GgmlType type)
    {
        var bytes = new byte[ByteCount(type, values.Length)];
        Encode(values, type, bytes);
        return bytes;
    }

    /// <summary>
    /// Encodes <paramref name="values"/> as <paramref name="type"/> into the start of <paramref name="destination"/> and returns
    /// the number of bytes written (<see cref="ByteCount"/>). For Q8_0 the values must start at a block boundary.
    /// </summary>
    public static int Encode(ReadOnlySpan<float> values, GgmlType type, Span<byte> destination)
    {
        var byteCount = checked((int)ByteCount(type, values.Length));
        var bytes = destination[..byteCount];
        switch (type)
        {
            case GgmlType.F32:
                for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes[(4 * i)..], values[i]);
                break;
            case GgmlType.F16:
                for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(bytes[(2 * i)..], (Half)values[i]);
                break;
            case GgmlType.BF16:
                for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes[(2 * i)..], ToBFloat16(values[i]));
                break;
            case GgmlType.Q8_0:
                for (var b = 0; b < values.Length / Q8_0BlockSize; b++)
                    QuantizeBlockQ8_0(values.Slice(b * Q8_0BlockSize, Q8_0BlockSize), bytes.Slice(b * Q8_0BlockBytes, Q8_0BlockBytes));
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, "unsupported ggml type");
        }
        return byteCount;
    }

    /// <summary>
    /// Encodes <paramref name="elementCount"/> values as <paramref name="type"/> onto <paramref name="output"/> without holding
    /// them all: <paramref name="readValues"/>(first element, destination) fills up to <paramref name="chunkValues"/> values at a
    /// time, which are encoded and written before the next chunk is read. The bytes equal <see cref="Encode(ReadOnlySpan{float}, GgmlType)"/>
    /// of all values at once; managed memory stays about 8 bytes per chunk value, whatever the tensor's size (no 2 GiB array limit).
    /// </summary>
    /// <param name="output">Where the encoded bytes go, in order.</param>
    /// <param name="elementCount">Number of values of the tensor.</param>
    /// <param name="type">Storage type.</param>
    /// <param name="chunkValues">Values per chunk; a positive multiple of <see cref="Q8_0BlockSize"/> so a chunk never splits a Q8_0 block.</param>
    /// <param name="readValues">Fills the span with the values that start at the given element index (row-major order).</param>
    public static void EncodeChunked(Stream output, long elementCount, GgmlType type, int chunkValues, ValueReader readValues)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(readValues);
        if (chunkValues <= 0 || chunkValues % Q8_0BlockSize != 0)
            throw new ArgumentOutOfRangeException(nameof(chunkValues), chunkValues, $"the chunk must be a positive multiple of {Q8_0BlockSize} values (the Q8_0 block size).");
        ByteCount(type, elementCount);                                                      // refuses a Q8_0 count that splits a block
        var capacity = (int)Math.Min(chunkValues, elementCount);
        var values = new float[capacity];
        var bytes = new byte[ByteCount(type, capacity)];                                   // capacity: the chunk or the whole (block-aligned) tensor
        for (long first = 0; first < elementCount; first += capacity)
        {
            var chunk = values.AsSpan(0, (int)Math.Min(capacity, elementCount - first));
            readValues(first, chunk);
            output.Write(bytes, 0, Encode(chunk, type, bytes));
        }
    }

    /// <summary>fp32 → bf16 bits, round to nearest even; NaN → quiet NaN (ggml_compute_fp32_to_bf16).</summary>
    public static ushort ToBFloat16(float value)
    {
        var u = BitConverter.SingleToUInt32Bits(value);
        if ((u & 0x7fffffff) > 0x7f800000) return (ushort)((u >> 16) | 64);
        return (ushort)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
    }

    static void QuantizeBlockQ8_0(ReadOnlySpan<float> x, Span<byte> block)
    {
        var amax = 0f;
        foreach (var v in x) amax = Math.Max(amax, Math.Abs(v));
        var d = amax / 127f;
        var id = d != 0f ? 1f / d : 0f;
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
        for (var j = 0; j < Q8_0BlockSize; j++)
            block[2 + j] = unchecked((byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero));   // C roundf
    }
}
