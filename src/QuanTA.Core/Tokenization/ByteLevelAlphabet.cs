using System.Text;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// GPT-2's reversible byte ↔ printable-character table (<c>bytes_to_unicode</c> in OpenAI's encoder.py and in
/// Hugging Face tokenizers' ByteLevel pre-tokenizer/decoder). Printable Latin-1 bytes map to themselves; the other
/// 68 bytes map to U+0100.. in byte order (space 0x20 → 'Ġ', newline 0x0A → 'Ċ').
/// </summary>
internal static class ByteLevelAlphabet
{
    /// <summary>byte → char.</summary>
    public static readonly char[] ByteToChar = Build();

    /// <summary>char → byte, for the 256 chars of the table.</summary>
    public static readonly Dictionary<char, byte> CharToByte =
        Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    static char[] Build()
    {
        var map = new char[256];
        var isDirect = new bool[256];
        for (int b = '!'; b <= '~'; b++) isDirect[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++) isDirect[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++) isDirect[b] = true;
        int next = 0;
        for (int b = 0; b < 256; b++)
            map[b] = isDirect[b] ? (char)b : (char)(256 + next++);
        return map;
    }

    /// <summary>UTF-8 bytes of <paramref name="text"/>, each written as its table char (what BPE vocabularies hold).</summary>
    public static string Encode(ReadOnlySpan<char> text)
    {
        var bytes = Encoding.UTF8.GetBytes(text.ToArray());
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>
    /// Appends the bytes a token stands for, as the ByteLevel decoder of HF tokenizers does: when every char of the
    /// token is in the table its bytes are used, otherwise (e.g. an added token with non-table chars) its raw UTF-8.
    /// </summary>
    public static void AppendTokenBytes(string token, List<byte> sink)
    {
        foreach (var c in token)
        {
            if (!CharToByte.ContainsKey(c))
            {
                sink.AddRange(Encoding.UTF8.GetBytes(token));
                return;
            }
        }
        foreach (var c in token) sink.Add(CharToByte[c]);
    }
}
