using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.Cli.Commands;

/// <summary>
/// The JSON that <c>quanta evaluate</c> prints, built so that it can always be written: a metric that is NaN or ±∞ (undefined
/// on this test set) becomes <c>null</c>, and <c>notes.&lt;metric&gt;</c> says why.
/// </summary>
internal sealed class EvaluationReport
{
    readonly JsonObject _root = new();
    readonly JsonObject _notes = new();

    /// <summary>Adds a plain field (text, count, array).</summary>
    public EvaluationReport Add(string name, JsonNode? value)
    {
        _root[name] = value;
        return this;
    }

    /// <summary>Adds a metric; a NaN or ±∞ value is written as null with <paramref name="undefinedReason"/> (or a generic one) in <c>notes</c>.</summary>
    public EvaluationReport Metric(string name, double value, string? undefinedReason = null)
    {
        if (double.IsFinite(value)) _root[name] = value;
        else
        {
            _root[name] = null;
            _notes[name] = $"{Describe(value)}: {undefinedReason ?? "undefined on this test set"}.";
        }
        return this;
    }

    /// <summary>
    /// Adds a list of metrics (e.g. per class). Entry <c>i</c> is written as null when <paramref name="whyUndefined"/>(i) gives a
    /// reason, or when it is NaN or ±∞; <c>notes</c> lists each such entry by label with its reason.
    /// </summary>
    public EvaluationReport Metrics(string name, IReadOnlyList<double> values, IReadOnlyList<string> labels, Func<int, string?> whyUndefined)
    {
        var array = new JsonArray();
        var undefined = new List<string>();
        for (int i = 0; i < values.Count; i++)
        {
            var reason = whyUndefined(i) ?? (double.IsFinite(values[i]) ? null : $"{Describe(values[i])}, undefined on this test set");
            array.Add(reason is null ? values[i] : null);
            if (reason is not null)
                undefined.Add($"'{(i < labels.Count ? labels[i] : i.ToString(CultureInfo.InvariantCulture))}': {reason}");
        }
        _root[name] = array;
        if (undefined.Count > 0) _notes[name] = $"null for {string.Join("; ", undefined)}.";
        return this;
    }

    /// <summary>Adds a note that is not about one metric's value (e.g. a single-class test set).</summary>
    public EvaluationReport Note(string name, string text)
    {
        _notes[name] = text;
        return this;
    }

    /// <summary>The JSON text (indented); <c>notes</c> appears only when there is something to explain.</summary>
    public string ToJson()
    {
        if (_notes.Count > 0) _root["notes"] = _notes.DeepClone();
        return _root.ToJsonString(new System.Text.Json.JsonSerializerOptions
        {
            WriteIndented = true,
            Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,   // ∞ and ' as themselves (stdout, not HTML)
        });
    }

    static string Describe(double value) => double.IsNaN(value) ? "NaN" : value > 0 ? "+∞" : "−∞";
}

/// <summary>Rows of a labelled test set, split by whether their label was seen in training.</summary>
internal sealed record LabelCensus(long Rows, long UnseenRows, IReadOnlyList<string> UnseenLabels, IReadOnlyList<string> SeenLabelsPresent)
{
    /// <summary>How an empty label cell is shown in messages.</summary>
    public const string EmptyLabel = "(empty)";

    /// <summary>Reads <paramref name="labelColumn"/> of <paramref name="data"/> and compares every value with <paramref name="trainedLabels"/>;
    /// messages name the file as <paramref name="fileFlag"/> '<paramref name="dataPath"/>'.</summary>
    public static LabelCensus Take(IDataView data, string labelColumn, IReadOnlyList<string> trainedLabels, string dataPath, string fileFlag = "--data")
    {
        var column = data.Schema.GetColumnOrNull(labelColumn) ?? throw new InvalidDataException(
            $"{fileFlag} '{dataPath}' has no label column '{labelColumn}' (its columns: {string.Join(", ", data.Schema.Select(c => c.Name))}); " +
            "the model was trained with that label column: rename the column in the file.");
        var trained = new HashSet<string>(trainedLabels, StringComparer.Ordinal);
        var unseen = new SortedSet<string>(StringComparer.Ordinal);
        var present = new SortedSet<string>(StringComparer.Ordinal);
        long rows = 0, unseenRows = 0;
        using var cursor = data.GetRowCursor([column]);
        var read = LabelGetter(cursor, column, dataPath, fileFlag);
        while (cursor.MoveNext())
        {
            rows++;
            var label = read();
            if (label.Length > 0 && trained.Contains(label)) present.Add(label);
            else
            {
                unseenRows++;
                unseen.Add(label.Length == 0 ? EmptyLabel : label);
            }
        }
        return new LabelCensus(rows, unseenRows, [.. unseen], [.. present]);
    }

    static Func<string> LabelGetter(DataViewRowCursor cursor, DataViewSchema.Column column, string dataPath, string fileFlag)
    {
        if (column.Type is not TextDataViewType)
            throw new InvalidDataException($"{fileFlag} '{dataPath}': label column '{column.Name}' is {column.Type}, expected text.");
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> value = default;
        return () => { getter(ref value); return value.ToString(); };
    }

    /// <summary>Up to <paramref name="max"/> labels, quoted, then "and N more".</summary>
    public static string List(IReadOnlyList<string> labels, int max = 10)
        => string.Join(", ", labels.Take(max).Select(l => l == EmptyLabel ? l : $"'{l}'")) + (labels.Count > max ? $" and {labels.Count - max} more" : "");
}
