using System.Globalization;
using System.Text;

namespace QuanTA.Core.Chat.Templates;

/// <summary>Python's text forms of values: <c>str()</c>, <c>repr()</c>, float repr, <c>json.dumps</c> and <c>%</c> formatting.</summary>
internal static class PyFormat
{
    /// <summary>Python's <c>str(v)</c> (what <c>{{ v }}</c> prints; Undefined prints as "").</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        JinjaUndefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's <c>repr(v)</c>.</summary>
    public static string Repr(object? v)
    {
        switch (v)
        {
            case null: return "None";
            case bool b: return b ? "True" : "False";
            case long l: return l.ToString(CultureInfo.InvariantCulture);
            case double d: return FloatRepr(d);
            case string s: return StringRepr(s);
            case JinjaUndefined: return "Undefined";
            case List<object?> list: return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case JinjaTuple t:
                return t.Items.Count == 1 ? "(" + Repr(t.Items[0]) + ",)" : "(" + string.Join(", ", t.Items.Select(Repr)) + ")";
            case JinjaDict d: return "{" + string.Join(", ", d.Items.Select(kv => Repr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            case JinjaNamespace ns:
                return "<Namespace {" + string.Join(", ", ns.Attributes.Select(kv => StringRepr(kv.Key) + ": " + Repr(kv.Value))) + "}>";
            default: return v.ToString() ?? "";
        }
    }

    /// <summary>CPython's <c>repr(str)</c>: single quotes unless the text has ' and no ", escapes for unprintables.</summary>
    public static string StringRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(quote);
        foreach (int c in PyStr.ToCodePoints(s))
        {
            if (c == quote || c == '\\') sb.Append('\\').Append((char)c);
            else if (c == '\t') sb.Append("\\t");
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c < ' ' || c == 0x7f) sb.Append("\\x").Append(c.ToString("x2"));
            else if (c < 0x7f || PyStr.IsPrintable(c)) PyStr.Append(sb, c);
            else if (c <= 0xff) sb.Append("\\x").Append(c.ToString("x2"));
            else if (c <= 0xffff) sb.Append("\\u").Append(c.ToString("x4"));
            else sb.Append("\\U").Append(c.ToString("x8"));
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>CPython's <c>repr(float)</c>: shortest round-trip digits, exponent form outside 1e-4 .. 1e16.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // "R" gives the shortest round-trip digits; split them into a digit string and a decimal exponent.
        (string digits, int exp) = SplitDigits(Math.Abs(d).ToString("R", CultureInfo.InvariantCulture));
        int decpt = exp + 1; // position of the decimal point relative to the first digit
        var sb = new StringBuilder();
        if (d < 0) sb.Append('-');
        if (decpt <= -4 || decpt > 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            int e = decpt - 1;
            sb.Append('e').Append(e < 0 ? '-' : '+').Append(Math.Abs(e).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (decpt <= 0) sb.Append("0.").Append('0', -decpt).Append(digits);
        else if (decpt >= digits.Length) sb.Append(digits).Append('0', decpt - digits.Length).Append(".0");
        else sb.Append(digits, 0, decpt).Append('.').Append(digits, decpt, digits.Length - decpt);
        return sb.ToString();
    }

    // Digits (no leading/trailing zeros) and the power of ten of the first digit, from .NET's shortest "R" text.
    static (string Digits, int Exponent) SplitDigits(string shortest)
    {
        string mantissa = shortest;
        int exp10 = 0;
        int e = shortest.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            mantissa = shortest[..e];
            exp10 = int.Parse(shortest[(e + 1)..], CultureInfo.InvariantCulture);
        }
        int dot = mantissa.IndexOf('.');
        string intPart = dot < 0 ? mantissa : mantissa[..dot];
        string frac = dot < 0 ? "" : mantissa[(dot + 1)..];
        string all = intPart + frac;
        int firstNonZero = 0;
        while (firstNonZero < all.Length - 1 && all[firstNonZero] == '0') firstNonZero++;
        string digits = all[firstNonZero..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int exponent = intPart.Length - 1 - firstNonZero + exp10;
        return (digits, exponent);
    }

    /// <summary>
    /// Python's <c>json.dumps</c> as transformers' <c>tojson</c> filter calls it: <c>ensure_ascii</c>, <c>indent</c>
    /// (int or string), <c>separators</c> (default ", "/": ", or ","/": " with an indent) and <c>sort_keys</c>.
    /// </summary>
    public static string JsonDumps(object? v, bool ensureAscii, string? indent, string? itemSeparator, string? keySeparator, bool sortKeys)
    {
        var sb = new StringBuilder();
        itemSeparator ??= indent is null ? ", " : ",";
        keySeparator ??= ": ";
        WriteJson(sb, v, ensureAscii, indent, itemSeparator, keySeparator, sortKeys, 0);
        return sb.ToString();
    }

    static void WriteJson(StringBuilder sb, object? v, bool ascii, string? indent, string itemSep, string keySep, bool sort, int level)
    {
        switch (v)
        {
            case null: sb.Append("null"); return;
            case bool b: sb.Append(b ? "true" : "false"); return;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); return;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : FloatRepr(d));
                return;
            case string s: JsonString(sb, s, ascii); return;
            case JinjaDict dict:
                var items = dict.Items.Select(kv => (Key: JsonKey(kv.Key), kv.Value)).ToList();
                if (sort) items.Sort((a, b) => PyStr.CompareCodePoints(a.Key, b.Key));
                WriteContainer(sb, '{', '}', items.Count, indent, itemSep, level, i =>
                {
                    JsonString(sb, items[i].Key, ascii);
                    sb.Append(keySep);
                    WriteJson(sb, items[i].Value, ascii, indent, itemSep, keySep, sort, level + 1);
                });
                return;
            default:
                var seq = PyOps.AsSequence(v) ?? throw new JinjaRuntimeError($"Object of type {PyOps.TypeName(v)} is not JSON serializable");
                WriteContainer(sb, '[', ']', seq.Count, indent, itemSep, level,
                    i => WriteJson(sb, seq[i], ascii, indent, itemSep, keySep, sort, level + 1));
                return;
        }
    }

    static void WriteContainer(StringBuilder sb, char open, char close, int count, string? indent, string itemSep, int level, Action<int> item)
    {
        sb.Append(open);
        if (count == 0) { sb.Append(close); return; }
        string? inner = indent is null ? null : "\n" + string.Concat(Enumerable.Repeat(indent, level + 1));
        for (int i = 0; i < count; i++)
        {
            sb.Append(i == 0 ? inner ?? "" : itemSep + (inner ?? ""));
            item(i);
        }
        if (indent is not null) sb.Append('\n').Append(string.Concat(Enumerable.Repeat(indent, level)));
        sb.Append(close);
    }

    static string JsonKey(object? key) => key switch
    {
        string s => s,
        null => "null",
        bool b => b ? "true" : "false",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d),
        _ => throw new JinjaRuntimeError($"keys must be str, int, float, bool or None, not {PyOps.TypeName(key)}"),
    };

    static void JsonString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < ' ' || (ascii && c > '~')) sb.Append("\\u").Append(((int)c).ToString("x4"));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>Python's <c>str % args</c> for the common conversions (s, r, d, i, f, %).</summary>
    public static string PercentFormat(string format, object? args)
    {
        var values = args is JinjaTuple t ? t.Items : [args];
        int next = 0;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%') { sb.Append(format[i]); continue; }
            if (++i >= format.Length) throw new JinjaRuntimeError("incomplete format");
            int specStart = i;
            while (i < format.Length && "0123456789.-+ #".Contains(format[i])) i++;
            if (i >= format.Length) throw new JinjaRuntimeError("incomplete format");
            string spec = format[specStart..i];
            char conv = format[i];
            if (conv == '%') { sb.Append('%'); continue; }
            if (next >= values.Count) throw new JinjaRuntimeError("not enough arguments for format string");
            object? value = values[next++];
            string text = conv switch
            {
                's' => Str(value),
                'r' => Repr(value),
                'd' or 'i' when PyOps.IsNumber(value) => ((long)Math.Truncate(PyOps.AsDouble(value))).ToString(CultureInfo.InvariantCulture),
                'f' when PyOps.IsNumber(value) =>
                    PyOps.AsDouble(value).ToString("F" + (spec.Contains('.') ? spec[(spec.IndexOf('.') + 1)..] : "6"), CultureInfo.InvariantCulture),
                _ => throw new JinjaRuntimeError($"unsupported format conversion '%{spec}{conv}' for {PyOps.TypeName(value)}"),
            };
            string flags = new(spec.TakeWhile(ch => ch is '-' or '+' or ' ' or '#' or '0').ToArray());
            string widthText = new(spec[flags.Length..].TakeWhile(char.IsAsciiDigit).ToArray());
            if (widthText.Length > 0)
            {
                int width = int.Parse(widthText, CultureInfo.InvariantCulture);
                char pad = flags.Contains('0') && !flags.Contains('-') && conv is 'd' or 'i' or 'f' ? '0' : ' ';
                text = flags.Contains('-') ? text.PadRight(width) : text.PadLeft(width, pad);
            }
            sb.Append(text);
        }
        // CPython accepts unused arguments only from "mapping-like" objects (anything subscriptable but a tuple or str).
        if (next < values.Count && args is not (JinjaDict or List<object?> or JinjaRange or JinjaUndefined)) throw new JinjaRuntimeError("not all arguments converted during string formatting");
        return sb.ToString();
    }
}
