namespace QuanTA.Core.Chat.Templates;

/// <summary>
/// <c>obj.name</c> and <c>obj[key]</c> as Jinja's (immutable) sandbox does them: <c>.name</c> tries the Python attribute
/// first (so <c>message.items</c> is the dict method) and then the item; <c>[key]</c> tries the item first and then the
/// attribute. A miss is an <see cref="JinjaUndefined"/> (an error only when used further); a mutating method
/// (<c>list.append</c>, <c>dict.update</c>, ...) is an undefined value whose use reports the sandbox's refusal.
/// </summary>
internal static class JinjaAccess
{
    public static object? GetAttr(object? obj, string name)
    {
        if (obj is JinjaUndefined u) throw u.Fail();
        if (name.StartsWith("__", StringComparison.Ordinal)) return JinjaUndefined.Unsafe(obj, name);
        if (TryAttribute(obj, name, out var value)) return value;
        if (obj is JinjaDict d && d.TryGet(name, out var item)) return item;
        return JinjaUndefined.ForMember(obj, name);
    }

    /// <summary>The <c>attr</c> filter: the Python attribute only (a dict's keys are not attributes).</summary>
    public static object? GetAttributeOnly(object? obj, string name)
    {
        if (obj is JinjaUndefined u) throw u.Fail();
        return !name.StartsWith("__", StringComparison.Ordinal) && TryAttribute(obj, name, out var value) ? value : JinjaUndefined.ForMember(obj, name);
    }

    public static object? GetItem(object? obj, object? key)
    {
        switch (obj)
        {
            case JinjaUndefined u:
                throw u.Fail();
            case JinjaDict d when d.TryGet(key, out var v):
                return v;
            case string s when PyOps.IsInt(key):
                var cps = PyStr.ToCodePoints(s);
                return TryIndex(cps.Length, PyOps.AsLong(key), out int ci) ? PyStr.FromCodePoints([cps[ci]]) : JinjaUndefined.ForMember(obj, key);
            case List<object?> or JinjaTuple or JinjaRange when PyOps.IsInt(key):
                var seq = obj is JinjaRange r ? r.Items : PyOps.AsSequence(obj)!;
                return TryIndex(seq.Count, PyOps.AsLong(key), out int i) ? seq[i] : JinjaUndefined.ForMember(obj, key);
        }
        if (key is string name && !name.StartsWith("__", StringComparison.Ordinal) && TryAttribute(obj, name, out var attr))
            return attr;
        return JinjaUndefined.ForMember(obj, key);
    }

    /// <summary>
    /// <c>obj[start:stop:step]</c> of a string, list, tuple or range. Jinja compiles slices to a plain Python subscript
    /// (not through its getitem), so anything else is an error rather than undefined.
    /// </summary>
    public static object? Slice(object? obj, object? start, object? stop, object? step)
    {
        if (obj is JinjaUndefined u) throw u.Fail();
        if (obj is JinjaDict) throw new JinjaRuntimeError("unhashable type: 'slice'");
        if (obj is not (string or List<object?> or JinjaTuple or JinjaRange))
            throw new JinjaRuntimeError($"'{PyOps.TypeName(obj)}' object is not subscriptable");
        if (!IsBound(start) || !IsBound(stop) || !IsBound(step))
            throw new JinjaRuntimeError("slice indices must be integers or None or have an __index__ method");
        long? Bound(object? b) => b is null ? null : PyOps.AsLong(b);
        switch (obj)
        {
            case string s:
                var cps = PyStr.ToCodePoints(s);
                return PyStr.FromCodePoints(PyStr.SliceIndexes(cps.Length, Bound(start), Bound(stop), Bound(step)).Select(i => cps[i]));
            case JinjaTuple t:
                return new JinjaTuple(PyStr.SliceIndexes(t.Items.Count, Bound(start), Bound(stop), Bound(step)).Select(i => t.Items[i]).ToList());
            default: // list, or range (sliced to a list here; Python gives a range with the same items)
                var items = obj is JinjaRange r ? r.Items : (List<object?>)obj;
                return PyStr.SliceIndexes(items.Count, Bound(start), Bound(stop), Bound(step)).Select(i => items[i]).ToList();
        }
    }

    static bool IsBound(object? b) => b is null || PyOps.IsInt(b);

    static bool TryIndex(int count, long index, out int i)
    {
        if (index < 0) index += count;
        i = (int)index;
        return index >= 0 && index < count;
    }

    /// <summary>The Python attribute <paramref name="name"/> of <paramref name="obj"/> (methods, namespace and loop attributes).</summary>
    static bool TryAttribute(object? obj, string name, out object? value)
    {
        switch (obj)
        {
            case JinjaNamespace ns:
                return ns.Attributes.TryGetValue(name, out value);
            case JinjaLoop loop:
                return loop.TryGet(name, out value);
            case JinjaMacro macro when name == "name":
                value = macro.Name;
                return true;
        }
        if (JinjaMethods.IsMutating(obj, name))
        {
            value = JinjaUndefined.Unsafe(obj, name);
            return true;
        }
        value = JinjaMethods.Bind(obj, name);
        return value is not null;
    }
}
