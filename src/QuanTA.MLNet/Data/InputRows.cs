using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Data;

/// <summary>One training/inference row read from a data view: texts, the 0-based label (classification) or target text.</summary>
internal readonly record struct InputRow(long Row, string Text, string? SecondText, int Label, string? Target);

/// <summary>Schema checks with messages that name the column, the expected type and what was found.</summary>
internal static class ColumnChecks
{
    /// <summary>Throws unless <paramref name="name"/> is a text column of <paramref name="schema"/>.</summary>
    /// <remarks>
    /// <paramref name="property"/>: the <see cref="QuanTAFineTuneOptions"/> field that names the column; the message then says
    /// which field to set, and the exception's ParamName is that field (the CLI maps it to its flag).</remarks>
    public static DataViewSchema.Column Text(DataViewSchema schema, string name, string role, string? property = null)
    {
        var col = schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(property ?? name,
            $"The {role} column '{name}' was not found in the input data (columns: {Names(schema)}){Fix(property)}.");
        if (col.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(property ?? name, $"The {role} column '{name}' must be of type Text (string) but is {col.Type}{Fix(property, "a text column")}.");
        return col;
    }

    /// <summary>The option field that names the text (or conversation) column.</summary>
    public static string InputProperty(QuanTAFineTuneOptions o) =>
        o.IsChat ? nameof(QuanTAFineTuneOptions.MessagesColumnName) : nameof(QuanTAFineTuneOptions.TextColumnName);

    /// <summary>"; set QuanTAFineTuneOptions.X to one of them" when the field is known.</summary>
    static string Fix(string? property, string what = "one of them") =>
        property is null ? "" : $"; set QuanTAFineTuneOptions.{property} to {what}";

    /// <summary>Throws unless <paramref name="name"/> is a key column (uint) of <paramref name="schema"/>; returns it.</summary>
    public static DataViewSchema.Column KeyLabel(DataViewSchema schema, string name)
    {
        var col = schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(nameof(QuanTAFineTuneOptions.LabelColumnName),
            $"The label column '{name}' was not found in the input data (columns: {Names(schema)}){Fix(nameof(QuanTAFineTuneOptions.LabelColumnName))}.");
        if (col.Type is not KeyDataViewType key || key.RawType != typeof(uint))
            throw new ArgumentOutOfRangeException(name, $"The label column '{name}' must be a key type (UInt32 key) but is {col.Type}. " +
                $"Convert it upstream with mlContext.Transforms.Conversion.MapValueToKey(\"{name}\").");
        if (key.Count > int.MaxValue) throw new ArgumentOutOfRangeException(name, $"The label column '{name}' has too many classes.");
        return col;
    }

    /// <summary>Same checks on an estimator's <see cref="SchemaShape"/>.</summary>
    public static void Text(SchemaShape shape, string name, string role, string? property = null)
    {
        if (!TryFind(shape, name, out var col))
            throw new ArgumentOutOfRangeException(property ?? name, $"The {role} column '{name}' was not found in the input schema (columns: " +
                $"{string.Join(", ", shape.Select(c => $"'{c.Name}'"))}){Fix(property)}.");
        if (col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType is not TextDataViewType)
            throw new ArgumentOutOfRangeException(property ?? name, $"The {role} column '{name}' must be of type Text (string) but is " +
                $"{(col.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : "a vector of ")}{col.ItemType}{Fix(property, "a text column")}.");
    }

    /// <summary>Same checks on an estimator's <see cref="SchemaShape"/>.</summary>
    public static SchemaShape.Column KeyLabel(SchemaShape shape, string name)
    {
        if (!TryFind(shape, name, out var col))
            throw new ArgumentOutOfRangeException(nameof(QuanTAFineTuneOptions.LabelColumnName), $"The label column '{name}' was not found in the input schema (columns: " +
                $"{string.Join(", ", shape.Select(c => $"'{c.Name}'"))}){Fix(nameof(QuanTAFineTuneOptions.LabelColumnName))}.");
        if (!col.IsKey || col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType != NumberDataViewType.UInt32)
            throw new ArgumentOutOfRangeException(name, $"The label column '{name}' must be a key type (UInt32 key) but is " +
                $"{(col.IsKey ? "key of " : "")}{col.ItemType}. Convert it upstream with mlContext.Transforms.Conversion.MapValueToKey(\"{name}\").");
        return col;
    }

    static bool TryFind(SchemaShape shape, string name, out SchemaShape.Column column)
    {
        column = default;
        bool found = false;
        foreach (var c in shape) if (c.Name == name) { column = c; found = true; }   // last wins, like ML.NET
        return found;
    }

    static string Names(DataViewSchema schema) => string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}'"));
}

/// <summary>
/// Streams rows from a data view with one cursor (never materializing it): texts (+ label or target) in order, optionally
/// shuffled when the data view supports it. Empty texts and missing labels throw naming the row.
/// </summary>
internal sealed class InputRowReader
{
    readonly IDataView _data;
    readonly QuanTAFineTuneOptions _o;
    readonly bool _withSupervision;
    readonly string _role;

    /// <summary>Checks the columns; <paramref name="withSupervision"/> also reads the label / target column. <paramref name="role"/>
    /// names the rows in messages ("training", "validation (QuanTAFineTuneOptions.ValidationSet)", …).</summary>
    public InputRowReader(IDataView data, QuanTAFineTuneOptions options, bool withSupervision, string role = "training")
    {
        _data = data; _o = options; _withSupervision = withSupervision; _role = role;
        ColumnChecks.Text(data.Schema, options.InputColumnName, options.IsChat ? "conversation" : "text", ColumnChecks.InputProperty(options));
        if (options.SecondTextColumnName is not null)
            ColumnChecks.Text(data.Schema, options.SecondTextColumnName, "second text", nameof(QuanTAFineTuneOptions.SecondTextColumnName));
        if (withSupervision)
        {
            if (options.Task == QuanTATask.TextClassification) ColumnChecks.KeyLabel(data.Schema, options.LabelColumnName);
            else if (!options.IsChat) ColumnChecks.Text(data.Schema, options.TargetTextColumnName, "target text", nameof(QuanTAFineTuneOptions.TargetTextColumnName));
        }
    }

    /// <summary>Rows in order (or shuffled with <paramref name="rand"/> when the view can shuffle).</summary>
    public IEnumerable<InputRow> Read(Random? rand = null)
    {
        var s = _data.Schema;
        var cols = new List<DataViewSchema.Column> { s[_o.InputColumnName] };
        if (_o.SecondTextColumnName is not null) cols.Add(s[_o.SecondTextColumnName]);
        string? supervision = !_withSupervision || _o.IsChat ? null   // a conversation carries its own assistant turns
            : _o.Task == QuanTATask.TextClassification ? _o.LabelColumnName : _o.TargetTextColumnName;
        if (supervision is not null) cols.Add(s[supervision]);

        using var cursor = _data.GetRowCursor(cols, _data.CanShuffle ? rand : null);
        var text = cursor.GetGetter<ReadOnlyMemory<char>>(s[_o.InputColumnName]);
        var text2 = _o.SecondTextColumnName is null ? null : cursor.GetGetter<ReadOnlyMemory<char>>(s[_o.SecondTextColumnName]);
        var label = supervision is not null && _o.Task == QuanTATask.TextClassification ? cursor.GetGetter<uint>(s[supervision]) : null;
        var target = supervision is not null && _o.Task == QuanTATask.TextGeneration ? cursor.GetGetter<ReadOnlyMemory<char>>(s[supervision]) : null;
        ReadOnlyMemory<char> t = default, t2 = default, tg = default;
        uint key = 0;
        long row = 0;
        while (cursor.MoveNext())
        {
            text(ref t);
            var str = t.ToString();
            if (string.IsNullOrWhiteSpace(str))
                throw new InvalidDataException($"Row {row}: the {(_o.IsChat ? "conversation" : "text")} column '{_o.InputColumnName}' is empty; every row needs text.");
            string? str2 = null;
            if (text2 is not null) { text2(ref t2); str2 = t2.ToString(); }
            int lab = -1;
            if (label is not null)
            {
                label(ref key);
                if (key == 0)
                    throw new InvalidDataException($"Row {row}: the label column '{_o.LabelColumnName}' has no value (key 0: a label missing " +
                        $"from the MapValueToKey dictionary, or an empty label). Every {_role} row needs a known label.");
                lab = (int)key - 1;
            }
            string? tgt = null;
            if (target is not null)
            {
                target(ref tg); tgt = tg.ToString();
                if (tgt.Length == 0) throw new InvalidDataException($"Row {row}: the target text column '{_o.TargetTextColumnName}' is empty.");
            }
            yield return new InputRow(row++, str, str2, lab, tgt);
        }
    }

    /// <summary>Number of rows (a counting pass when the view does not know it).</summary>
    public long Count()
    {
        var n = _data.GetRowCount();
        if (n is long known) return known;
        long c = 0;
        using var cursor = _data.GetRowCursor([]);
        while (cursor.MoveNext()) c++;
        return c;
    }
}
