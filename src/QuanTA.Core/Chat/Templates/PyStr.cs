using System.Globalization;
using System.Text;

namespace QuanTA.Core.Chat.Templates;

/// <summary>
/// Python <c>str</c> behaviour on .NET strings: lengths, indexes and slices count code points (an emoji is one
/// character, as in Python), whitespace is <c>str.isspace</c>, and the strip/split/case methods follow CPython.
/// </summary>
internal static class PyStr
{
    /// <summary>Python's <c>str.isspace</c> for one code point.</summary>
    public static bool IsSpace(int c) =>
        c is >= 0x09 and <= 0x0d or >= 0x1c and <= 0x20 or 0x85 or 0xa0 or 0x1680 or >= 0x2000 and <= 0x200a
            or 0x2028 or 0x2029 or 0x202f or 0x205f or 0x3000;

    static bool HasSurrogates(string s)
    {
        foreach (char c in s)
            if (char.IsSurrogate(c)) return true;
        return false;
    }

    public static int Length(string s) => HasSurrogates(s) ? ToCodePoints(s).Length : s.Length;

    /// <summary>The code points of <paramref name="s"/> (a lone surrogate stays one code point, as in Python).</summary>
    public static int[] ToCodePoints(string s)
    {
        var list = new List<int>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                list.Add(char.ConvertToUtf32(s[i], s[i + 1]));
                i++;
            }
            else list.Add(s[i]);
        }
        return list.ToArray();
    }

    public static string FromCodePoints(IEnumerable<int> cps)
    {
        var sb = new StringBuilder();
        foreach (int c in cps) Append(sb, c);
        return sb.ToString();
    }

    public static void Append(StringBuilder sb, int c)
    {
        if (c > 0xFFFF) sb.Append(char.ConvertFromUtf32(c));
        else sb.Append((char)c);
    }

    public static IEnumerable<object?> CodePoints(string s) => ToCodePoints(s).Select(c => (object?)FromCodePoints([c]));

    public static int CompareCodePoints(string a, string b)
    {
        if (!HasSurrogates(a) && !HasSurrogates(b)) return Math.Sign(string.CompareOrdinal(a, b));
        var x = ToCodePoints(a);
        var y = ToCodePoints(b);
        for (int i = 0; i < Math.Min(x.Length, y.Length); i++)
            if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
        return x.Length.CompareTo(y.Length);
    }

    public static string Strip(string s, string? chars, bool left = true, bool right = true)
    {
        var cps = ToCodePoints(s);
        var set = chars is null ? null : new HashSet<int>(ToCodePoints(chars));
        bool Strippable(int c) => set is null ? IsSpace(c) : set.Contains(c);
        int start = 0, end = cps.Length;
        if (left) while (start < end && Strippable(cps[start])) start++;
        if (right) while (end > start && Strippable(cps[end - 1])) end--;
        return start == 0 && end == cps.Length ? s : FromCodePoints(cps[start..end]);
    }

    /// <summary>Python's <c>str.split(sep, maxsplit)</c>; null <paramref name="sep"/> splits on whitespace runs.</summary>
    public static List<object?> Split(string s, string? sep, long maxSplit)
    {
        var parts = new List<object?>();
        if (sep is null)
        {
            var cps = ToCodePoints(s);
            int i = 0;
            while (true)
            {
                while (i < cps.Length && IsSpace(cps[i])) i++;
                if (i >= cps.Length) break;
                if (maxSplit >= 0 && parts.Count >= maxSplit)
                {
                    parts.Add(FromCodePoints(cps[i..])); // the remainder keeps its trailing whitespace, as in CPython
                    break;
                }
                int j = i;
                while (j < cps.Length && !IsSpace(cps[j])) j++;
                parts.Add(FromCodePoints(cps[i..j]));
                i = j;
            }
            return parts;
        }
        if (sep.Length == 0) throw new JinjaRuntimeError("empty separator");
        int pos = 0;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int k = s.IndexOf(sep, pos, StringComparison.Ordinal);
            if (k < 0) break;
            parts.Add(s[pos..k]);
            pos = k + sep.Length;
        }
        parts.Add(s[pos..]);
        return parts;
    }

    /// <summary>Python's <c>str.rsplit(sep, maxsplit)</c>.</summary>
    public static List<object?> RSplit(string s, string? sep, long maxSplit)
    {
        if (maxSplit < 0) return Split(s, sep, -1);
        if (sep is null)
        {
            var rev = Split(FromCodePoints(Enumerable.Reverse(ToCodePoints(s))), null, maxSplit);
            return rev.Select(p => (object?)FromCodePoints(Enumerable.Reverse(ToCodePoints((string)p!)))).Reverse().ToList();
        }
        if (sep.Length == 0) throw new JinjaRuntimeError("empty separator");
        var parts = new List<object?>();
        int end = s.Length;
        while (parts.Count < maxSplit)
        {
            int k = end - sep.Length < 0 ? -1 : s.LastIndexOf(sep, end - 1, end, StringComparison.Ordinal);
            if (k < 0) break;
            parts.Add(s[(k + sep.Length)..end]);
            end = k;
        }
        parts.Add(s[..end]);
        parts.Reverse();
        return parts;
    }

    /// <summary>Python's <c>str.splitlines(keepends)</c>.</summary>
    public static List<object?> SplitLines(string s, bool keepEnds)
    {
        var parts = new List<object?>();
        int start = 0, i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            bool brk = c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029';
            if (!brk) { i++; continue; }
            int eol = i + (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n' ? 2 : 1);
            parts.Add(s[start..(keepEnds ? eol : i)]);
            start = i = eol;
        }
        if (start < s.Length) parts.Add(s[start..]);
        return parts;
    }

    public static string Replace(string s, string old, string @new, long count)
    {
        if (count == 0) return s;
        if (old.Length == 0)
        {
            var cps = ToCodePoints(s);
            var sb = new StringBuilder();
            long n = 0;
            for (int i = 0; i <= cps.Length; i++)
            {
                if (count < 0 || n < count) { sb.Append(@new); n++; }
                if (i < cps.Length) Append(sb, cps[i]);
            }
            return sb.ToString();
        }
        if (count < 0) return s.Replace(old, @new, StringComparison.Ordinal);
        var result = new StringBuilder();
        int pos = 0;
        for (long n = 0; n < count; n++)
        {
            int k = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (k < 0) break;
            result.Append(s, pos, k - pos).Append(@new);
            pos = k + old.Length;
        }
        return result.Append(s, pos, s.Length - pos).ToString();
    }

    public static string Upper(string s) => s.ToUpperInvariant();
    public static string Lower(string s) => s.ToLowerInvariant();

    static bool IsCased(int c) => char.ConvertFromUtf32(c) is var t && (t.ToUpperInvariant() != t || t.ToLowerInvariant() != t);
    static string UpperCp(int c) => char.ConvertFromUtf32(c).ToUpperInvariant();
    static string LowerCp(int c) => char.ConvertFromUtf32(c).ToLowerInvariant();
    static int ValidCp(int c) => c is >= 0xD800 and <= 0xDFFF ? 0xFFFD : c;

    /// <summary>Python's <c>str.capitalize()</c>: first character upper, the rest lower.</summary>
    public static string Capitalize(string s)
    {
        var cps = ToCodePoints(s);
        var sb = new StringBuilder();
        for (int i = 0; i < cps.Length; i++)
            sb.Append(i == 0 ? UpperCp(ValidCp(cps[i])) : LowerCp(ValidCp(cps[i])));
        return sb.ToString();
    }

    /// <summary>Python's <c>str.title()</c>: a cased character after an uncased one is upper, others lower.</summary>
    public static string Title(string s)
    {
        var sb = new StringBuilder();
        bool previousCased = false;
        foreach (int raw in ToCodePoints(s))
        {
            int c = ValidCp(raw);
            bool cased = IsCased(c);
            sb.Append(cased ? (previousCased ? LowerCp(c) : UpperCp(c)) : char.ConvertFromUtf32(c));
            previousCased = cased;
        }
        return sb.ToString();
    }

    public static bool IsPrintable(int c)
    {
        if (c == ' ') return true;
        var cat = c <= 0xFFFF ? CharUnicodeInfo.GetUnicodeCategory((char)c) : CharUnicodeInfo.GetUnicodeCategory(c);
        return cat is not (UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator
            or UnicodeCategory.ParagraphSeparator or UnicodeCategory.SpaceSeparator);
    }

    /// <summary>Python's slice of a sequence of <paramref name="length"/> items: the selected indexes.</summary>
    public static IEnumerable<int> SliceIndexes(int length, long? start, long? stop, long? step)
    {
        long st = step ?? 1;
        if (st == 0) throw new JinjaRuntimeError("slice step cannot be zero");
        long lo, hi;
        if (st > 0)
        {
            lo = Clamp(start ?? 0, length, 0, length);
            hi = Clamp(stop ?? length, length, 0, length);
            for (long i = lo; i < hi; i += st) yield return (int)i;
        }
        else
        {
            lo = Clamp(start ?? length - 1, length, -1, length - 1);
            hi = stop is null ? -1 : Clamp(stop.Value, length, -1, length - 1);
            for (long i = lo; i > hi; i += st) yield return (int)i;
        }
    }

    static long Clamp(long v, int length, long min, long max)
    {
        if (v < 0) v += length;
        return Math.Min(Math.Max(v, min), max);
    }
}
