using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using CsCheck;

namespace QuanTA.Tests.Robustness;

/// <summary>One way of damaging a file's bytes. Positions are drawn as plain integers and taken modulo the file's length, so
/// one generator serves every file; <see cref="object.ToString"/> is what CsCheck prints for a failing case.</summary>
internal abstract record Fault
{
    /// <summary>The damaged copy of <paramref name="original"/>.</summary>
    public abstract byte[] Apply(byte[] original);

    /// <summary>Index into a sequence of <paramref name="count"/> items (count ≥ 1).</summary>
    protected static int Pick(int draw, int count) => (int)((uint)draw % (uint)Math.Max(count, 1));
}

/// <summary>Keeps the first bytes only (a copy or download cut short).</summary>
internal sealed record Truncate(int Draw) : Fault
{
    public override byte[] Apply(byte[] original) => original[..Pick(Draw, original.Length)];
}

/// <summary>XORs a few bytes (bit rot, a bad disk).</summary>
internal sealed record FlipBytes(int[] Positions, byte[] Masks) : Fault
{
    public override byte[] Apply(byte[] original)
    {
        var copy = (byte[])original.Clone();
        if (copy.Length == 0) return copy;
        for (int i = 0; i < Positions.Length; i++) copy[Pick(Positions[i], copy.Length)] ^= Masks[i % Masks.Length] == 0 ? (byte)1 : Masks[i % Masks.Length];
        return copy;
    }

    public override string ToString() => $"FlipBytes {{ Positions = [{string.Join(", ", Positions)}], Masks = [{string.Join(", ", Masks)}] }}";
}

/// <summary>Inserts an oversized or hostile run of bytes somewhere (very long line, deep nesting, huge number, bad UTF-8).</summary>
internal sealed record Insert(int Draw, int Kind) : Fault
{
    public override byte[] Apply(byte[] original)
    {
        int at = Pick(Draw, original.Length + 1);
        return [.. original.AsSpan(0, at), .. Payloads.Hostile[Pick(Kind, Payloads.Hostile.Length)], .. original.AsSpan(at)];
    }
}

/// <summary>Replaces one JSON value (picked by depth, then by position) with a hostile one, or renames one key (a key gone missing).</summary>
internal sealed record JsonEdit(int DepthDraw, int IndexDraw, int Kind, bool RenameKey) : Fault
{
    public override byte[] Apply(byte[] original)
    {
        var spans = JsonSpans.Of(original, RenameKey);
        if (spans.Count == 0) return original;
        var depths = spans.Select(s => s.Depth).Distinct().Order().ToArray();
        int depth = depths[Pick(DepthDraw, depths.Length)];
        var atDepth = spans.Where(s => s.Depth == depth).ToList();
        var (start, end, _) = atDepth[Pick(IndexDraw, atDepth.Count)];
        byte[] replacement = RenameKey ? "\"renamed_by_test\""u8.ToArray() : Payloads.JsonValues[Pick(Kind, Payloads.JsonValues.Length)];
        return [.. original.AsSpan(0, start), .. replacement, .. original.AsSpan(end)];
    }
}

/// <summary>Sets the 8-byte header length of a safetensors file (e.g. 2^60).</summary>
internal sealed record SafetensorsHeaderLength(ulong Value) : Fault
{
    public override byte[] Apply(byte[] original)
    {
        var copy = (byte[])original.Clone();
        if (copy.Length >= 8) BinaryPrimitives.WriteUInt64LittleEndian(copy, Value);
        return copy;
    }
}

/// <summary>Edits the JSON header of a safetensors file and writes the new header length, so the header parses and its fields are tested.</summary>
internal sealed record SafetensorsHeaderEdit(JsonEdit Edit) : Fault
{
    public override byte[] Apply(byte[] original)
    {
        if (original.Length < 8) return original;
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(original);
        if (n > (ulong)(original.Length - 8)) return original;
        var header = Edit.Apply(original[8..(8 + (int)n)]);
        var result = new byte[8 + header.Length + (original.Length - 8 - (int)n)];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)header.Length);
        header.CopyTo(result, 8);
        original.AsSpan(8 + (int)n).CopyTo(result.AsSpan(8 + header.Length));
        return result;
    }
}

/// <summary>The hostile values the faults insert.</summary>
internal static class Payloads
{
    static byte[] U(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>Raw byte runs for <see cref="Insert"/>.</summary>
    public static readonly byte[][] Hostile =
    [
        U(new string('a', 300_000)),                                  // a very long line
        U(new string('[', 20_000)),                                   // deep nesting
        U(new string('{', 5_000) + "\"a\":" + new string('[', 5_000)),
        U(new string('9', 400)),                                      // a huge number
        U("\n\n\n"),
        [0xFF, 0xFE, 0xC3, 0x28, 0x00],                               // invalid UTF-8 and a NUL
        U("\"\\ud800\""),                                             // a lone surrogate escape
        U(",,,"),
    ];

    /// <summary>JSON values for <see cref="JsonEdit"/>: huge, negative, fractional, wrong-typed, empty, deeply nested, very long.</summary>
    public static readonly byte[][] JsonValues =
    [
        U("1152921504606846976"), U("9223372036854775807"), U("18446744073709551616"), U("2147483648"), U("-2147483649"),
        U("-1"), U("0"), U("1e308"), U("1e400"), U("-0.5"), U("3.25"), U("null"), U("true"), U("\"\""), U("\"x\""), U("[]"), U("{}"),
        U("[null]"), U("[-1, -1]"), U("[1152921504606846976, 1152921504606846976]"), U("{\"a\": null}"),
        U(new string('[', 10_000) + new string(']', 10_000)),
        U("\"" + new string('x', 300_000) + "\""),
        U("[" + string.Join(",", Enumerable.Repeat("0", 50_000)) + "]"),
    ];
}

/// <summary>Byte spans of the JSON values (or property names) of a document, with their depth.</summary>
internal static class JsonSpans
{
    public static List<(int Start, int End, int Depth)> Of(byte[] json, bool propertyNames)
    {
        var spans = new List<(int, int, int)>();
        var options = new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true, MaxDepth = 256, AllowMultipleValues = true };
        try
        {
            var reader = new Utf8JsonReader(json, options);
            while (reader.Read())
            {
                if (reader.TokenType is JsonTokenType.EndObject or JsonTokenType.EndArray or JsonTokenType.Comment) continue;
                bool isName = reader.TokenType == JsonTokenType.PropertyName;
                if (isName != propertyNames) continue;
                int start = (int)reader.TokenStartIndex;
                var copy = reader;             // a struct: measure the value's end on a copy, keep walking into it on the original
                if (!isName) copy.Skip();
                spans.Add((start, (int)copy.BytesConsumed, reader.CurrentDepth));
            }
        }
        catch (JsonException) { }              // not JSON (e.g. already damaged): the spans found so far
        return spans;
    }
}

/// <summary>CsCheck generators of <see cref="Fault"/>s.</summary>
internal static class FaultGen
{
    static readonly Gen<int> Draw = Gen.Int[0, int.MaxValue];

    public static readonly Gen<Fault> Truncation = Draw.Select(d => (Fault)new Truncate(d));

    public static readonly Gen<Fault> ByteFlips =
        Gen.Select(Draw.Array[1, 8], Gen.Byte[1, 255].Array[1, 8], (p, m) => (Fault)new FlipBytes(p, m));

    public static readonly Gen<Fault> Oversized = Gen.Select(Draw, Gen.Int[0, 63], (d, k) => (Fault)new Insert(d, k));

    public static readonly Gen<Fault> JsonValue =
        Gen.Select(Draw, Draw, Gen.Int[0, 63], (a, b, k) => (Fault)new JsonEdit(a, b, k, RenameKey: false));

    public static readonly Gen<Fault> JsonKey = Gen.Select(Draw, Draw, (a, b) => (Fault)new JsonEdit(a, b, 0, RenameKey: true));

    /// <summary>Every fault kind for a JSON (or JSON Lines) file.</summary>
    public static readonly Gen<Fault> ForJson = Gen.Frequency((2, Truncation), (2, ByteFlips), (1, Oversized), (4, JsonValue), (2, JsonKey));

    /// <summary>Every fault kind for a text or binary file that is not JSON.</summary>
    public static readonly Gen<Fault> ForBytes = Gen.Frequency((2, Truncation), (3, ByteFlips), (1, Oversized));

    /// <summary>Header lengths a hostile safetensors file may claim.</summary>
    public static readonly Gen<Fault> HeaderLength = Gen.OneOf(
        Gen.Const(1UL << 60), Gen.Const(ulong.MaxValue), Gen.Const((ulong)int.MaxValue), Gen.Const(0UL), Gen.Const(1UL),
        Gen.ULong, Gen.ULong[0, 1 << 20]).Select(v => (Fault)new SafetensorsHeaderLength(v));

    /// <summary>Every fault kind for a safetensors file: its length field, its header's fields, truncation, flips.</summary>
    public static readonly Gen<Fault> ForSafetensors = Gen.Frequency(
        (2, HeaderLength), (4, Gen.Select(JsonValue, JsonKey, Gen.Bool, (v, k, b) => (Fault)new SafetensorsHeaderEdit((JsonEdit)(b ? v : k)))),
        (2, Truncation), (2, ByteFlips));
}
