using Microsoft.ML;

namespace QuanTA.MLNet.Tests;

/// <summary>Row types and small learnable in-test data sets.</summary>
public sealed class TextRow
{
    public string Text { get; set; } = "";
    public string Label { get; set; } = "";
}

public sealed class PromptRow
{
    public string Text { get; set; } = "";
    public string Target { get; set; } = "";
}

public sealed class ClassPrediction
{
    public float[] Score { get; set; } = [];
    public string PredictedLabel { get; set; } = "";
}

public sealed class GenerationPrediction
{
    public string GeneratedText { get; set; } = "";
}

public static class ToyData
{
    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    static readonly string[] Fillers = ["small", "green", "house", "table", "quiet", "paper", "stone", "light", "window", "garden",
        "old", "city", "road", "morning", "blue", "simple", "warm", "night", "open", "cloud"];

    /// <summary>Label = which of three keywords the text contains (the rest is random filler).</summary>
    public static readonly (string Keyword, string Label)[] Classes = [("apple", "fruit"), ("river", "water"), ("music", "sound")];

    public static List<TextRow> Classification(int count, int seed)
    {
        var rand = new Random(seed);
        var rows = new List<TextRow>();
        for (int i = 0; i < count; i++)
        {
            var (kw, label) = Classes[i % Classes.Length];
            var words = Enumerable.Range(0, 4).Select(_ => Fillers[rand.Next(Fillers.Length)]).ToList();
            words.Insert(rand.Next(words.Count + 1), kw);
            rows.Add(new TextRow { Text = string.Join(' ', words), Label = label });
        }
        return rows.OrderBy(_ => rand.Next()).ToList();
    }

    static readonly (string Word, string Answer)[] Pairs = [("cat", "animal"), ("rose", "flower"), ("oak", "tree"), ("car", "vehicle")];

    /// <summary>Prompt "word: X\nkind:" → target " Y\n" with four fixed pairs (learnable by rote).</summary>
    public static List<PromptRow> Generation(int count)
    {
        var rows = new List<PromptRow>();
        for (int i = 0; i < count; i++)
        {
            var (w, a) = Pairs[i % Pairs.Length];
            rows.Add(new PromptRow { Text = $"word: {w}\nkind:", Target = $" {a}" });
        }
        return rows;
    }

    public static IDataView View<T>(MLContext ml, IEnumerable<T> rows) where T : class => ml.Data.LoadFromEnumerable(rows);
}
