namespace QuanTA.Core.Chat.Templates;

// The value model of the evaluator, mirroring the Python objects a Jinja template sees:
//   None -> null, bool -> bool, int -> long, float -> double, str -> string, list -> List<object?>,
//   tuple -> JinjaTuple, dict -> JinjaDict, plus Jinja's Undefined, Namespace, loop object and callables.

/// <summary>An error raised while rendering (Python's TypeError, ValueError, Jinja's UndefinedError, ...).</summary>
internal class JinjaRuntimeError(string message) : Exception(message);

/// <summary>Raised by the <c>raise_exception</c> global: the template refuses the conversation.</summary>
internal sealed class JinjaRaiseError(string message) : JinjaRuntimeError(message);

/// <summary>
/// Jinja's default <c>Undefined</c>: prints as "", is falsy, iterates as empty, has length 0, equals only another
/// Undefined; any other use (attribute, item, arithmetic, call, comparison) fails with <see cref="Message"/>.
/// </summary>
internal sealed class JinjaUndefined
{
    JinjaUndefined(string message) => Message = message;

    /// <summary>The error raised when this value is used in a way Undefined does not allow.</summary>
    public string Message { get; }

    public static JinjaUndefined ForName(string name) => new($"'{name}' is undefined");

    /// <summary>A missing attribute or item of <paramref name="obj"/> (message as Jinja words it).</summary>
    public static JinjaUndefined ForMember(object? obj, object? name) => name is string s
        ? new($"'{ObjectTypeRepr(obj)}' has no attribute '{s}'")
        : new($"'{ObjectTypeRepr(obj)}' has no element {PyFormat.Repr(name)}");

    public static JinjaUndefined WithHint(string hint) => new(hint);

    /// <summary>A sandbox-refused attribute (e.g. <c>list.append</c> in the immutable sandbox transformers uses).</summary>
    public static JinjaUndefined Unsafe(object? obj, string name) =>
        new($"access to attribute '{name}' of '{PyOps.TypeName(obj)}' object is unsafe.");

    public JinjaRuntimeError Fail() => new(Message);

    static string ObjectTypeRepr(object? obj) => obj is null ? "None" : PyOps.TypeName(obj) + " object";

    public override string ToString() => "";
}

/// <summary>A Python tuple (immutable; prints with parentheses; distinct from a list in comparisons).</summary>
internal sealed class JinjaTuple(IReadOnlyList<object?> items)
{
    public IReadOnlyList<object?> Items { get; } = items;
}

/// <summary>A Python dict: insertion-ordered, keys compared with Python equality (1 == 1.0 == True).</summary>
internal sealed class JinjaDict
{
    readonly List<object?> _keys = new();
    readonly Dictionary<object, object?> _values = new(PyKeyComparer.Instance);
    static readonly object NoneKey = new();

    public int Count => _keys.Count;
    public IReadOnlyList<object?> Keys => _keys;

    public IEnumerable<KeyValuePair<object?, object?>> Items =>
        _keys.Select(k => new KeyValuePair<object?, object?>(k, _values[k ?? NoneKey]));

    public void Set(object? key, object? value)
    {
        var k = HashableKey(key);
        if (!_values.ContainsKey(k)) _keys.Add(key);
        _values[k] = value;
    }

    /// <summary>Looks <paramref name="key"/> up; an unhashable key (list, dict) is simply not found.</summary>
    public bool TryGet(object? key, out object? value)
    {
        value = null;
        if (key is List<object?> or JinjaDict) return false;
        return _values.TryGetValue(key ?? NoneKey, out value);
    }

    public bool ContainsKey(object? key) => HashableKey(key) is var k && _values.ContainsKey(k);

    static object HashableKey(object? key) => key switch
    {
        null => NoneKey,
        List<object?> or JinjaDict or JinjaNamespace => throw new JinjaRuntimeError($"unhashable type: '{PyOps.TypeName(key)}'"),
        _ => key,
    };

    sealed class PyKeyComparer : IEqualityComparer<object>
    {
        public static readonly PyKeyComparer Instance = new();
        public new bool Equals(object? x, object? y) =>
            ReferenceEquals(x, NoneKey) || ReferenceEquals(y, NoneKey) ? ReferenceEquals(x, y) : PyOps.Eq(x, y);

        public int GetHashCode(object o) => o switch
        {
            bool b => b ? 1 : 0,
            long l => l.GetHashCode(),
            double d when d == Math.Floor(d) && Math.Abs(d) < 9.2e18 => ((long)d).GetHashCode(),
            string s => StringComparer.Ordinal.GetHashCode(s),
            JinjaTuple t => t.Items.Aggregate(17, (h, x) => h * 31 + (x is null ? 0 : GetHashCode(x))),
            _ => o.GetHashCode(),
        };
    }
}

/// <summary>Jinja's <c>namespace(...)</c>: the one object templates may assign attributes on.</summary>
internal sealed class JinjaNamespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class JinjaLoop(IReadOnlyList<object?> items)
{
    static readonly object NoValue = new();
    object? _lastChangedValue = NoValue;

    public int Index0 { get; set; }
    public int Length => items.Count;

    public bool TryGet(string name, out object? value)
    {
        value = name switch
        {
            "index0" => (long)Index0,
            "index" => (long)(Index0 + 1),
            "revindex" => (long)(Length - Index0),
            "revindex0" => (long)(Length - Index0 - 1),
            "first" => Index0 == 0,
            "last" => Index0 == Length - 1,
            "length" => (long)Length,
            "depth" => 1L,
            "depth0" => 0L,
            "previtem" => Index0 > 0 ? items[Index0 - 1] : JinjaUndefined.WithHint("there is no previous item"),
            "nextitem" => Index0 < Length - 1 ? items[Index0 + 1] : JinjaUndefined.WithHint("there is no next item"),
            "cycle" => new JinjaFunction("loop.cycle", a =>
            {
                if (a.Positional.Count == 0) throw new JinjaRuntimeError("no items for cycling given");
                return a.Positional[Index0 % a.Positional.Count];
            }),
            "changed" => new JinjaFunction("loop.changed", a =>
            {
                // True when the arguments differ from those of the previous call (the first call is a change).
                object? value = new JinjaTuple(a.Positional);
                if (_lastChangedValue != NoValue && PyOps.Eq(_lastChangedValue, value)) return false;
                _lastChangedValue = value;
                return true;
            }),
            _ => null,
        };
        return value is not null || name is "previtem" or "nextitem";
    }

    public override string ToString() => $"<LoopContext {Index0 + 1}/{Length}>";
}

/// <summary>Arguments of a call: positional values and keyword values (in call order).</summary>
internal sealed class CallArgs(IReadOnlyList<object?> positional, IReadOnlyList<KeyValuePair<string, object?>> keywords)
{
    public static readonly CallArgs Empty = new([], []);

    public IReadOnlyList<object?> Positional { get; } = positional;
    public IReadOnlyList<KeyValuePair<string, object?>> Keywords { get; } = keywords;

    /// <summary>Binds a Python-style signature: values by position, then by name, else the defaults; errors name <paramref name="what"/>.</summary>
    public object?[] Bind(string what, string[] names, object?[] defaults, int required = 0)
    {
        if (Positional.Count > names.Length)
            throw new JinjaRuntimeError($"{what} takes at most {names.Length} argument(s) ({Positional.Count} given)");
        var result = new object?[names.Length];
        var set = new bool[names.Length];
        for (int i = 0; i < Positional.Count; i++) { result[i] = Positional[i]; set[i] = true; }
        foreach (var (name, value) in Keywords)
        {
            int i = Array.IndexOf(names, name);
            if (i < 0) throw new JinjaRuntimeError($"{what} got an unexpected keyword argument '{name}'");
            if (set[i]) throw new JinjaRuntimeError($"{what} got multiple values for argument '{name}'");
            result[i] = value;
            set[i] = true;
        }
        for (int i = 0; i < names.Length; i++)
        {
            if (set[i]) continue;
            if (i < required) throw new JinjaRuntimeError($"{what} is missing the required argument '{names[i]}'");
            result[i] = defaults[i];
        }
        return result;
    }
}

/// <summary>Something a template can call: a global function, a bound method or a macro.</summary>
internal abstract class JinjaCallable
{
    public abstract string Name { get; }
    public abstract object? Invoke(CallArgs args);
    public override string ToString() => $"<function {Name}>";
}

/// <summary>A callable backed by a delegate (globals such as <c>range</c>, bound string/dict methods).</summary>
internal sealed class JinjaFunction(string name, Func<CallArgs, object?> body) : JinjaCallable
{
    public override string Name => name;
    public override object? Invoke(CallArgs args) => body(args);
}

/// <summary>
/// A Python iterator: what Jinja's lazy filters return (generators of <c>map</c>, <c>select</c>, <c>items</c>,
/// <c>unique</c>; the reverse iterator of <c>reverse</c>). Single use, always truthy, no length, not subscriptable; the
/// filter's work (and its errors) happens when it is iterated.
/// </summary>
internal sealed class JinjaIterator(string typeName, string? generatorName, IEnumerable<object?> source)
{
    IEnumerator<object?>? _enumerator;

    /// <summary>Python's type name: "generator", "list_reverseiterator", ...</summary>
    public string TypeName => typeName;

    /// <summary>The remaining items; items taken once are gone, as with a Python iterator.</summary>
    public IEnumerable<object?> Consume()
    {
        _enumerator ??= source.GetEnumerator();
        while (_enumerator.MoveNext()) yield return _enumerator.Current;
    }

    /// <summary>Python's repr; the "address" is an identity hash (Python prints the object's memory address).</summary>
    public override string ToString() =>
        (generatorName is null ? $"<{typeName} object" : $"<generator object {generatorName}") +
        $" at 0x7f{System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(this):x10}>";
}

/// <summary>A dict view (<c>dict.items()</c>, <c>.keys()</c>, <c>.values()</c>): has a length and iterates again, but is not subscriptable.</summary>
internal sealed class JinjaDictView(string typeName, IReadOnlyList<object?> items)
{
    public string TypeName => typeName;
    public IReadOnlyList<object?> Items => items;
    public override string ToString() => $"{typeName}({PyFormat.Repr(items.ToList())})";
}

/// <summary>Python's <c>range</c> object (what the <c>range</c> global returns).</summary>
internal sealed class JinjaRange(long start, long stop, long step)
{
    public IReadOnlyList<object?> Items { get; } = Enumerate(start, stop, step).ToList();

    static IEnumerable<object?> Enumerate(long start, long stop, long step)
    {
        for (long i = start; step > 0 ? i < stop : i > stop; i += step) yield return i;
    }

    public override string ToString() => step == 1 ? $"range({start}, {stop})" : $"range({start}, {stop}, {step})";
}
