using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace QuanTA.Core.Chat.Templates;

/// <summary>
/// Jinja's built-in filters that chat templates use, with Jinja 3.1's signatures and Python semantics, plus
/// transformers' own <c>tojson</c> (plain <c>json.dumps</c>: no HTML escaping, <c>ensure_ascii=False</c>).
/// Sequence filters are in <c>JinjaFilters.Collections.cs</c>.
/// </summary>
internal static partial class JinjaFilters
{
    static readonly HashSet<string> Supported =
    [
        "abs", "attr", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "format", "indent",
        "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
        "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique",
        "upper", "wordcount",
    ];

    static readonly HashSet<string> OtherJinjaBuiltins =
    [
        "batch", "filesizeformat", "forceescape", "groupby", "pprint", "random", "slice", "striptags", "truncate",
        "urlencode", "urlize", "wordwrap", "xmlattr",
    ];

    public static bool Exists(string name) => Supported.Contains(name);
    public static bool IsJinjaBuiltin(string name) => Supported.Contains(name) || OtherJinjaBuiltins.Contains(name);

    public static object? Apply(string name, object? value, CallArgs args, JinjaEvaluator env)
    {
        object?[] Bind(string[] names, params object?[] defaults) => args.Bind($"filter '{name}'", names, defaults);
        switch (name)
        {
            case "trim":
                return PyStr.Strip(PyFormat.Str(value), OptionalString(Bind(["chars"], [null])[0]));
            case "upper": Bind([]); return PyStr.Upper(PyFormat.Str(value));
            case "lower": Bind([]); return PyStr.Lower(PyFormat.Str(value));
            case "capitalize": Bind([]); return PyStr.Capitalize(PyFormat.Str(value));
            case "title": Bind([]); return JinjaTitle(PyFormat.Str(value));
            case "string" or "safe": Bind([]); return PyFormat.Str(value);
            case "e" or "escape": Bind([]); return HtmlEscape(PyFormat.Str(value));
            case "length" or "count": Bind([]); return (long)PyOps.Len(value);
            case "attr": return JinjaAccess.GetAttributeOnly(value, PyFormat.Str(Bind(["name"], [null])[0]));
            case "wordcount": Bind([]); return (long)WordRegex().Count(PyFormat.Str(value));
            case "default" or "d":
                var d = Bind(["default_value", "boolean"], "", false);
                return value is JinjaUndefined || (PyOps.Truthy(d[1]) && !PyOps.Truthy(value)) ? d[0] : value;
            case "replace":
                var r = Bind(["old", "new", "count"], null, null, null);
                return PyStr.Replace(PyFormat.Str(value), PyFormat.Str(r[0]), PyFormat.Str(r[1]), r[2] is null ? -1 : PyOps.AsLong(r[2]));
            case "center":
                long width = PyOps.AsLong(Bind(["width"], 80L)[0]);
                return JinjaMethods.Bind(PyFormat.Str(value), "center")!.Invoke(new CallArgs([width], []));
            case "indent":
                var ind = Bind(["width", "first", "blank"], 4L, false, false);
                if (value is JinjaUndefined undefinedText) throw undefinedText.Fail();
                if (value is not string textToIndent) throw new JinjaRuntimeError($"unsupported operand type(s) for +=: '{PyOps.TypeName(value)}' and 'str'");
                return Indent(textToIndent, ind[0] is string indentText ? indentText : new string(' ', (int)PyOps.AsLong(ind[0])),
                    PyOps.Truthy(ind[1]), PyOps.Truthy(ind[2]));
            case "format":
                if (args.Positional.Count > 0 && args.Keywords.Count > 0)
                    throw new JinjaRuntimeError("can't handle positional and keyword arguments at the same time");
                if (args.Keywords.Count > 0) throw new JinjaRuntimeError("the format filter with keyword arguments is not supported");
                return PyFormat.PercentFormat(PyFormat.Str(value), new JinjaTuple(args.Positional));
            case "int":
                var i = Bind(["default", "base"], 0L, 10L);
                return ToInt(value, i[0], (int)PyOps.AsLong(i[1]));
            case "float":
                return ToFloat(value, Bind(["default"], 0.0)[0]);
            case "abs":
                Bind([]);
                return value switch
                {
                    double x => (object)Math.Abs(x),
                    _ when PyOps.IsInt(value) => Math.Abs(PyOps.AsLong(value)),
                    _ => throw new JinjaRuntimeError($"bad operand type for abs(): '{PyOps.TypeName(value)}'"),
                };
            case "round":
                var rd = Bind(["precision", "method"], 0L, "common");
                return Round(value, (int)PyOps.AsLong(rd[0]), PyFormat.Str(rd[1]));
            case "tojson":
                var j = Bind(["ensure_ascii", "indent", "separators", "sort_keys"], false, null, null, false);
                var separators = j[2] is null ? null : PyOps.AsSequence(j[2]) ?? throw new JinjaRuntimeError("separators must be a (item, key) pair");
                string? indent = j[1] switch
                {
                    null => null,
                    string text => text,
                    _ when PyOps.IsInt(j[1]) => new string(' ', (int)Math.Max(0, PyOps.AsLong(j[1]))),
                    _ => throw new JinjaRuntimeError("tojson indent must be an int or a string"),
                };
                return PyFormat.JsonDumps(value, PyOps.Truthy(j[0]), indent, separators?[0] as string, separators?[1] as string, PyOps.Truthy(j[3]));
            default:
                return ApplyCollectionFilter(name, value, args, env);
        }
    }

    static string? OptionalString(object? v) => v switch
    {
        null => null,
        string s => s,
        _ => throw new JinjaRuntimeError($"strip arg must be None or str, not {PyOps.TypeName(v)}"),
    };

    /// <summary>Jinja's <c>title</c> filter: words start after spaces, '-', '(', '{', '[' or '&lt;'.</summary>
    static string JinjaTitle(string s) =>
        string.Concat(WordBeginning().Split(s).Where(p => p.Length > 0)
            .Select(p => PyStr.Upper(PyStr.FromCodePoints(PyStr.ToCodePoints(p).Take(1))) + PyStr.Lower(PyStr.FromCodePoints(PyStr.ToCodePoints(p).Skip(1)))));

    static string HtmlEscape(string s) =>
        s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&#34;").Replace("'", "&#39;");

    static string Indent(string s, string indentation, bool first, bool blank)
    {
        s += "\n"; // Jinja's quirk so that splitlines keeps a trailing empty line
        var lines = PyStr.SplitLines(s, keepEnds: false).Cast<string>().ToList();
        string rv;
        if (blank) rv = string.Join("\n" + indentation, lines);
        else
        {
            rv = lines[0];
            if (lines.Count > 1) rv += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indentation + l : l));
        }
        return first ? indentation + rv : rv;
    }

    /// <summary>Jinja's <c>int</c> filter: <c>int(value, base)</c> for strings, else <c>int(value)</c>, else <c>int(float(value))</c>, else the default.</summary>
    static object? ToInt(object? value, object? fallback, int numberBase)
    {
        switch (value)
        {
            case JinjaUndefined u: throw u.Fail();
            case bool or long: return PyOps.AsLong(value);
            case double d:
                if (double.IsNaN(d)) return fallback;
                if (double.IsInfinity(d)) throw new JinjaRuntimeError("cannot convert float infinity to integer");
                return (long)Math.Truncate(d);
            case string s:
                string t = s.Trim().Replace("_", "");
                if (numberBase == 10 && long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n)) return n;
                if (numberBase is 2 or 8 or 16)
                {
                    string digits = t.StartsWith("0x", StringComparison.OrdinalIgnoreCase) || t.StartsWith("0o", StringComparison.OrdinalIgnoreCase)
                        || t.StartsWith("0b", StringComparison.OrdinalIgnoreCase) ? t[2..] : t;
                    try { return Convert.ToInt64(digits, numberBase); } catch (FormatException) { } catch (ArgumentException) { }
                }
                return ToFloat(s, null) is double f && !double.IsNaN(f) && !double.IsInfinity(f) ? (long)Math.Truncate(f) : fallback;
            default:
                return fallback;
        }
    }

    static object? ToFloat(object? value, object? fallback) => value switch
    {
        JinjaUndefined u => throw u.Fail(),
        double d => d,
        bool or long => (double)PyOps.AsLong(value),
        string s => ParsePythonFloat(s.Trim().Replace("_", "")) ?? fallback,
        _ => fallback,
    };

    static double? ParsePythonFloat(string s)
    {
        switch (s.ToLowerInvariant())
        {
            case "inf" or "+inf" or "infinity" or "+infinity": return double.PositiveInfinity;
            case "-inf" or "-infinity": return double.NegativeInfinity;
            case "nan" or "+nan" or "-nan": return double.NaN;
        }
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : null;
    }

    static object? Round(object? value, int precision, string method)
    {
        double x = PyOps.IsNumber(value) ? PyOps.AsDouble(value) : throw new JinjaRuntimeError($"type {PyOps.TypeName(value)} doesn't define __round__ method");
        double scale = Math.Pow(10, precision);
        return method switch
        {
            "common" => PyOps.IsInt(value) && precision >= 0 ? (object)PyOps.AsLong(value) : Math.Round(x, Math.Clamp(precision, 0, 15), MidpointRounding.ToEven),
            "ceil" => Math.Ceiling(x * scale) / scale,
            "floor" => Math.Floor(x * scale) / scale,
            _ => throw new JinjaRuntimeError("method must be common, ceil or floor"),
        };
    }

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex WordBeginning();

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordRegex();
}
