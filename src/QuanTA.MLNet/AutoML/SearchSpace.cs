using System.Globalization;
using System.Reflection;
using Microsoft.ML.SearchSpace;

namespace QuanTA.MLNet.AutoML;

/// <summary>One dimension of a <see cref="SearchSpace"/>: how a parameter's value is drawn.</summary>
public abstract class SearchOption
{
    /// <summary>Draws a value with <paramref name="random"/>; <paramref name="sampled"/> holds the values drawn so far (earlier
    /// parameters, dotted names), for options that depend on them.</summary>
    public abstract object Sample(Random random, IReadOnlyDictionary<string, object> sampled);

    /// <summary>The default value (the attribute's init / default, else the middle or the first candidate).</summary>
    public abstract object Default(IReadOnlyDictionary<string, object> sampled);

    /// <summary>Every value this option can take given the earlier values <paramref name="sampled"/>, for a finite choice; null for
    /// a continuous range or a flag (which <see cref="SweepSpaceCheck.Combinations"/> holds at its default).</summary>
    public virtual IReadOnlyList<object>? Enumerate(IReadOnlyDictionary<string, object> sampled) => null;
}

/// <summary>A choice among candidates (AutoML's <see cref="ChoiceAttribute"/>), drawn uniformly.</summary>
/// <param name="candidates">The values; at least one.</param>
/// <param name="defaultValue">The default (null → the first candidate).</param>
public sealed class ChoiceOption(IReadOnlyList<object> candidates, object? defaultValue = null) : SearchOption
{
    /// <summary>The values to choose from.</summary>
    public IReadOnlyList<object> Candidates { get; } = candidates is { Count: > 0 } ? candidates
        : throw new ArgumentException("A choice needs at least one candidate.", nameof(candidates));

    /// <inheritdoc/>
    public override object Sample(Random random, IReadOnlyDictionary<string, object> sampled) => Candidates[random.Next(Candidates.Count)];

    /// <inheritdoc/>
    public override object Default(IReadOnlyDictionary<string, object> sampled) => defaultValue ?? Candidates[0];

    /// <inheritdoc/>
    public override IReadOnlyList<object> Enumerate(IReadOnlyDictionary<string, object> sampled) => Candidates;
}

/// <summary>A choice whose candidates depend on the value of an earlier parameter (e.g. the axis layouts of a given axis count).</summary>
/// <param name="parent">Dotted name of the parameter this depends on (must come earlier in the space).</param>
/// <param name="candidates">Candidates for each value of the parent.</param>
public sealed class DependentChoiceOption(string parent, IReadOnlyDictionary<object, IReadOnlyList<object>> candidates) : SearchOption
{
    /// <summary>Dotted name of the parameter this choice depends on.</summary>
    public string Parent { get; } = parent;

    /// <summary>Candidates per parent value.</summary>
    public IReadOnlyDictionary<object, IReadOnlyList<object>> Candidates { get; } = candidates;

    IReadOnlyList<object> For(IReadOnlyDictionary<string, object> sampled)
    {
        if (!sampled.TryGetValue(Parent, out var p))
            throw new InvalidOperationException($"Parameter '{Parent}' must be drawn before the choice that depends on it.");
        if (!Candidates.TryGetValue(p, out var list) || list.Count == 0)
            throw new InvalidOperationException($"No candidates for {Parent} = {p}.");
        return list;
    }

    /// <inheritdoc/>
    public override object Sample(Random random, IReadOnlyDictionary<string, object> sampled)
    {
        var list = For(sampled);
        return list[random.Next(list.Count)];
    }

    /// <inheritdoc/>
    public override object Default(IReadOnlyDictionary<string, object> sampled) => For(sampled)[0];

    /// <inheritdoc/>
    public override IReadOnlyList<object> Enumerate(IReadOnlyDictionary<string, object> sampled) => For(sampled);
}

/// <summary>A numeric range (AutoML's <see cref="RangeAttribute"/>): uniform, or log-uniform when <see cref="LogBase"/>;
/// integers are drawn over the whole range inclusive.</summary>
public sealed class RangeOption : SearchOption
{
    /// <summary>Creates a range over [min, max] of <paramref name="type"/> (int, float or double).</summary>
    public RangeOption(double min, double max, double? init, bool logBase, Type type)
    {
        if (!(min <= max) || !double.IsFinite(min) || !double.IsFinite(max))
            throw new ArgumentException($"Range [{min}, {max}] is not a valid interval (min ≤ max, finite).");
        if (logBase && min <= 0) throw new ArgumentException($"A log-scale range needs min > 0 (got [{min}, {max}]).");
        if (type != typeof(int) && type != typeof(float) && type != typeof(double))
            throw new ArgumentException($"A range parameter must be int, float or double (got {type.Name}).");
        Min = min; Max = max; Init = init; LogBase = logBase; ValueType = type;
    }

    /// <summary>Lower bound (inclusive).</summary>
    public double Min { get; }
    /// <summary>Upper bound (inclusive).</summary>
    public double Max { get; }
    /// <summary>Initial value, if the attribute gave one.</summary>
    public double? Init { get; }
    /// <summary>Draw on a log scale.</summary>
    public bool LogBase { get; }
    /// <summary>int, float or double.</summary>
    public Type ValueType { get; }

    /// <inheritdoc/>
    public override object Sample(Random random, IReadOnlyDictionary<string, object> sampled)
    {
        double u = random.NextDouble();
        double x;
        if (ValueType == typeof(int))
        {
            // inclusive integers: draw over [min, max + 1) (log: [log min, log(max + 1)))
            x = LogBase ? Math.Exp(Math.Log(Min) + u * (Math.Log(Max + 1) - Math.Log(Min))) : Min + u * (Max + 1 - Min);
            return (int)Math.Clamp(Math.Floor(x), Min, Max);
        }
        x = LogBase ? Math.Exp(Math.Log(Min) + u * (Math.Log(Max) - Math.Log(Min))) : Min + u * (Max - Min);
        return Convert(Math.Clamp(x, Min, Max));
    }

    /// <inheritdoc/>
    public override object Default(IReadOnlyDictionary<string, object> sampled) =>
        Convert(Init ?? (LogBase ? Math.Sqrt(Min * Max) : (Min + Max) / 2));

    object Convert(double x) => ValueType == typeof(int) ? (object)(int)Math.Round(x) : ValueType == typeof(float) ? (object)(float)x : (object)x;
}

/// <summary>True or false (AutoML's <see cref="BooleanChoiceAttribute"/>).</summary>
/// <param name="defaultValue">The default.</param>
public sealed class BooleanOption(bool defaultValue = false) : SearchOption
{
    /// <inheritdoc/>
    public override object Sample(Random random, IReadOnlyDictionary<string, object> sampled) => random.Next(2) == 1;

    /// <inheritdoc/>
    public override object Default(IReadOnlyDictionary<string, object> sampled) => defaultValue;
}

/// <summary>
/// A search space in AutoML's style: built from a class whose fields/properties carry <c>Microsoft.ML.SearchSpace</c>
/// attributes (<see cref="RangeAttribute"/>, <see cref="ChoiceAttribute"/>, <see cref="BooleanChoiceAttribute"/>,
/// <see cref="NestOptionAttribute"/> for a nested class), with dotted names for nested members ("QuanTA.Rank"). Options can be
/// replaced (<see cref="With"/>) or pinned (<see cref="Fix"/>) at run time, e.g. with candidates generated from the model.
/// Sampling is in declaration order, so a <see cref="DependentChoiceOption"/> sees its parent's value.
/// </summary>
public sealed class SearchSpace
{
    readonly List<(string Name, SearchOption Option)> _options = [];

    /// <summary>The class the space was read from (values are mapped back onto it by <see cref="ToObject{T}"/>).</summary>
    public Type Type { get; }

    SearchSpace(Type type) => Type = type;

    /// <summary>The parameters in sampling order.</summary>
    public IReadOnlyList<(string Name, SearchOption Option)> Options => _options;

    /// <summary>The option of parameter <paramref name="name"/> (dotted).</summary>
    public SearchOption this[string name] => _options.FirstOrDefault(o => o.Name == name).Option
        ?? throw new KeyNotFoundException($"The search space has no parameter '{name}'. Parameters: {string.Join(", ", _options.Select(o => o.Name))}.");

    /// <summary>Reads the attributes of <typeparamref name="T"/> (public instance fields and properties).</summary>
    public static SearchSpace FromType<T>() where T : new() => FromType(typeof(T));

    /// <summary>Reads the attributes of <paramref name="type"/>; members without a search-space attribute are not searched.</summary>
    public static SearchSpace FromType(Type type)
    {
        var space = new SearchSpace(type);
        Read(type, "", space._options);
        if (space._options.Count == 0)
            throw new ArgumentException($"Type {type.Name} has no member with a Range, Choice, BooleanChoice or NestOption attribute.");
        return space;
    }

    static void Read(Type type, string prefix, List<(string, SearchOption)> into)
    {
        foreach (var m in Members(type))
        {
            var name = prefix + m.Name;
            var valueType = MemberType(m);
            if (m.GetCustomAttribute<NestOptionAttribute>() is not null) { Read(valueType, name + ".", into); continue; }
            if (m.GetCustomAttribute<RangeAttribute>() is { } r)
                into.Add((name, new RangeOption(ToDouble(r.Min), ToDouble(r.Max), r.Init is null ? null : ToDouble(r.Init), r.LogBase, valueType)));
            else if (m.GetCustomAttribute<ChoiceAttribute>() is { } c)
                into.Add((name, new ChoiceOption(c.Candidates.Select(v => ConvertTo(v, valueType, name)).ToArray(),
                    c.DefaultValue is null ? null : ConvertTo(c.DefaultValue, valueType, name))));
            else if (m.GetCustomAttribute<BooleanChoiceAttribute>() is { } b)
            {
                if (valueType != typeof(bool)) throw new ArgumentException($"{name}: BooleanChoice needs a bool member (got {valueType.Name}).");
                into.Add((name, new BooleanOption(b.DefaultValue)));
            }
        }
    }

    static IEnumerable<MemberInfo> Members(Type t) =>
        t.GetMembers(BindingFlags.Public | BindingFlags.Instance).Where(m => m is FieldInfo or PropertyInfo { CanWrite: true })
            .OrderBy(m => m.MetadataToken);

    static Type MemberType(MemberInfo m) => m is FieldInfo f ? f.FieldType : ((PropertyInfo)m).PropertyType;

    static double ToDouble(object v) => System.Convert.ToDouble(v, CultureInfo.InvariantCulture);

    static object ConvertTo(object v, Type t, string name)
    {
        try { return t == typeof(object) || t.IsInstanceOfType(v) ? v : System.Convert.ChangeType(v, t, CultureInfo.InvariantCulture); }
        catch (Exception e) when (e is InvalidCastException or FormatException or OverflowException)
        {
            throw new ArgumentException($"{name}: choice value '{v}' cannot be converted to {t.Name}.", e);
        }
    }

    /// <summary>Replaces parameter <paramref name="name"/>'s option (or adds it at the end); returns this space.</summary>
    public SearchSpace With(string name, SearchOption option)
    {
        ArgumentNullException.ThrowIfNull(option);
        int i = _options.FindIndex(o => o.Name == name);
        if (i >= 0) _options[i] = (name, option); else _options.Add((name, option));
        return this;
    }

    /// <summary>Pins parameter <paramref name="name"/> to one value (a one-candidate choice); returns this space.</summary>
    public SearchSpace Fix(string name, object value)
    {
        _ = this[name];
        return With(name, new ChoiceOption([value]));
    }

    /// <summary>Removes parameter <paramref name="name"/> (e.g. to add it again at the end, after the parameters it depends on);
    /// returns this space.</summary>
    public SearchSpace Remove(string name)
    {
        _ = this[name];
        _options.RemoveAll(o => o.Name == name);
        return this;
    }

    /// <summary>Draws one value per parameter (dotted name → value) in declaration order.</summary>
    public IReadOnlyDictionary<string, object> Sample(Random random)
    {
        var values = new Dictionary<string, object>();
        foreach (var (name, option) in _options) values[name] = option.Sample(random, values);
        return values;
    }

    /// <summary>The default of every parameter.</summary>
    public IReadOnlyDictionary<string, object> Default()
    {
        var values = new Dictionary<string, object>();
        foreach (var (name, option) in _options) values[name] = option.Default(values);
        return values;
    }

    /// <summary>A new <typeparamref name="T"/> with the given values written into its (nested) members.</summary>
    public T ToObject<T>(IReadOnlyDictionary<string, object> values) where T : new()
    {
        if (typeof(T) != Type) throw new ArgumentException($"This space was read from {Type.Name}, not {typeof(T).Name}.");
        object root = new T();
        foreach (var (name, value) in values) Set(root, name.Split('.'), 0, value, name);
        return (T)root;
    }

    static void Set(object target, string[] path, int i, object value, string full)
    {
        var m = target.GetType().GetMember(path[i], BindingFlags.Public | BindingFlags.Instance).FirstOrDefault()
            ?? throw new ArgumentException($"Parameter '{full}': {target.GetType().Name} has no member '{path[i]}'.");
        var type = MemberType(m);
        if (i == path.Length - 1)
        {
            var v = ConvertTo(value, type, full);
            if (m is FieldInfo f) f.SetValue(target, v); else ((PropertyInfo)m).SetValue(target, v);
            return;
        }
        var child = m is FieldInfo cf ? cf.GetValue(target) : ((PropertyInfo)m).GetValue(target);
        if (child is null)
        {
            child = Activator.CreateInstance(type) ?? throw new ArgumentException($"Parameter '{full}': cannot create {type.Name}.");
            if (m is FieldInfo f) f.SetValue(target, child); else ((PropertyInfo)m).SetValue(target, child);
        }
        Set(child, path, i + 1, value, full);
    }
}
