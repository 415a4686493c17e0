namespace QuanTA.Core.Chat.Templates;

internal static partial class JinjaFilters
{
    static object? ApplyCollectionFilter(string name, object? value, CallArgs args, JinjaEvaluator env)
    {
        object?[] Bind(string[] names, params object?[] defaults) => args.Bind($"filter '{name}'", names, defaults);
        switch (name)
        {
            case "items":
                Bind([]);
                return new JinjaIterator("generator", "do_items", ItemPairs(value));
            case "list":
                Bind([]);
                return PyOps.Iterate(value).ToList();
            case "first":
                Bind([]);
                foreach (var item in PyOps.Iterate(value)) return item;
                return JinjaUndefined.WithHint("No first item, sequence was empty.");
            case "last":
                Bind([]);
                var all = Reversible(value);
                return all.Count > 0 ? all[^1] : JinjaUndefined.WithHint("No last item, sequence was empty.");
            case "reverse":
                Bind([]);
                return Reverse(value);
            case "join":
                var j = Bind(["d", "attribute"], "", null);
                var parts = PyOps.Iterate(value);
                if (j[1] is not null) parts = parts.Select(AttributeGetter(j[1], null));
                return string.Join(PyFormat.Str(j[0]), parts.Select(PyFormat.Str));
            case "map":
                return new JinjaIterator("generator", "sync_do_map", Map(value, args, env));
            case "select" or "reject" or "selectattr" or "rejectattr":
                return new JinjaIterator("generator", "select_or_reject", SelectOrReject(name, value, args, env));
            case "sort":
                var so = Bind(["reverse", "case_sensitive", "attribute"], false, false, null);
                return Sorted(PyOps.Iterate(value).ToList(), PyOps.Truthy(so[0]), PyOps.Truthy(so[1]), so[2]);
            case "dictsort":
                var ds = Bind(["case_sensitive", "by", "reverse"], false, "key", false);
                if (value is not JinjaDict dd) throw new JinjaRuntimeError("You can only sort by either 'key' or 'value'");
                int pos = PyFormat.Str(ds[1]) switch { "key" => 0, "value" => 1, _ => throw new JinjaRuntimeError("You can only sort by either 'key' or 'value'") };
                var pairs = dd.Items.Select(kv => (object?)new JinjaTuple([kv.Key, kv.Value])).ToList();
                return Sorted(pairs, PyOps.Truthy(ds[2]), PyOps.Truthy(ds[0]), (long)pos);
            case "unique":
                var u = Bind(["case_sensitive", "attribute"], false, null);
                return new JinjaIterator("generator", "sync_do_unique", Unique(value, PyOps.Truthy(u[0]), u[1]));
            case "min" or "max":
                var mm = Bind(["case_sensitive", "attribute"], false, null);
                var items = PyOps.Iterate(value).ToList();
                if (items.Count == 0) return JinjaUndefined.WithHint("No aggregated item, sequence was empty.");
                var getter = mm[1] is null ? (Func<object?, object?>)(x => x) : AttributeGetter(mm[1], null);
                var best = items[0];
                foreach (var item in items.Skip(1))
                {
                    int c = PyOps.Compare(CaseKey(getter(item), PyOps.Truthy(mm[0])), CaseKey(getter(best), PyOps.Truthy(mm[0])), name == "min" ? "<" : ">");
                    if (name == "min" ? c < 0 : c > 0 && c != 2) best = item;
                }
                return best;
            case "sum":
                var sm = Bind(["attribute", "start"], null, 0L);
                var values = PyOps.Iterate(value);
                if (sm[0] is not null) values = values.Select(AttributeGetter(sm[0], null));
                return values.Aggregate(sm[1], PyOps.Add);
            default:
                throw new JinjaRuntimeError($"No filter named '{name}'.");
        }
    }

    /// <summary>What Python's <c>reversed()</c> accepts (sequences, dicts, dict views, ranges), as a list.</summary>
    static IReadOnlyList<object?> Reversible(object? value) => value switch
    {
        string s => PyStr.CodePoints(s).ToList(),
        JinjaDict or List<object?> or JinjaTuple or JinjaUndefined or JinjaDictView or JinjaRange => PyOps.Iterate(value).ToList(),
        _ => throw new JinjaRuntimeError($"'{PyOps.TypeName(value)}' object is not reversible"),
    };

    /// <summary>Jinja's <c>reverse</c>: a reversed string, else Python's reverse iterator, else a reversed list of an iterable.</summary>
    static object? Reverse(object? value)
    {
        switch (value)
        {
            case string s:
                return PyStr.FromCodePoints(Enumerable.Reverse(PyStr.ToCodePoints(s)));
            case JinjaIterator:
                var list = PyOps.Iterate(value).ToList();
                list.Reverse();
                return list;
        }
        string typeName = value switch
        {
            List<object?> => "list_reverseiterator",
            JinjaDict => "dict_reversekeyiterator",
            JinjaRange => "range_iterator",
            JinjaDictView view => view.TypeName.Replace("dict_", "dict_reverse") + "iterator",
            JinjaTuple or JinjaUndefined => "reversed",
            _ => throw new JinjaRuntimeError("argument must be iterable"),
        };
        return new JinjaIterator(typeName, null, Reversible(value).AsEnumerable().Reverse());
    }

    static IEnumerable<object?> ItemPairs(object? value)
    {
        if (value is JinjaUndefined) yield break;
        if (value is not JinjaDict dict) throw new JinjaRuntimeError("Can only get item pairs from a mapping.");
        foreach (var (k, v) in dict.Items) yield return new JinjaTuple([k, v]);
    }

    static IEnumerable<object?> Unique(object? value, bool caseSensitive, object? attribute)
    {
        var key = attribute is null ? (Func<object?, object?>)(x => x) : AttributeGetter(attribute, null);
        var seen = new JinjaDict(); // a Python set: unhashable keys fail
        foreach (var item in PyOps.Iterate(value))
        {
            var k = CaseKey(key(item), caseSensitive);
            if (seen.ContainsKey(k)) continue;
            seen.Set(k, null);
            yield return item;
        }
    }

    static object? CaseKey(object? v, bool caseSensitive) => !caseSensitive && v is string s ? PyStr.Lower(s) : v;

    /// <summary>
    /// Jinja's <c>make_attrgetter</c>: "a.b.0" looks up each part with item-first access; a missing value becomes
    /// <paramref name="fallback"/> when one is given.
    /// </summary>
    static Func<object?, object?> AttributeGetter(object? attribute, object? fallback)
    {
        var parts = attribute is string s
            ? s.Split('.').Select(p => long.TryParse(p, out long n) ? (object?)n : p).ToArray()
            : [attribute];
        return item =>
        {
            foreach (var part in parts)
            {
                item = JinjaAccess.GetItem(item, part);
                if (fallback is not null && item is JinjaUndefined) item = fallback;
            }
            return item;
        };
    }

    static List<object?> Sorted(List<object?> items, bool reverse, bool caseSensitive, object? attribute)
    {
        var getter = attribute is null ? (Func<object?, object?>)(x => x) : AttributeGetter(attribute, null);
        var keyed = items.Select((item, index) => (Item: item, Key: CaseKey(getter(item), caseSensitive), Index: index)).ToList();
        // Python's sort is stable also with reverse=True (equal items keep their order).
        try
        {
            keyed.Sort((a, b) =>
            {
                int c = PyOps.Compare(a.Key, b.Key, "<");
                if (c == 2) c = 0;
                if (reverse) c = -c;
                return c != 0 ? c : a.Index.CompareTo(b.Index);
            });
        }
        catch (InvalidOperationException e) when (e.InnerException is JinjaRuntimeError inner)
        {
            throw inner; // List.Sort wraps comparer exceptions
        }
        return keyed.Select(k => k.Item).ToList();
    }

    static IEnumerable<object?> Map(object? value, CallArgs args, JinjaEvaluator env)
    {
        if (!PyOps.Truthy(value)) yield break;
        Func<object?, object?> f;
        if (args.Positional.Count == 0 && args.Keywords.Any(k => k.Key == "attribute"))
        {
            var p = args.Bind("filter 'map'", ["attribute", "default"], [null, null]);
            f = AttributeGetter(p[0], p[1]);
        }
        else
        {
            if (args.Positional.Count == 0) throw new JinjaRuntimeError("map requires a filter argument");
            string filter = args.Positional[0] as string ?? throw new JinjaRuntimeError("map requires a filter name");
            var rest = new CallArgs(args.Positional.Skip(1).ToList(), args.Keywords);
            f = item => env.CallFilter(filter, item, rest);
        }
        foreach (var item in PyOps.Iterate(value)) yield return f(item);
    }

    static IEnumerable<object?> SelectOrReject(string name, object? value, CallArgs args, JinjaEvaluator env)
    {
        if (!PyOps.Truthy(value)) yield break;
        bool byAttribute = name.EndsWith("attr", StringComparison.Ordinal);
        bool keep = name.StartsWith("select", StringComparison.Ordinal);
        var positional = args.Positional;
        if (args.Keywords.Count > 0) throw new JinjaRuntimeError($"filter '{name}' does not take keyword arguments here");
        Func<object?, object?> transform = x => x;
        int offset = 0;
        if (byAttribute)
        {
            if (positional.Count == 0) throw new JinjaRuntimeError("Missing parameter for attribute name");
            transform = AttributeGetter(positional[0], null);
            offset = 1;
        }
        Func<object?, bool> test;
        if (positional.Count > offset)
        {
            string testName = positional[offset] as string ?? throw new JinjaRuntimeError($"filter '{name}' expects a test name");
            var testArgs = positional.Skip(offset + 1).ToList();
            test = item => env.CallTest(testName, item, testArgs);
        }
        else test = PyOps.Truthy;
        foreach (var item in PyOps.Iterate(value))
            if (test(transform(item)) == keep) yield return item;
    }
}
