using System.Globalization;
using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Data;

/// <summary>
/// The classes of a key-typed label column: their count and (when the label has them) the <c>KeyValues</c> annotation,
/// copied onto <c>PredictedLabel</c> so <c>MapKeyToValue</c> works, and used for the <c>Score</c> column's
/// <c>SlotNames</c> / <c>TrainingLabelValues</c> annotations. Saved with the model.
/// </summary>
internal sealed class LabelValues
{
    static readonly (string Code, Type Raw, PrimitiveDataViewType Type)[] Supported =
    [
        ("text", typeof(ReadOnlyMemory<char>), TextDataViewType.Instance),
        ("f32", typeof(float), NumberDataViewType.Single), ("f64", typeof(double), NumberDataViewType.Double),
        ("i32", typeof(int), NumberDataViewType.Int32), ("i64", typeof(long), NumberDataViewType.Int64),
        ("u32", typeof(uint), NumberDataViewType.UInt32), ("u64", typeof(ulong), NumberDataViewType.UInt64),
        ("i16", typeof(short), NumberDataViewType.Int16), ("u16", typeof(ushort), NumberDataViewType.UInt16),
        ("i8", typeof(sbyte), NumberDataViewType.SByte), ("u8", typeof(byte), NumberDataViewType.Byte),
        ("bool", typeof(bool), BooleanDataViewType.Instance),
    ];

    readonly string? _code;      // null: the label had no KeyValues annotation
    readonly string[] _values;   // invariant-culture strings, one per class

    LabelValues(int count, string? code, string[] values) { Count = count; _code = code; _values = values; }

    /// <summary>Number of classes (the key type's count).</summary>
    public int Count { get; }

    /// <summary>Class names for display / SlotNames ("0", "1", … when the label has no key values).</summary>
    public IReadOnlyList<string> Names => _code is null ? Enumerable.Range(0, Count).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray() : _values;

    /// <summary>The key values as strings, or null when the label has none.</summary>
    public IReadOnlyList<string>? KeyNames => _code is null ? null : _values;

    /// <summary>Reads count and key values from a key-typed label column.</summary>
    public static LabelValues From(DataViewSchema.Column label)
    {
        var key = (KeyDataViewType)label.Type;
        int count = checked((int)key.Count);
        var ann = label.Annotations.Schema.GetColumnOrNull(AnnotationKinds.KeyValues);
        if (ann is null || ann.Value.Type is not VectorDataViewType vt) return new LabelValues(count, null, []);
        var entry = Supported.FirstOrDefault(s => s.Raw == vt.ItemType.RawType);
        if (entry.Code is null) return new LabelValues(count, null, []);
        var read = typeof(LabelValues).GetMethod(nameof(ReadValues), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(entry.Raw);
        var values = (string[])read.Invoke(null, [label.Annotations])!;
        return new LabelValues(count, entry.Code, values);
    }

    static string[] ReadValues<T>(DataViewSchema.Annotations annotations)
    {
        VBuffer<T> buf = default;
        annotations.GetValue(AnnotationKinds.KeyValues, ref buf);
        return buf.DenseValues().Select(v => v is ReadOnlyMemory<char> m ? m.ToString() : Convert.ToString(v, CultureInfo.InvariantCulture)!).ToArray();
    }

    /// <summary>Adds the <c>KeyValues</c> annotation (when known) to a key column's annotations.</summary>
    public void AddKeyValues(DataViewSchema.Annotations.Builder builder)
    {
        if (_code is null) return;
        AddVector(builder, AnnotationKinds.KeyValues);
    }

    /// <summary>Adds the multiclass score annotations ML.NET's evaluators and scorers read.</summary>
    public void AddScoreAnnotations(DataViewSchema.Annotations.Builder builder)
    {
        var names = Names.Select(n => n.AsMemory()).ToArray();
        builder.Add(AnnotationKinds.SlotNames, new VectorDataViewType(TextDataViewType.Instance, Count),
            (ref VBuffer<ReadOnlyMemory<char>> v) => v = new VBuffer<ReadOnlyMemory<char>>(names.Length, names));
        builder.Add(AnnotationKinds.ScoreColumnKind, TextDataViewType.Instance,
            (ref ReadOnlyMemory<char> v) => v = "MulticlassClassification".AsMemory());
        builder.Add(AnnotationKinds.ScoreValueKind, TextDataViewType.Instance, (ref ReadOnlyMemory<char> v) => v = "Score".AsMemory());
        if (_code is not null) AddVector(builder, AnnotationKinds.TrainingLabelValues);
    }

    void AddVector(DataViewSchema.Annotations.Builder builder, string kind)
    {
        var entry = Supported.First(s => s.Code == _code);
        var add = typeof(LabelValues).GetMethod(nameof(AddTyped), BindingFlags.NonPublic | BindingFlags.Instance)!.MakeGenericMethod(entry.Raw);
        add.Invoke(this, [builder, kind, entry.Type]);
    }

    void AddTyped<T>(DataViewSchema.Annotations.Builder builder, string kind, PrimitiveDataViewType itemType)
    {
        var values = _values.Select(Parse<T>).ToArray();
        builder.Add(kind, new VectorDataViewType(itemType, values.Length), (ref VBuffer<T> v) => v = new VBuffer<T>(values.Length, values));
    }

    static T Parse<T>(string s)
    {
        if (typeof(T) == typeof(ReadOnlyMemory<char>)) return (T)(object)s.AsMemory();
        return (T)Convert.ChangeType(s, typeof(T), CultureInfo.InvariantCulture);
    }

    /// <summary>Serialises count, value type and values.</summary>
    public void Write(BinaryWriter w)
    {
        w.Write(Count);
        w.Write(_code ?? "");
        w.Write(_values.Length);
        foreach (var v in _values) w.Write(v);
    }

    /// <summary>Reads what <see cref="Write"/> wrote.</summary>
    public static LabelValues Read(BinaryReader r)
    {
        int count = r.ReadInt32();
        string code = r.ReadString();
        var values = new string[r.ReadInt32()];
        for (int i = 0; i < values.Length; i++) values[i] = r.ReadString();
        if (code.Length > 0 && Supported.All(s => s.Code != code)) throw new InvalidDataException($"Unknown label value type '{code}' in the saved model.");
        return new LabelValues(count, code.Length == 0 ? null : code, values);
    }
}

/// <summary>ML.NET annotation kind names (AnnotationUtils.Kinds is internal; these strings are part of the saved-model format).</summary>
internal static class AnnotationKinds
{
    public const string KeyValues = "KeyValues";
    public const string SlotNames = "SlotNames";
    public const string ScoreColumnKind = "ScoreColumnKind";
    public const string ScoreValueKind = "ScoreValueKind";
    public const string TrainingLabelValues = "TrainingLabelValues";
}
