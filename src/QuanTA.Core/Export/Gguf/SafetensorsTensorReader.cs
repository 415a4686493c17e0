using System.Buffers.Binary;
using QuanTA.Core.Models;

namespace QuanTA.Core.Export.Gguf;

/// <summary>
/// Reads single tensors of a Hugging Face model folder's safetensors files as fp32, one at a time (the converter never
/// holds the whole model). Headers are read and checked by <see cref="SafetensorsReader.ReadHeader"/>; tensor data is read
/// here, one tensor at a time. Supports F32, F16 and BF16 tensors.
/// </summary>
internal sealed class SafetensorsTensorReader
{
    /// <summary>Where one tensor lies.</summary>
    internal sealed record Entry(string File, string DType, long[] Shape, long Begin, long End);

    readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    /// <summary>Indexes every tensor of the folder's weight files (<see cref="CheckpointLoader.FindWeightFiles"/>).</summary>
    public SafetensorsTensorReader(string modelDir)
    {
        foreach (var file in CheckpointLoader.FindWeightFiles(modelDir))
        {
            using var s = File.OpenRead(file);
            foreach (var e in SafetensorsReader.ReadHeader(s, file, out var dataStart))   // the header checked before anything is read
            {
                var name = e.Name.StartsWith("model.", StringComparison.Ordinal) || e.Name.StartsWith("lm_head.", StringComparison.Ordinal)
                    ? e.Name : "model." + e.Name;                 // a bare decoder checkpoint has no "model." prefix
                _entries[name] = new Entry(file, e.DType, e.Shape, dataStart + e.Begin, dataStart + e.End);
            }
        }
    }

    /// <summary>The tensor names (with the <c>model.</c> prefix of a causal LM).</summary>
    public IReadOnlyCollection<string> Names => _entries.Keys;

    /// <summary>Whether the checkpoint has <paramref name="name"/>.</summary>
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <summary>The shape of <paramref name="name"/>, outermost first.</summary>
    public long[] Shape(string name) => Get(name).Shape;

    /// <summary>The tensor <paramref name="name"/> as fp32 values in row-major order.</summary>
    public float[] ReadFloat32(string name)
    {
        var e = Get(name);
        var count = e.Shape.Aggregate(1L, (a, b) => a * b);
        var width = e.DType switch
        {
            "F32" => 4,
            "F16" or "BF16" => 2,
            _ => throw new NotSupportedException($"Tensor '{name}' in '{e.File}' has dtype {e.DType}; GGUF export reads F32, F16 and BF16 checkpoints."),
        };
        if (e.End - e.Begin != count * width)
            throw new InvalidDataException($"Tensor '{name}' in '{e.File}' has {e.End - e.Begin} bytes for shape [{string.Join(", ", e.Shape)}] {e.DType}. Copy or download the model again.");
        var bytes = new byte[e.End - e.Begin];
        using (var s = File.OpenRead(e.File))
        {
            s.Position = e.Begin;
            s.ReadExactly(bytes);
        }
        var values = new float[count];
        for (var i = 0; i < values.Length; i++)
            values[i] = e.DType switch
            {
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(4 * i)),
                "F16" => (float)BinaryPrimitives.ReadHalfLittleEndian(bytes.AsSpan(2 * i)),
                _ => BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(2 * i)) << 16),
            };
        return values;
    }

    Entry Get(string name) => _entries.TryGetValue(name, out var e) ? e
        : throw new KeyNotFoundException($"The checkpoint has no tensor '{name}' (it has {_entries.Count} tensors, e.g. {string.Join(", ", _entries.Keys.Take(4))}).");
}
