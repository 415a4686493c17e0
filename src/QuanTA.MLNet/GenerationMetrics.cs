using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML;
using QuanTA.MLNet.Data;

namespace QuanTA.MLNet;

/// <summary>Aggregate generation metrics over a data view.</summary>
/// <param name="ExactMatch">Fraction of rows whose normalized prediction equals the normalized target.</param>
/// <param name="F1">Mean token-level F1 between normalized prediction and target (SQuAD style).</param>
/// <param name="Count">Rows evaluated.</param>
public sealed record GenerationMetricsResult(double ExactMatch, double F1, long Count);

/// <summary>
/// Metrics for text generation: SQuAD-style exact match and token-level F1 (lower-case, punctuation and the articles
/// a/an/the removed, whitespace collapsed; the normalization the paper's DROP evaluation builds on), and perplexity on target
/// tokens given the prompt.
/// </summary>
public static partial class GenerationMetrics
{
    [GeneratedRegex(@"\b(a|an|the)\b", RegexOptions.CultureInvariant)]
    private static partial Regex Articles();

    /// <summary>SQuAD normalization: lower case, drop punctuation, drop articles, collapse whitespace.</summary>
    public static string Normalize(string text)
    {
        var lower = text.ToLowerInvariant();
        var sb = new StringBuilder(lower.Length);
        foreach (var ch in lower) if (!char.IsPunctuation(ch) && !char.IsSymbol(ch)) sb.Append(ch);
        var noArticles = Articles().Replace(sb.ToString(), " ");
        return string.Join(' ', noArticles.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>True when the normalized strings are equal.</summary>
    public static bool ExactMatch(string prediction, string target) => Normalize(prediction) == Normalize(target);

    /// <summary>Token-level F1 of the normalized strings (1 when both are empty, 0 when only one is).</summary>
    public static double TokenF1(string prediction, string target)
    {
        var p = Normalize(prediction).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var g = Normalize(target).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (p.Length == 0 || g.Length == 0) return p.Length == g.Length ? 1 : 0;
        var counts = g.GroupBy(t => t).ToDictionary(x => x.Key, x => x.Count());
        int same = 0;
        foreach (var t in p)
            if (counts.TryGetValue(t, out var c) && c > 0) { same++; counts[t] = c - 1; }
        if (same == 0) return 0;
        double precision = (double)same / p.Length, recall = (double)same / g.Length;
        return 2 * precision * recall / (precision + recall);
    }

    /// <summary>Exact match and F1 between a generated-text column and a target column of a (transformed) data view.</summary>
    public static GenerationMetricsResult Evaluate(IDataView data, string targetColumnName = "Target", string generatedTextColumnName = "GeneratedText")
    {
        ArgumentNullException.ThrowIfNull(data);
        var target = ColumnChecks.Text(data.Schema, targetColumnName, "target text");
        var generated = ColumnChecks.Text(data.Schema, generatedTextColumnName, "generated text");
        using var cursor = data.GetRowCursor([target, generated]);
        var getTarget = cursor.GetGetter<ReadOnlyMemory<char>>(target);
        var getGenerated = cursor.GetGetter<ReadOnlyMemory<char>>(generated);
        ReadOnlyMemory<char> t = default, g = default;
        double em = 0, f1 = 0; long n = 0;
        while (cursor.MoveNext())
        {
            getTarget(ref t); getGenerated(ref g);
            string ts = t.ToString(), gs = g.ToString();
            em += ExactMatch(gs, ts) ? 1 : 0;
            f1 += TokenF1(gs, ts);
            n++;
        }
        if (n == 0) throw new InvalidDataException("The data view has no rows to evaluate.");
        return new GenerationMetricsResult(em / n, f1 / n, n);
    }

    /// <summary>Perplexity of the target column given the prompt column, under a fine-tuned generation model.</summary>
    public static double Perplexity(QuanTAFineTuneTransformer model, IDataView data)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model.Perplexity(data);
    }
}
