using System.Buffers.Binary;
using QuanTA.Core.Models;

namespace QuanTA.Core.Export.Gguf;

/// <summary>
/// Reads single tensors of a Hugging Face model folder's safetensors files as fp32, one range of values at a time (the
/// converter never holds the whole model, nor a whole tensor). Headers are read and checked by
/// <see cref="SafetensorsReader.ReadHeader"/>; tensor data is read here. Supports F32, F16 and BF16 tensors.
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

    /// <summary>
    /// Opens the tensor <paramref name="name"/> for reading ranges of its values as fp32 (row-major order), so a tensor of any
    /// size is read piece by piece; the dtype and the byte size are checked here.
    /// </summary>
    public TensorValues OpenValues(string name)
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
        return new TensorValues(name, e, count, width);
    }

    /// <summary>One open tensor: reads any range of its values as fp32 with positional reads of its file.</summary>
    internal sealed class TensorValues : IDisposable
    {
        readonly string _name;
        readonly Entry _entry;
        readonly int _width;
        readonly Microsoft.Win32.SafeHandles.SafeFileHandle _file;
        byte[] _raw = [];

        internal TensorValues(string name, Entry entry, long count, int width)
        {
            (_name, _entry, Count, _width) = (name, entry, count, width);
            _file = File.OpenHandle(entry.File);
        }

        /// <summary>Number of values of the tensor.</summary>
        public long Count { get; }

        /// <summary>Fills <paramref name="destination"/> with the values that start at element <paramref name="first"/>.</summary>
        public void Read(long first, Span<float> destination)
        {
            if (first < 0 || first + destination.Length > Count)
                throw new ArgumentOutOfRangeException(nameof(first), $"values [{first}, {first + destination.Length}) of tensor '{_name}', which has {Count}.");
            var byteCount = checked(destination.Length * _width);
            if (_raw.Length < byteCount) _raw = new byte[byteCount];                   // grows to the largest range asked for (a chunk)
            var raw = _raw.AsSpan(0, byteCount);
            for (var done = 0; done < byteCount;)
            {
                var n = RandomAccess.Read(_file, raw[done..], _entry.Begin + first * _width + done);
                if (n == 0) throw new EndOfStreamException($"'{_entry.File}' ends inside tensor '{_name}'. Copy or download the model again.");
                done += n;
            }
            switch (_entry.DType)
            {
                case "F32":
                    for (var i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(raw[(4 * i)..]);
                    break;
                case "F16":
                    for (var i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(raw[(2 * i)..]);
                    break;
                default:                                                                  // BF16: the top 16 bits of an fp32
                    for (var i = 0; i < destination.Length; i++) destination[i] = BitConverter.UInt32BitsToSingle((uint)BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]) << 16);
                    break;
            }
        }

        /// <summary>Closes the file.</summary>
        public void Dispose() => _file.Dispose();
    }

    Entry Get(string name) => _entries.TryGetValue(name, out var e) ? e
        : throw new KeyNotFoundException($"The checkpoint has no tensor '{name}' (it has {_entries.Count} tensors, e.g. {string.Join(", ", _entries.Keys.Take(4))}).");
}
