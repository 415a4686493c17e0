using System.Text;
using QuanTA.Core.Runtime;

namespace QuanTA.Core.Export.Gguf;

/// <summary>
/// One tensor to write: its GGUF name, its shape in PyTorch order (outermost dimension first; the file stores the reverse,
/// ggml's <c>ne[0]</c> = innermost), its type, and an action that writes its encoded bytes to the file (called once, while
/// the data section is written, so only one tensor is being produced at a time; it may write in pieces, so no tensor
/// needs to fit in one array).
/// </summary>
/// <param name="Name">Tensor name, e.g. <c>blk.0.attn_q.weight</c> (at most 64 bytes of UTF-8, per the specification).</param>
/// <param name="Shape">Dimensions, outermost first (a weight [out, in] has rows of <c>in</c> elements).</param>
/// <param name="Type">Storage type.</param>
/// <param name="WriteData">Writes exactly <see cref="GgmlTensorEncoding.ByteCount"/> bytes for the shape and type to the stream
/// it is given (e.g. with <see cref="GgmlTensorEncoding.EncodeChunked"/>), at the stream's position.</param>
public sealed record GgufTensor(string Name, IReadOnlyList<long> Shape, GgmlType Type, Action<Stream> WriteData)
{
    /// <summary>A tensor whose encoded bytes come as one array (small tensors; an array holds at most about 2 GiB).</summary>
    /// <param name="name">Tensor name.</param>
    /// <param name="shape">Dimensions, outermost first.</param>
    /// <param name="type">Storage type.</param>
    /// <param name="encodedData">Returns exactly <see cref="GgmlTensorEncoding.ByteCount"/> bytes for the shape and type.</param>
    public GgufTensor(string name, IReadOnlyList<long> shape, GgmlType type, Func<byte[]> encodedData)
        : this(name, shape, type, output => output.Write(encodedData()))
    {
    }

    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    /// <summary>Size of the encoded data in bytes.</summary>
    public long ByteCount => GgmlTensorEncoding.ByteCount(Type, ElementCount);
}

/// <summary>
/// Writes GGUF version 3 files (the ggml specification, <c>docs/gguf.md</c>): little-endian header (<c>GGUF</c>, version,
/// tensor count, metadata count), the typed metadata key/value pairs in the order given, the tensor infos (name, dims
/// innermost first, type, offset into the data section), padding to <c>general.alignment</c>, then each tensor's data
/// padded to the alignment. The file is written to a temporary file and renamed into place (<see cref="AtomicFile"/>).
/// </summary>
public static class GgufWriter
{
    /// <summary>"GGUF" read as a little-endian uint32.</summary>
    public const uint Magic = 0x46554747;
    /// <summary>The format version written.</summary>
    public const uint Version = 3;
    /// <summary>The alignment of the data section and of every tensor (the specification's default; also written as <c>general.alignment</c>).</summary>
    public const int Alignment = 32;
    /// <summary>The longest tensor name the specification allows, in bytes.</summary>
    public const int MaxTensorNameBytes = 64;

    /// <summary>
    /// Writes <paramref name="path"/> atomically. <c>general.alignment</c> is added (uint32 32) unless the metadata has it.
    /// </summary>
    /// <exception cref="ArgumentException">a duplicate key or tensor name, a name over 64 bytes, or a tensor whose data has the wrong size.</exception>
    public static void Write(string path, IReadOnlyList<KeyValuePair<string, GgufValue>> metadata, IReadOnlyList<GgufTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        ArgumentNullException.ThrowIfNull(tensors);
        var kvs = metadata.ToList();
        if (kvs.Select(kv => kv.Key).Distinct(StringComparer.Ordinal).Count() != kvs.Count)
            throw new ArgumentException("GGUF metadata has a duplicate key: " +
                string.Join(", ", kvs.GroupBy(kv => kv.Key).Where(g => g.Count() > 1).Select(g => g.Key)));
        if (!kvs.Any(kv => kv.Key == "general.alignment"))
            kvs.Insert(Math.Min(1, kvs.Count), new("general.alignment", GgufValue.U32(Alignment)));
        else if (kvs.First(kv => kv.Key == "general.alignment").Value is not { Type: GgufValueType.UInt32, Value: (uint)Alignment })
            throw new ArgumentException($"general.alignment must be uint32 {Alignment} (the only alignment this writer produces).");
        foreach (var dup in tensors.GroupBy(t => t.Name).Where(g => g.Count() > 1))
            throw new ArgumentException($"GGUF tensor name '{dup.Key}' appears {dup.Count()} times.");

        AtomicFile.Write(path, stream =>
        {
            using var w = new BinaryWriter(stream, new UTF8Encoding(false), leaveOpen: true);   // BinaryWriter is little-endian
            w.Write(Magic);
            w.Write(Version);
            w.Write((ulong)tensors.Count);
            w.Write((ulong)kvs.Count);
            foreach (var (key, value) in kvs)
            {
                WriteString(w, key);
                w.Write((uint)value.Type);
                WriteValue(w, value);
            }
            ulong offset = 0;
            foreach (var t in tensors)
            {
                if (Encoding.UTF8.GetByteCount(t.Name) > MaxTensorNameBytes)
                    throw new ArgumentException($"GGUF tensor name '{t.Name}' is longer than {MaxTensorNameBytes} bytes.");
                WriteString(w, t.Name);
                w.Write((uint)t.Shape.Count);
                for (var d = t.Shape.Count - 1; d >= 0; d--) w.Write((ulong)t.Shape[d]);       // ne[0] is the innermost dimension
                w.Write((uint)t.Type);
                w.Write(offset);
                offset += (ulong)Align(t.ByteCount);
            }
            Pad(w);
            foreach (var t in tensors)
            {
                w.Flush();
                var start = stream.Position;
                t.WriteData(stream);
                var written = stream.Position - start;
                if (written != t.ByteCount)
                    throw new ArgumentException($"GGUF tensor '{t.Name}': {written} bytes of data for shape [{string.Join(", ", t.Shape)}] {t.Type}, expected {t.ByteCount}.");
                Pad(w);
            }
        });
    }

    /// <summary><paramref name="n"/> rounded up to a multiple of <see cref="Alignment"/>.</summary>
    public static long Align(long n) => (n + Alignment - 1) / Alignment * Alignment;

    static void Pad(BinaryWriter w)
    {
        w.Flush();
        var pos = w.BaseStream.Position;
        for (var i = pos; i < Align(pos); i++) w.Write((byte)0);
    }

    static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    static void WriteValue(BinaryWriter w, GgufValue v)
    {
        if (v.Type != GgufValueType.Array) { WriteScalar(w, v.Type, v.Value); return; }
        var items = (System.Array)v.Value;
        w.Write((uint)v.ElementType);
        w.Write((ulong)items.Length);
        foreach (var item in items) WriteScalar(w, v.ElementType, item!);
    }

    static void WriteScalar(BinaryWriter w, GgufValueType type, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write((byte)value); break;
            case GgufValueType.Int8: w.Write((sbyte)value); break;
            case GgufValueType.UInt16: w.Write((ushort)value); break;
            case GgufValueType.Int16: w.Write((short)value); break;
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write((ulong)value); break;
            case GgufValueType.Int64: w.Write((long)value); break;
            case GgufValueType.Float64: w.Write((double)value); break;
            default: throw new ArgumentOutOfRangeException(nameof(type), type, "nested GGUF arrays are not written");
        }
    }
}
