using System.Text;

namespace QuanTA.Core.Chat.Templates;

/// <summary>
/// The Python methods templates call on values: <c>str</c> (strip, split, startswith, replace, format, ...), <c>dict</c>
/// (items, keys, values, get, copy) and <c>list</c>/<c>tuple</c> (index, count, copy). Mutating methods are refused,
/// as in the <c>ImmutableSandboxedEnvironment</c> transformers renders with.
/// </summary>
internal static class JinjaMethods
{
    static readonly HashSet<string> ListMutators = ["append", "clear", "pop", "reverse", "insert", "sort", "extend", "remove"];
    static readonly HashSet<string> DictMutators = ["clear", "pop", "popitem", "setdefault", "update"];

    public static bool IsMutating(object? obj, string name) => obj switch
    {
        List<object?> => ListMutators.Contains(name),
        JinjaDict => DictMutators.Contains(name),
        _ => false,
    };

    /// <summary>The bound method <paramref name="name"/> of <paramref name="obj"/>, or null when it has none.</summary>
    public static JinjaCallable? Bind(object? obj, string name) => obj switch
    {
        string s => BindString(s, name),
        JinjaDict d => BindDict(d, name),
        List<object?> l => BindSequence(l, name, () => l.ToList()),
        JinjaTuple t => BindSequence(t.Items, name, null),
        _ => null,
    };

    static JinjaFunction Method(string name, Func<CallArgs, object?> body) => new(name, body);

    static JinjaCallable? BindSequence(IReadOnlyList<object?> items, string name, Func<object?>? copy) => name switch
    {
        "index" => Method("index", a =>
        {
            var x = a.Bind("index()", ["value"], [null], 1)[0];
            for (int i = 0; i < items.Count; i++)
                if (PyOps.Eq(items[i], x)) return (long)i;
            throw new JinjaRuntimeError($"{PyFormat.Repr(x)} is not in list");
        }),
        "count" => Method("count", a =>
        {
            var x = a.Bind("count()", ["value"], [null], 1)[0];
            return (long)items.Count(i => PyOps.Eq(i, x));
        }),
        "copy" when copy is not null => Method("copy", _ => copy()),
        _ => null,
    };

    static JinjaCallable? BindDict(JinjaDict d, string name) => name switch
    {
        "items" => Method("items", _ => new JinjaDictView("dict_items", d.Items.Select(kv => (object?)new JinjaTuple([kv.Key, kv.Value])).ToList())),
        "keys" => Method("keys", _ => new JinjaDictView("dict_keys", d.Keys.ToList())),
        "values" => Method("values", _ => new JinjaDictView("dict_values", d.Items.Select(kv => kv.Value).ToList())),
        "get" => Method("get", a =>
        {
            var p = a.Bind("get()", ["key", "default"], [null, null], 1);
            return d.TryGet(p[0], out var v) ? v : p[1];
        }),
        "copy" => Method("copy", _ =>
        {
            var c = new JinjaDict();
            foreach (var (k, v) in d.Items) c.Set(k, v);
            return c;
        }),
        _ => null,
    };

    static string? OptionalString(object? v, string what) => v switch
    {
        null => null,
        string s => s,
        _ => throw new JinjaRuntimeError($"{what} arg must be None or str"),
    };

    static string RequireString(object? v, string what) =>
        v as string ?? throw new JinjaRuntimeError($"{what} argument must be str, not {PyOps.TypeName(v)}");

    static long Int(object? v, string what) =>
        PyOps.IsInt(v) ? PyOps.AsLong(v) : throw new JinjaRuntimeError($"'{PyOps.TypeName(v)}' object cannot be interpreted as an integer ({what})");

    static JinjaCallable? BindString(string s, string name)
    {
        switch (name)
        {
            case "strip" or "lstrip" or "rstrip":
                return Method(name, a =>
                {
                    var chars = OptionalString(a.Bind(name + "()", ["chars"], [null])[0], name);
                    return PyStr.Strip(s, chars, left: name != "rstrip", right: name != "lstrip");
                });
            case "split" or "rsplit":
                return Method(name, a =>
                {
                    var p = a.Bind(name + "()", ["sep", "maxsplit"], [null, -1L]);
                    var sep = OptionalString(p[0], name);
                    return name == "split" ? PyStr.Split(s, sep, Int(p[1], "maxsplit")) : PyStr.RSplit(s, sep, Int(p[1], "maxsplit"));
                });
            case "splitlines":
                return Method(name, a => PyStr.SplitLines(s, PyOps.Truthy(a.Bind("splitlines()", ["keepends"], [false])[0])));
            case "startswith" or "endswith":
                return Method(name, a =>
                {
                    var p = a.Bind(name + "()", ["prefix", "start", "end"], [null, null, null], 1);
                    string sub = Substring(s, p[1], p[2]);
                    var candidates = p[0] is JinjaTuple t ? t.Items : [p[0]];
                    return candidates.Any(c =>
                    {
                        string x = c as string ?? throw new JinjaRuntimeError($"{name} first arg must be str or a tuple of str, not {PyOps.TypeName(c)}");
                        return name == "startswith" ? sub.StartsWith(x, StringComparison.Ordinal) : sub.EndsWith(x, StringComparison.Ordinal);
                    });
                });
            case "upper": return Method(name, _ => PyStr.Upper(s));
            case "lower" or "casefold": return Method(name, _ => PyStr.Lower(s));
            case "title": return Method(name, _ => PyStr.Title(s));
            case "capitalize": return Method(name, _ => PyStr.Capitalize(s));
            case "swapcase":
                return Method(name, _ => string.Concat(s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c))));
            case "replace":
                return Method(name, a =>
                {
                    var p = a.Bind("replace()", ["old", "new", "count"], [null, null, -1L], 2);
                    return PyStr.Replace(s, RequireString(p[0], "replace()"), RequireString(p[1], "replace()"), Int(p[2], "count"));
                });
            case "find" or "rfind" or "index" or "rindex" or "count":
                return Method(name, a => Find(s, name, a));
            case "join":
                return Method(name, a =>
                {
                    var items = PyOps.Iterate(a.Bind("join()", ["iterable"], [null], 1)[0]).ToList();
                    for (int i = 0; i < items.Count; i++)
                        if (items[i] is not string)
                            throw new JinjaRuntimeError($"sequence item {i}: expected str instance, {PyOps.TypeName(items[i])} found");
                    return string.Join(s, items.Cast<string>());
                });
            case "isdigit" or "isdecimal" or "isnumeric":
                return Method(name, _ => s.Length > 0 && PyStr.ToCodePoints(s).All(c => c <= 0xFFFF && char.IsDigit((char)c)));
            case "isalpha": return Method(name, _ => s.Length > 0 && s.All(char.IsLetter));
            case "isalnum": return Method(name, _ => s.Length > 0 && s.All(char.IsLetterOrDigit));
            case "isspace": return Method(name, _ => s.Length > 0 && PyStr.ToCodePoints(s).All(PyStr.IsSpace));
            case "islower": return Method(name, _ => s.Any(char.IsLetter) && s.ToLowerInvariant() == s && s.Any(char.IsLower));
            case "isupper": return Method(name, _ => s.Any(char.IsLetter) && s.ToUpperInvariant() == s && s.Any(char.IsUpper));
            case "zfill":
                return Method(name, a =>
                {
                    int width = (int)Int(a.Bind("zfill()", ["width"], [null], 1)[0], "width");
                    int len = PyStr.Length(s);
                    if (len >= width) return s;
                    bool signed = s.Length > 0 && s[0] is '+' or '-';
                    return signed ? s[0] + new string('0', width - len) + s[1..] : new string('0', width - len) + s;
                });
            case "center" or "ljust" or "rjust":
                return Method(name, a =>
                {
                    var p = a.Bind(name + "()", ["width", "fillchar"], [null, " "], 1);
                    int width = (int)Int(p[0], "width");
                    string fill = p[1] as string is { Length: 1 } f ? f : throw new JinjaRuntimeError("The fill character must be exactly one character long");
                    int len = PyStr.Length(s), pad = Math.Max(0, width - len);
                    // CPython's center puts the extra character on the left when the padding and width are both odd.
                    int left = name == "ljust" ? 0 : name == "rjust" ? pad : pad / 2 + (pad & width & 1);
                    return string.Concat(Enumerable.Repeat(fill, left)) + s + string.Concat(Enumerable.Repeat(fill, pad - left));
                });
            case "removeprefix" or "removesuffix":
                return Method(name, a =>
                {
                    string x = RequireString(a.Bind(name + "()", ["value"], [null], 1)[0], name);
                    if (name == "removeprefix") return x.Length > 0 && s.StartsWith(x, StringComparison.Ordinal) ? s[x.Length..] : s;
                    return x.Length > 0 && s.EndsWith(x, StringComparison.Ordinal) ? s[..^x.Length] : s;
                });
            case "partition" or "rpartition":
                return Method(name, a =>
                {
                    string sep = RequireString(a.Bind(name + "()", ["sep"], [null], 1)[0], name);
                    if (sep.Length == 0) throw new JinjaRuntimeError("empty separator");
                    int k = name == "partition" ? s.IndexOf(sep, StringComparison.Ordinal) : s.LastIndexOf(sep, StringComparison.Ordinal);
                    if (k < 0) return name == "partition" ? new JinjaTuple([s, "", ""]) : new JinjaTuple(["", "", s]);
                    return new JinjaTuple([s[..k], sep, s[(k + sep.Length)..]]);
                });
            case "format":
                return Method(name, a => Format(s, a));
            default:
                return null;
        }
    }

    // s[start:end] for the optional start/end arguments of startswith/find/count.
    static string Substring(string s, object? start, object? end)
    {
        if (start is null && end is null) return s;
        var cps = PyStr.ToCodePoints(s);
        long? st = start is null ? null : Int(start, "start"), en = end is null ? null : Int(end, "end");
        return PyStr.FromCodePoints(PyStr.SliceIndexes(cps.Length, st, en, 1).Select(i => cps[i]));
    }

    static object Find(string s, string name, CallArgs a)
    {
        var p = a.Bind(name + "()", ["sub", "start", "end"], [null, null, null], 1);
        string sub = RequireString(p[0], name + "()");
        var cps = PyStr.ToCodePoints(s);
        long offset = p[1] is null ? 0 : Math.Clamp(Int(p[1], "start") is var st && st < 0 ? st + cps.Length : st, 0, cps.Length);
        string window = Substring(s, p[1], p[2]);
        if (name == "count")
        {
            if (sub.Length == 0) return (long)(PyStr.Length(window) + 1);
            long n = 0;
            for (int k = window.IndexOf(sub, StringComparison.Ordinal); k >= 0; k = window.IndexOf(sub, k + sub.Length, StringComparison.Ordinal)) n++;
            return n;
        }
        int found = name is "find" or "index" ? window.IndexOf(sub, StringComparison.Ordinal) : window.LastIndexOf(sub, StringComparison.Ordinal);
        if (found < 0)
            return name is "find" or "rfind" ? -1L : throw new JinjaRuntimeError("substring not found");
        return offset + PyStr.Length(window[..found]);
    }

    /// <summary><c>str.format</c>: <c>{}</c>, <c>{0}</c>, <c>{name}</c>, <c>{{</c> / <c>}}</c>, conversions !s / !r (no format specs).</summary>
    static string Format(string format, CallArgs a)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c == '}' && i + 1 < format.Length && format[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c != '{') { sb.Append(c); continue; }
            if (i + 1 < format.Length && format[i + 1] == '{') { sb.Append('{'); i++; continue; }
            int close = format.IndexOf('}', i);
            if (close < 0) throw new JinjaRuntimeError("Single '{' encountered in format string");
            string field = format[(i + 1)..close];
            i = close;
            char conversion = 's';
            if (field.Length >= 2 && field[^2] == '!') { conversion = field[^1]; field = field[..^2]; }
            if (field.Contains(':')) throw new JinjaRuntimeError("format specifications in str.format are not supported by this evaluator");
            object? value = field.Length == 0 ? Arg(a, auto++)
                : int.TryParse(field, out int index) ? Arg(a, index)
                : a.Keywords.FirstOrDefault(k => k.Key == field) is { Key: not null } kw ? kw.Value
                : throw new JinjaRuntimeError($"KeyError: '{field}'");
            sb.Append(conversion == 'r' ? PyFormat.Repr(value) : PyFormat.Str(value));
        }
        return sb.ToString();
    }

    static object? Arg(CallArgs a, int index) => index < a.Positional.Count
        ? a.Positional[index]
        : throw new JinjaRuntimeError($"Replacement index {index} out of range for positional args tuple");
}
