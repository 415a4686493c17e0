namespace QuanTA.Core.Chat.Templates;

/// <summary>Jinja's tests (<c>x is defined</c>, <c>x is not none</c>, <c>x is divisibleby 3</c>, ...), with Python's type rules.</summary>
internal static class JinjaTests
{
    static readonly HashSet<string> Supported =
    [
        "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string", "mapping",
        "iterable", "sequence", "callable", "sameas", "escaped", "in", "odd", "even", "divisibleby", "lower", "upper",
        "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=",
        "filter", "test",
    ];

    /// <summary>True for the tests this evaluator has (all of Jinja's built-in tests).</summary>
    public static bool Exists(string name) => Supported.Contains(name);

    public static bool Apply(string name, object? value, IReadOnlyList<object?> args)
    {
        object? Arg(int i) => i < args.Count ? args[i] : throw new JinjaRuntimeError($"test '{name}' needs {i + 1} argument(s)");
        int expected = name switch
        {
            "sameas" or "in" or "divisibleby" or "eq" or "equalto" or "==" or "ne" or "!=" or "lt" or "lessthan" or "<" or "le"
                or "<=" or "gt" or "greaterthan" or ">" or "ge" or ">=" => 1,
            _ => 0,
        };
        if (args.Count > expected) throw new JinjaRuntimeError($"test '{name}' takes {expected} argument(s), {args.Count} given");
        switch (name)
        {
            case "defined": return value is not JinjaUndefined;
            case "undefined": return value is JinjaUndefined;
            case "none": return value is null;
            case "boolean": return value is bool;
            case "false": return value is false;
            case "true": return value is true;
            case "integer": return value is long;
            case "float": return value is double;
            case "number": return PyOps.IsNumber(value);
            case "string": return value is string;
            case "mapping": return value is JinjaDict;
            case "iterable": return PyOps.IsIterable(value);
            case "sequence": return value is string or List<object?> or JinjaTuple or JinjaDict or JinjaUndefined or JinjaRange;
            case "callable": return value is JinjaCallable or JinjaUndefined;
            case "escaped": return false;
            case "sameas":
                var other = Arg(0);
                return value is null ? other is null
                    : value is bool b ? other is bool ob && b == ob
                    : value is long l ? other is long ol && l == ol && l is >= -5 and <= 256 // CPython's small-int cache
                    : ReferenceEquals(value, other);
            case "in": return PyOps.Contains(Arg(0), value);
            case "odd": return PyOps.Eq(PyOps.Mod(value, 2L), 1L);
            case "even": return PyOps.Eq(PyOps.Mod(value, 2L), 0L);
            case "divisibleby": return PyOps.Eq(PyOps.Mod(value, Arg(0)), 0L);
            case "lower": return PyFormat.Str(value) is var s && s.Any(char.IsLetter) && s == PyStr.Lower(s);
            case "upper": return PyFormat.Str(value) is var u && u.Any(char.IsLetter) && u == PyStr.Upper(u);
            case "eq" or "equalto" or "==": return PyOps.Eq(value, Arg(0));
            case "ne" or "!=": return !PyOps.Eq(value, Arg(0));
            case "lt" or "lessthan" or "<": return PyOps.CompareOp("<", value, Arg(0));
            case "le" or "<=": return PyOps.CompareOp("<=", value, Arg(0));
            case "gt" or "greaterthan" or ">": return PyOps.CompareOp(">", value, Arg(0));
            case "ge" or ">=": return PyOps.CompareOp(">=", value, Arg(0));
            case "filter": return value is string f && JinjaFilters.Exists(f);
            case "test": return value is string t && Exists(t);
            default: throw new JinjaRuntimeError($"No test named '{name}'.");
        }
    }
}
