using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace QuanTA.Core.Export;

/// <summary>One tensor to write: its name, shape and dtype up front (so shards can be planned and headers written before any
/// value is computed) and a function that produces it when its turn comes (so a merged multi-GB model never sits in memory whole).</summary>
/// <param name="Name">The state-dict key.</param>
/// <param name="Shape">The tensor's shape.</param>
/// <param name="DType">The dtype it is written in.</param>
/// <param name="Produce">Computes the tensor (any device; it is cast to <paramref name="DType"/> and copied to the CPU by the writer).</param>
public sealed record PlannedTensor(string Name, long[] Shape, ScalarType DType, Func<Tensor> Produce)
{
    /// <summary>Bytes the tensor takes in the file.</summary>
    public long ByteSize => Shape.Aggregate(1L, (a, d) => a * d) * SafetensorsWriter.ElementSize(DType);
}

/// <summary>
/// Writes safetensors files as the format's specification lays them out and as transformers/PEFT write them: an 8-byte
/// little-endian header length, a JSON header (padded with spaces to a multiple of 8 bytes) that holds
/// <c>"__metadata__": {"format": "pt"}</c> and each tensor's dtype, shape and byte range, then the tensors' little-endian bytes in
/// header order. Tensors are produced and written one at a time.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>The dtype names of the safetensors header for the dtypes the exporters write.</summary>
    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        _ => throw new NotSupportedException($"Cannot write dtype {t} to safetensors (supported: F32, F16, BF16, F64, I64, I32)."),
    };

    /// <summary>Bytes per element of <paramref name="t"/>.</summary>
    public static int ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 => 2,
        _ => throw new NotSupportedException($"Unsupported dtype {t}."),
    };

    /// <summary>Writes <paramref name="tensors"/> to <paramref name="path"/> (a new file; the caller places it atomically).</summary>
    public static void Write(string path, IReadOnlyList<PlannedTensor> tensors)
    {
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        foreach (var t in tensors)
        {
            if (header.ContainsKey(t.Name)) throw new ArgumentException($"Tensor '{t.Name}' is listed twice for '{path}'.");
            header[t.Name] = new JsonObject
            {
                ["dtype"] = DTypeName(t.DType),
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.ByteSize),
            };
            offset += t.ByteSize;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var s = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        s.Write(len);
        s.Write(json);
        for (int i = json.Length; i < padded; i++) s.WriteByte((byte)' ');
        foreach (var t in tensors)
        {
            using var scope = NewDisposeScope();
            var value = t.Produce();
            if (!value.shape.SequenceEqual(t.Shape))
                throw new InvalidOperationException($"Tensor '{t.Name}' has shape [{string.Join(", ", value.shape)}]; planned [{string.Join(", ", t.Shape)}].");
            var cpu = value.detach().to_type(t.DType).cpu().contiguous();
            if (BitConverter.IsLittleEndian) s.Write(cpu.bytes);
            else throw new PlatformNotSupportedException("Writing safetensors needs a little-endian machine.");
        }
        s.Flush(flushToDisk: true);
    }
}
