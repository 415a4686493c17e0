using System.Globalization;
using System.Text;

namespace QuanTA.Core.Chat.Templates;

/// <summary>Decodes the escapes of a Jinja string literal the way Jinja does (Python's "unicode-escape" codec).</summary>
internal static class StringEscapes
{
    public static string Decode(string body)
    {
        if (!body.Contains('\\')) return body;
        var sb = new StringBuilder(body.Length);
        for (int i = 0; i < body.Length; i++)
        {
            char c = body[i];
            if (c != '\\' || i + 1 >= body.Length)
            {
                sb.Append(c);
                continue;
            }
            char e = body[++i];
            switch (e)
            {
                case '\n': break; // line continuation
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case 'x': i = AppendHex(sb, body, i, 2); break;
                case 'u': i = AppendHex(sb, body, i, 4); break;
                case 'U': i = AppendHex(sb, body, i, 8); break;
                case >= '0' and <= '7':
                    int value = 0, digits = 0;
                    while (digits < 3 && i < body.Length && body[i] is >= '0' and <= '7')
                    {
                        value = value * 8 + (body[i] - '0');
                        i++;
                        digits++;
                    }
                    i--;
                    PyStr.Append(sb, value);
                    break;
                case 'N': throw new JinjaRuntimeError("\\N{...} escapes in string literals are not supported");
                default: sb.Append('\\').Append(e); break;
            }
        }
        return sb.ToString();
    }

    // body[i] is the escape letter; reads exactly `count` hex digits after it.
    static int AppendHex(StringBuilder sb, string body, int i, int count)
    {
        if (!IsHex(body, i + 1, count))
            throw new JinjaRuntimeError($"truncated \\{body[i]} escape in a string literal");
        int cp = int.Parse(body.AsSpan(i + 1, count), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        if (cp > 0x10FFFF) throw new JinjaRuntimeError("illegal Unicode character in a string literal");
        PyStr.Append(sb, cp);
        return i + count;
    }

    static bool IsHex(string s, int start, int count)
    {
        if (start + count > s.Length) return false;
        for (int k = start; k < start + count; k++)
            if (!char.IsAsciiHexDigit(s[k])) return false;
        return true;
    }
}
