using System.Buffers.Binary;
using System.Text;

namespace QuanTA.Core.Export.Gguf;

/// <summary>
/// The pieces of a SentencePiece <c>tokenizer.model</c> (a protobuf <c>ModelProto</c>): field 1 holds the repeated
/// <c>SentencePiece { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }</c>. Only these fields are
/// read; the trainer and normalizer specs are skipped. Piece types use the same codes as GGUF token types
/// (1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte).
/// </summary>
internal static class SentencePieceModelFile
{
    /// <summary>One vocabulary entry.</summary>
    internal readonly record struct Piece(string Text, float Score, int Type);

    /// <summary>Reads the pieces of <paramref name="path"/> in id order.</summary>
    /// <exception cref="InvalidDataException">the file is not a SentencePiece model (names the file and byte offset).</exception>
    public static List<Piece> Read(string path)
    {
        var data = File.ReadAllBytes(path);
        var pieces = new List<Piece>();
        var pos = 0;
        try
        {
            while (pos < data.Length)
            {
                var (field, wire) = Tag(data, ref pos);
                if (field == 1 && wire == 2)
                {
                    var len = (int)Varint(data, ref pos);
                    pieces.Add(ReadPiece(data.AsSpan(pos, len)));
                    pos += len;
                }
                else Skip(data, ref pos, wire);
            }
        }
        catch (Exception e) when (e is ArgumentOutOfRangeException or IndexOutOfRangeException or InvalidDataException)
        {
            throw new InvalidDataException($"'{path}' is not a readable SentencePiece model (protobuf error near byte {pos}: {e.Message}).", e);
        }
        if (pieces.Count == 0) throw new InvalidDataException($"'{path}' holds no SentencePiece pieces.");
        return pieces;
    }

    static Piece ReadPiece(ReadOnlySpan<byte> m)
    {
        var bytes = m.ToArray();
        string text = "";
        float score = 0;
        var type = 1;
        var pos = 0;
        while (pos < bytes.Length)
        {
            var (field, wire) = Tag(bytes, ref pos);
            switch (field, wire)
            {
                case (1, 2):
                    var len = (int)Varint(bytes, ref pos);
                    text = Encoding.UTF8.GetString(bytes, pos, len);
                    pos += len;
                    break;
                case (2, 5):
                    score = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(pos, 4));
                    pos += 4;
                    break;
                case (3, 0):
                    type = (int)Varint(bytes, ref pos);
                    break;
                default:
                    Skip(bytes, ref pos, wire);
                    break;
            }
        }
        return new Piece(text, score, type);
    }

    static (int Field, int Wire) Tag(byte[] data, ref int pos)
    {
        var tag = Varint(data, ref pos);
        return ((int)(tag >> 3), (int)(tag & 7));
    }

    static ulong Varint(byte[] data, ref int pos)
    {
        ulong result = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            var b = data[pos++];
            result |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return result;
        }
        throw new InvalidDataException("varint longer than 10 bytes");
    }

    static void Skip(byte[] data, ref int pos, int wire)
    {
        switch (wire)
        {
            case 0: Varint(data, ref pos); break;
            case 1: pos += 8; break;
            case 2: var len = (int)Varint(data, ref pos); pos += len; break;   // read the length before adding to pos
            case 5: pos += 4; break;
            default: throw new InvalidDataException($"unsupported protobuf wire type {wire}");
        }
        if (pos > data.Length) throw new InvalidDataException("field runs past the end of the data");
    }
}
