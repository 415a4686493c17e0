using System.Collections;

namespace QuanTA.Core.Chat.Templates;

/// <summary>Python's semantics for the operators Jinja compiles to: truth, equality, ordering, arithmetic, <c>in</c>, len, iteration.</summary>
internal static class PyOps
{
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        JinjaTuple => "tuple",
        JinjaDict => "dict",
        JinjaUndefined => "Undefined",
        JinjaNamespace => "Namespace",
        JinjaLoop => "LoopContext",
        JinjaMacro => "Macro",
        JinjaIterator it => it.TypeName,
        JinjaDictView view => view.TypeName,
        JinjaRange => "range",
        JinjaCallable => "function",
        _ => v.GetType().Name,
    };

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        JinjaTuple t => t.Items.Count > 0,
        JinjaDict d => d.Count > 0,
        JinjaUndefined => false,
        JinjaDictView view => view.Items.Count > 0,
        JinjaRange r => r.Items.Count > 0,
        _ => true,
    };

    public static bool IsInt(object? v) => v is long or bool;
    public static bool IsNumber(object? v) => v is long or bool or double;
    public static long AsLong(object? v) => v is bool b ? (b ? 1 : 0) : (long)v!;
    public static double AsDouble(object? v) => v is double d ? d : AsLong(v);

    /// <summary>A Python sequence (list or tuple) as a read-only list, else null.</summary>
    public static IReadOnlyList<object?>? AsSequence(object? v) => v switch
    {
        List<object?> l => l,
        JinjaTuple t => t.Items,
        _ => null,
    };

    public static bool Eq(object? a, object? b)
    {
        if (a is JinjaUndefined || b is JinjaUndefined) return a is JinjaUndefined && b is JinjaUndefined;
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b))
            return IsInt(a) && IsInt(b) ? AsLong(a) == AsLong(b) : AsDouble(a) == AsDouble(b);
        if (a is string sa) return b is string sb && string.Equals(sa, sb, StringComparison.Ordinal);
        if (a is List<object?> la) return b is List<object?> lb && SequenceEq(la, lb);
        if (a is JinjaTuple ta) return b is JinjaTuple tb && SequenceEq(ta.Items, tb.Items);
        if (a is JinjaDict da)
        {
            if (b is not JinjaDict db || da.Count != db.Count) return false;
            foreach (var (k, v) in da.Items)
                if (!db.TryGet(k, out var w) || !Eq(v, w)) return false;
            return true;
        }
        return ReferenceEquals(a, b) || a.Equals(b);
    }

    static bool SequenceEq(IReadOnlyList<object?> a, IReadOnlyList<object?> b)
    {
        if (a.Count != b.Count) return false;
        for (int i = 0; i < a.Count; i++)
            if (!Eq(a[i], b[i])) return false;
        return true;
    }

    /// <summary>Python's ordering (&lt;, &gt; ...); <paramref name="op"/> names the operator in errors.</summary>
    public static int Compare(object? a, object? b, string op)
    {
        if (a is JinjaUndefined ua) throw ua.Fail();
        if (b is JinjaUndefined ub) throw ub.Fail();
        if (IsNumber(a) && IsNumber(b))
            return IsInt(a) && IsInt(b) ? AsLong(a).CompareTo(AsLong(b)) : CompareDoubles(AsDouble(a), AsDouble(b));
        if (a is string sa && b is string sb) return PyStr.CompareCodePoints(sa, sb);
        if ((a is List<object?> && b is List<object?>) || (a is JinjaTuple && b is JinjaTuple))
        {
            var la = AsSequence(a)!;
            var lb = AsSequence(b)!;
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
                if (!Eq(la[i], lb[i])) return Compare(la[i], lb[i], op);
            return la.Count.CompareTo(lb.Count);
        }
        throw new JinjaRuntimeError($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    // NaN compares false both ways in Python; here any ordering with NaN reports "not less/greater/equal" via 2.
    static int CompareDoubles(double x, double y) => double.IsNaN(x) || double.IsNaN(y) ? 2 : x.CompareTo(y);

    public static bool CompareOp(string op, object? a, object? b) => op switch
    {
        "==" => Eq(a, b),
        "!=" => !Eq(a, b),
        "in" => Contains(b, a),
        "notin" => !Contains(b, a),
        "<" => Compare(a, b, op) is var c && c < 0,
        "<=" => Compare(a, b, op) is var c2 && c2 <= 0,
        ">" => Compare(a, b, op) is var c3 && c3 > 0 && c3 != 2,
        ">=" => Compare(a, b, op) is var c4 && c4 >= 0 && c4 != 2,
        _ => throw new JinjaRuntimeError($"unknown comparison '{op}'"),
    };

    /// <summary>Python's <c>item in container</c>.</summary>
    public static bool Contains(object? container, object? item)
    {
        switch (container)
        {
            case string s:
                if (item is not string sub) throw new JinjaRuntimeError($"'in <string>' requires string as left operand, not {TypeName(item)}");
                return s.Contains(sub, StringComparison.Ordinal);
            case JinjaDict d:
                return d.ContainsKey(item);
            case JinjaUndefined:
                return false;
            case JinjaIterator or JinjaDictView or JinjaRange:
                return Iterate(container).Any(x => Eq(x, item));
            default:
                var seq = AsSequence(container) ?? throw new JinjaRuntimeError($"argument of type '{TypeName(container)}' is not iterable");
                return seq.Any(x => Eq(x, item));
        }
    }

    public static int Len(object? v) => v switch
    {
        string s => PyStr.Length(s),
        List<object?> l => l.Count,
        JinjaTuple t => t.Items.Count,
        JinjaDict d => d.Count,
        JinjaUndefined => 0,
        JinjaDictView view => view.Items.Count,
        JinjaRange r => r.Items.Count,
        _ => throw new JinjaRuntimeError($"object of type '{TypeName(v)}' has no len()"),
    };

    /// <summary>Python's <c>iter(v)</c>: a string yields its characters, a dict its keys, Undefined nothing.</summary>
    public static IEnumerable<object?> Iterate(object? v) => v switch
    {
        string s => PyStr.CodePoints(s),
        List<object?> l => l,
        JinjaTuple t => t.Items,
        JinjaDict d => d.Keys,
        JinjaUndefined => [],
        JinjaIterator it => it.Consume(),
        JinjaDictView view => view.Items,
        JinjaRange r => r.Items,
        _ => throw new JinjaRuntimeError($"'{TypeName(v)}' object is not iterable"),
    };

    public static bool IsIterable(object? v) =>
        v is string or List<object?> or JinjaTuple or JinjaDict or JinjaUndefined or JinjaIterator or JinjaDictView or JinjaRange or JinjaLoop;

    static void FailIfUndefined(object? a, object? b)
    {
        if (a is JinjaUndefined ua) throw ua.Fail();
        if (b is JinjaUndefined ub) throw ub.Fail();
    }

    static JinjaRuntimeError Unsupported(string op, object? a, object? b) =>
        new($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");

    public static object? Add(object? a, object? b)
    {
        FailIfUndefined(a, b);
        if (IsInt(a) && IsInt(b)) return Checked(() => checked(AsLong(a) + AsLong(b)));
        if (IsNumber(a) && IsNumber(b)) return AsDouble(a) + AsDouble(b);
        if (a is string sa)
            return b is string sb ? sa + sb : throw new JinjaRuntimeError($"can only concatenate str (not \"{TypeName(b)}\") to str");
        if (a is List<object?> la)
            return b is List<object?> lb ? la.Concat(lb).ToList() : throw new JinjaRuntimeError($"can only concatenate list (not \"{TypeName(b)}\") to list");
        if (a is JinjaTuple ta)
            return b is JinjaTuple tb ? new JinjaTuple(ta.Items.Concat(tb.Items).ToList()) : throw new JinjaRuntimeError($"can only concatenate tuple (not \"{TypeName(b)}\") to tuple");
        throw Unsupported("+", a, b);
    }

    public static object? Sub(object? a, object? b)
    {
        FailIfUndefined(a, b);
        if (IsInt(a) && IsInt(b)) return Checked(() => checked(AsLong(a) - AsLong(b)));
        if (IsNumber(a) && IsNumber(b)) return AsDouble(a) - AsDouble(b);
        throw Unsupported("-", a, b);
    }

    public static object? Mul(object? a, object? b)
    {
        FailIfUndefined(a, b);
        if (IsInt(a) && IsInt(b)) return Checked(() => checked(AsLong(a) * AsLong(b)));
        if (IsNumber(a) && IsNumber(b)) return AsDouble(a) * AsDouble(b);
        if (IsInt(a) && b is string or List<object?> or JinjaTuple) (a, b) = (b, a);
        if (a is string s && IsInt(b)) return Repeat(s, AsLong(b));
        if (a is List<object?> l && IsInt(b)) return RepeatItems(l, AsLong(b)).ToList();
        if (a is JinjaTuple t && IsInt(b)) return new JinjaTuple(RepeatItems(t.Items, AsLong(b)).ToList());
        throw Unsupported("*", a, b);
    }

    static IEnumerable<object?> RepeatItems(IReadOnlyList<object?> items, long n) =>
        Enumerable.Repeat(items, (int)Math.Clamp(n, 0, 1_000_000)).SelectMany(x => x);

    static string Repeat(string s, long n) => n <= 0 ? "" : string.Concat(Enumerable.Repeat(s, (int)n));

    public static object? TrueDiv(object? a, object? b)
    {
        FailIfUndefined(a, b);
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("/", a, b);
        double y = AsDouble(b);
        if (y == 0) throw new JinjaRuntimeError("division by zero");
        return AsDouble(a) / y;
    }

    public static object? FloorDiv(object? a, object? b)
    {
        FailIfUndefined(a, b);
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("//", a, b);
        if (IsInt(a) && IsInt(b))
        {
            long x = AsLong(a), y = AsLong(b);
            if (y == 0) throw new JinjaRuntimeError("integer division or modulo by zero");
            long q = x / y;
            return (x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q;
        }
        double vx = AsDouble(a), wx = AsDouble(b);
        if (wx == 0) throw new JinjaRuntimeError("float floor division by zero");
        // CPython's float_divmod: floor of (x - fmod(x, y)) / y, so 3 // 0.1 is 29.0 (3 / 0.1 rounds to 30.0).
        double mod = vx % wx, div = (vx - mod) / wx;
        if (mod != 0 && (wx < 0) != (mod < 0)) div -= 1.0;
        if (div == 0) return Math.CopySign(0.0, vx / wx);
        double floorDiv = Math.Floor(div);
        return div - floorDiv > 0.5 ? floorDiv + 1.0 : floorDiv;
    }

    public static object? Mod(object? a, object? b)
    {
        if (a is string fmt) return PyFormat.PercentFormat(fmt, b); // str's own % runs first, even for an Undefined argument
        FailIfUndefined(a, b);
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("%", a, b);
        if (IsInt(a) && IsInt(b))
        {
            long x = AsLong(a), y = AsLong(b);
            if (y == 0) throw new JinjaRuntimeError("integer division or modulo by zero");
            long r = x % y;
            return r != 0 && (r < 0) != (y < 0) ? r + y : r;
        }
        double dx = AsDouble(a), dy = AsDouble(b);
        if (dy == 0) throw new JinjaRuntimeError("float modulo");
        double m = dx % dy;
        if (m == 0) return Math.CopySign(0.0, dy);
        return (m < 0) != (dy < 0) ? m + dy : m;
    }

    public static object? Pow(object? a, object? b)
    {
        FailIfUndefined(a, b);
        if (!IsNumber(a) || !IsNumber(b)) throw Unsupported("** or pow()", a, b);
        if (IsInt(a) && IsInt(b) && AsLong(b) >= 0)
            return Checked(() =>
            {
                long result = 1, x = AsLong(a);
                for (long e = AsLong(b); e > 0; e >>= 1)
                {
                    if ((e & 1) != 0) result = checked(result * x);
                    if (e > 1) x = checked(x * x);
                }
                return result;
            });
        return Math.Pow(AsDouble(a), AsDouble(b));
    }

    public static object? Negate(object? v) => v switch
    {
        JinjaUndefined u => throw u.Fail(),
        double d => (object)(-d),
        _ when IsInt(v) => Checked(() => checked(-AsLong(v))),
        _ => throw new JinjaRuntimeError($"bad operand type for unary -: '{TypeName(v)}'"),
    };

    public static object? Plus(object? v) => v switch
    {
        JinjaUndefined u => throw u.Fail(),
        double d => d,
        _ when IsInt(v) => (object)AsLong(v),
        _ => throw new JinjaRuntimeError($"bad operand type for unary +: '{TypeName(v)}'"),
    };

    static object Checked(Func<long> f)
    {
        try { return f(); }
        catch (OverflowException) { throw new JinjaRuntimeError("integer overflow (this evaluator's integers are 64-bit)"); }
    }
}
