using System.Text.Json;
using QuanTA.Cli;

namespace QuanTA.Cli.Tests;

/// <summary><c>quanta finetune</c> → <c>quanta evaluate</c> on the tiny fixtures (in-process).</summary>
[Collection("console")]
public class FineTuneEvaluateCliTests
{
    static string Dir(string name) => QuantaProcess.Dir(name);

    static (int Code, string Out, string Err) Quanta(params string[] args) => QuantaProcess.Run(args);

    static readonly string[] Fillers = ["small", "green", "house", "table", "quiet", "paper", "stone", "light", "window", "garden"];
    static readonly (string Keyword, string Label)[] Classes = [("apple", "fruit"), ("river", "water"), ("music", "sound")];

    /// <summary>A toy keyword → category CSV (columns Sentence, Category), also used by the sweep tests.</summary>
    internal static void WriteToyCsv(string path, int rows, int seed)
    {
        var rand = new Random(seed);
        var lines = new List<string> { "Sentence,Category" };
        for (int i = 0; i < rows; i++)
        {
            var (kw, label) = Classes[i % 3];
            var words = Enumerable.Range(0, 4).Select(_ => Fillers[rand.Next(Fillers.Length)]).ToList();
            words.Insert(rand.Next(5), kw);
            lines.Add($"{string.Join(' ', words)},{label}");
        }
        File.WriteAllLines(path, lines);
    }

    [Fact]
    public void FineTuneThenEvaluateClassification()
    {
        var dir = Directory.CreateTempSubdirectory("quanta-cli");
        try
        {
            string train = Path.Combine(dir.FullName, "train.csv"), test = Path.Combine(dir.FullName, "test.csv"),
                   zip = Path.Combine(dir.FullName, "model.zip"), adapter = Path.Combine(dir.FullName, "adapter.safetensors");
            WriteToyCsv(train, 48, 1);
            WriteToyCsv(test, 30, 2);
            var (code, _, err) = Quanta("finetune", "--base-model", Dir("llama-tiny-seqcls"), "--train", train, "--text-column", "Sentence",
                "--label-column", "Category", "--axis-layout", "8,4,4", "--epochs", "4", "--batch-size", "8", "--lr", "3e-3",
                "--max-seq-len", "32", "--output", zip, "--export-adapter", adapter);
            Assert.True(code == 0, err);
            Assert.Contains("step 24/24", err);
            Assert.True(File.Exists(zip) && File.Exists(adapter) && File.Exists(Path.ChangeExtension(adapter, ".json")));

            var (code2, stdout, err2) = Quanta("evaluate", "--model", zip, "--data", test);
            Assert.True(code2 == 0, err2);
            var json = JsonDocument.Parse(stdout).RootElement;
            Assert.Equal("classification", json.GetProperty("task").GetString());
            Assert.Equal(30, json.GetProperty("rows").GetDouble());
            Assert.True(json.GetProperty("microAccuracy").GetDouble() >= 0.8, stdout);
        }
        finally { dir.Delete(true); }
    }

    [Fact]
    public void BadArgumentsGiveOneLineErrors()
    {
        var (code, _, err) = Quanta("finetune", "--base-model", "/nonexistent", "--train", "/nonexistent.tsv", "--output", "x.zip");
        Assert.Equal(1, code);
        Assert.Contains("/nonexistent.tsv", err);
        var (code2, _, err2) = Quanta("evaluate", "--model", "/nonexistent.zip", "--data", "/nonexistent.tsv");
        Assert.Equal(1, code2);
        Assert.StartsWith("error:", err2);
    }
}
