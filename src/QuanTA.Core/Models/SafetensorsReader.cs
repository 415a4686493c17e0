using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models;

/// <summary>One tensor entry of a safetensors header: its name, dtype, shape and byte range in the data section.</summary>
/// <param name="Name">The tensor's key.</param>
/// <param name="DType">The safetensors dtype string (e.g. <c>F32</c>, <c>BF16</c>).</param>
/// <param name="Shape">The shape (non-negative sizes).</param>
/// <param name="Begin">First byte, relative to the data section (after the 8-byte length and the header).</param>
/// <param name="End">One past the last byte, relative to the data section.</param>
public sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>
/// Reads safetensors files (the format of Hugging Face checkpoints and of this library's adapters and checkpoints) and checks
/// the whole header before allocating anything: the 8-byte header length against the file's length and a 100 MB cap (the
/// reference implementation's limit), the JSON, every dtype, shape and <c>data_offsets</c> pair. The tensors' byte ranges must
/// follow each other from the start of the data section, in order, with no gap or overlap, and end within the file (as the
/// reference implementation requires; unlike it, bytes after the last tensor are ignored), and each range's length must equal its shape's element count × the dtype's size, computed without overflow.
/// So a file can never make the reader allocate more than its own size. Every problem is an
/// <see cref="InvalidDataException"/> naming the file and, where there is one, the tensor.
/// </summary>
public static class SafetensorsReader
{
    /// <summary>Largest header accepted, in bytes (the reference implementation's <c>MAX_HEADER_SIZE</c>).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    const string Advice = "Copy or download the file again; it is truncated or corrupt, or not a safetensors file.";

    /// <summary>Reads the tensors of <paramref name="path"/> (all of them, or those named in <paramref name="keysToKeep"/>) onto the CPU.</summary>
    /// <exception cref="FileNotFoundException">the file does not exist.</exception>
    /// <exception cref="InvalidDataException">the file is not a valid safetensors file (the message says what is wrong).</exception>
    public static Dictionary<string, Tensor> Read(string path, IReadOnlyCollection<string>? keysToKeep = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file not found: {path}", path);
        using var stream = File.OpenRead(path);
        return Read(stream, path, keysToKeep);
    }

    /// <summary>Reads the tensors of a safetensors <paramref name="stream"/> (seekable; read from its current position to its end).</summary>
    /// <param name="stream">The file's bytes.</param>
    /// <param name="source">What error messages call the stream (a file name).</param>
    /// <param name="keysToKeep">Tensors to read; null reads all.</param>
    /// <exception cref="InvalidDataException">the bytes are not a valid safetensors file.</exception>
    public static Dictionary<string, Tensor> Read(Stream stream, string source, IReadOnlyCollection<string>? keysToKeep = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        long start = stream.Position;
        var entries = ReadHeader(stream, source, out long dataStart);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var e in entries)
            {
                if (keysToKeep is not null && !keysToKeep.Contains(e.Name)) continue;
                long length = e.End - e.Begin;
                if (length > Array.MaxLength)
                    throw new InvalidDataException($"'{source}': tensor '{e.Name}' is {length:N0} bytes; tensors over {Array.MaxLength:N0} bytes are not supported.");
                var bytes = new byte[length];
                stream.Position = start + dataStart + e.Begin;
                stream.ReadExactly(bytes);
                var t = empty(e.Shape, dtype: TorchDType(e.DType));
                result.Add(e.Name, t);
                if (length > 0) t.bytes = bytes;
            }
            return result;
        }
        catch (Exception ex) when (ex is EndOfStreamException)
        {
            foreach (var t in result.Values) t.Dispose();
            throw new InvalidDataException($"'{source}' ends inside its tensor data. {Advice}", ex);
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads and checks the header of a safetensors stream (at its current position) without reading the tensor data.
    /// </summary>
    /// <param name="stream">The file's bytes (seekable).</param>
    /// <param name="source">What error messages call the stream.</param>
    /// <param name="dataStart">Offset of the data section from the stream's position on entry (8 + header length).</param>
    /// <returns>The tensor entries, in data order (<c>__metadata__</c> left out).</returns>
    /// <exception cref="InvalidDataException">the header is invalid (the message says what is wrong).</exception>
    public static IReadOnlyList<SafetensorsEntry> ReadHeader(Stream stream, string source, out long dataStart)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(source);
        long available = stream.Length - stream.Position;
        if (available < 8)
            throw new InvalidDataException($"'{source}' is {available} bytes long, too short for a safetensors file (8-byte header length, then the header). {Advice}");
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(available - 8))
            throw new InvalidDataException($"'{source}': the header claims {headerLength:N0} bytes but the file has only {available - 8:N0} after the length field. {Advice}");
        if (headerLength > MaxHeaderBytes)
            throw new InvalidDataException($"'{source}': the header claims {headerLength:N0} bytes, over the {MaxHeaderBytes:N0}-byte limit of the format. {Advice}");
        if (headerLength < 2)
            throw new InvalidDataException($"'{source}': the header is {headerLength} bytes, too short for a JSON object. {Advice}");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        dataStart = 8 + (long)headerLength;
        var entries = ParseHeader(header, source);
        CheckLayout(entries, available - dataStart, source);
        return entries;
    }

    static List<SafetensorsEntry> ParseHeader(byte[] header, string source)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}': the header is not valid JSON ({e.Message}). {Advice}", e);
        }
        catch (ArgumentException e)   // invalid UTF-8 in the header
        {
            throw new InvalidDataException($"'{source}': the header is not valid UTF-8 JSON ({e.Message}). {Advice}", e);
        }
        using (doc)
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"'{source}': the header is a JSON {doc.RootElement.ValueKind}, not an object. {Advice}");
            var entries = new List<SafetensorsEntry>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(p.Name)) throw new InvalidDataException($"'{source}': the header lists tensor '{p.Name}' twice. {Advice}");
                if (p.Name == "__metadata__") continue;
                entries.Add(ParseEntry(p.Name, p.Value, source));
            }
            return entries;
        }
        catch (InvalidOperationException e)   // a name or string that is not valid UTF-8
        {
            throw new InvalidDataException($"'{source}': the header holds a string that is not valid UTF-8 ({e.Message}). {Advice}", e);
        }
    }

    static SafetensorsEntry ParseEntry(string name, JsonElement e, string source)
    {
        InvalidDataException Bad(string what) => new($"'{source}': tensor '{name}' {what}. {Advice}");
        if (e.ValueKind != JsonValueKind.Object) throw Bad($"is a JSON {e.ValueKind}, not an object with dtype, shape and data_offsets");
        if (!e.TryGetProperty("dtype", out var d) || d.ValueKind != JsonValueKind.String) throw Bad("has no \"dtype\" string");
        string dtype = d.GetString()!;
        int elementSize = ElementSize(dtype) ?? throw Bad($"has dtype \"{dtype}\", which is not supported (supported: {string.Join(", ", DTypes.Keys)})");
        if (!e.TryGetProperty("shape", out var s) || s.ValueKind != JsonValueKind.Array) throw Bad("has no \"shape\" array");
        var shape = new long[s.GetArrayLength()];
        long count = 1;
        int i = 0;
        foreach (var dim in s.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long n) || n < 0)
                throw Bad($"has shape entry {dim.GetRawText()}, not a non-negative integer");
            shape[i++] = n;
            try { count = checked(count * n); }
            catch (OverflowException) { throw Bad($"has shape [{string.Join(", ", s.EnumerateArray().Select(x => x.GetRawText()))}], whose element count overflows"); }
        }
        if (!e.TryGetProperty("data_offsets", out var o) || o.ValueKind != JsonValueKind.Array || o.GetArrayLength() != 2)
            throw Bad("has no \"data_offsets\" pair [begin, end]");
        if (!o[0].TryGetInt64Strict(out long begin) || !o[1].TryGetInt64Strict(out long end) || begin < 0 || end < begin)
            throw Bad($"has data_offsets {o.GetRawText()}, not two integers 0 ≤ begin ≤ end");
        long bytes;
        try { bytes = checked(count * elementSize); }
        catch (OverflowException) { throw Bad($"has shape [{string.Join(", ", shape)}] of {dtype}, whose size in bytes overflows"); }
        if (end - begin != bytes)
            throw Bad($"has data_offsets [{begin}, {end}] ({end - begin:N0} bytes) but shape [{string.Join(", ", shape)}] of {dtype} needs {bytes:N0} bytes");
        return new SafetensorsEntry(name, dtype, shape, begin, end);
    }

    static bool TryGetInt64Strict(this JsonElement e, out long value)
    {
        value = 0;
        return e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out value);
    }

    /// <summary>The byte ranges must follow each other from 0 in order (no gap, no overlap) and end within the data; bytes after
    /// the last tensor are ignored (TorchSharp.PyBridge's path overload of SaveStateDict leaves them when it overwrites a longer file).</summary>
    static void CheckLayout(List<SafetensorsEntry> entries, long dataLength, string source)
    {
        entries.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long expected = 0;
        string? previous = null;
        foreach (var e in entries)
        {
            if (e.Begin != expected)
            {
                string where = previous is null ? "the start of the data" : $"the end of tensor '{previous}' ({expected:N0})";
                string what = e.Begin < expected ? "overlaps" : "leaves a gap after";
                throw new InvalidDataException($"'{source}': tensor '{e.Name}' has data_offsets [{e.Begin}, {e.End}], which {what} {where}. {Advice}");
            }
            if (e.End > dataLength)
                throw new InvalidDataException($"'{source}': tensor '{e.Name}' has data_offsets [{e.Begin}, {e.End}] past the end of the data ({dataLength:N0} bytes): the file is truncated. {Advice}");
            expected = e.End;
            previous = e.Name;
        }
    }

    static readonly Dictionary<string, (ScalarType Type, int Size)> DTypes = new(StringComparer.Ordinal)
    {
        ["F64"] = (ScalarType.Float64, 8), ["F32"] = (ScalarType.Float32, 4), ["F16"] = (ScalarType.Float16, 2),
        ["BF16"] = (ScalarType.BFloat16, 2), ["I64"] = (ScalarType.Int64, 8), ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2), ["I8"] = (ScalarType.Int8, 1), ["U8"] = (ScalarType.Byte, 1), ["BOOL"] = (ScalarType.Bool, 1),
    };

    static int? ElementSize(string dtype) => DTypes.TryGetValue(dtype, out var d) ? d.Size : null;

    static ScalarType TorchDType(string dtype) => DTypes[dtype].Type;
}
