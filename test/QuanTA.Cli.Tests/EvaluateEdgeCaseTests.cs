using System.Text.Json;

namespace QuanTA.Cli.Tests;

/// <summary>One small classifier (fruit / water / sound) trained once by <c>quanta finetune</c> for the evaluate edge cases.</summary>
public sealed class ToyClassifierFixture : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quanta-eval-edge");

    /// <summary>The trained model .zip.</summary>
    public string Model { get; }

    public ToyClassifierFixture()
    {
        string train = Path.Combine(_dir.FullName, "train.csv");
        Model = Path.Combine(_dir.FullName, "model.zip");
        FineTuneEvaluateCliTests.WriteToyCsv(train, 24, 1);
        var (code, _, err) = QuantaProcess.Run("finetune", "--base-model", QuantaProcess.Dir("llama-tiny-seqcls"), "--train", train,
            "--text-column", "Sentence", "--label-column", "Category", "--axis-layout", "8,4,4", "--epochs", "1", "--batch-size", "8",
            "--max-seq-len", "32", "--output", Model);
        if (code != 0) throw new InvalidOperationException("finetune failed: " + err);
    }

    /// <summary>Writes a CSV test set (header Sentence,Category) with these rows into the fixture's folder.</summary>
    public string TestSet(string name, params (string Sentence, string Label)[] rows)
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllLines(path, ["Sentence,Category", .. rows.Select(r => $"{r.Sentence},{r.Label}")]);
        return path;
    }

    public void Dispose() => _dir.Delete(recursive: true);
}

/// <summary><c>quanta evaluate</c> on awkward test sets: unseen labels, one class, no rows.</summary>
[Collection("console")]
public class EvaluateEdgeCaseTests(ToyClassifierFixture model) : IClassFixture<ToyClassifierFixture>
{
    static readonly (string, string)[] Known = [("a green apple", "fruit"), ("the river bank", "water"), ("quiet music", "sound"),
                                                ("apple table", "fruit"), ("river stone", "water"), ("music light", "sound")];

    (int Code, string Out, string Err) Evaluate(string data, params string[] extra)
        => QuantaProcess.Run(["evaluate", "--model", model.Model, "--data", data, .. extra]);

    [Fact]
    public void RowsWithUnseenLabelsAreCountedAndNamedOnStderr()
    {
        var data = model.TestSet("one-unseen.csv", [.. Known, ("a granite rock", "mineral")]);
        var (code, stdout, err) = Evaluate(data);
        Assert.True(code == 0, err);
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(1, json.GetProperty("unseenLabelRows").GetInt64());
        Assert.Equal("mineral", json.GetProperty("unseenLabels")[0].GetString());
        Assert.Equal(6, json.GetProperty("rows").GetDouble());
        Assert.Equal(7, json.GetProperty("dataRows").GetInt64());
        Assert.Contains("warning: 1 of 7 rows", err);
        Assert.Contains("'mineral'", err);
        Assert.Contains("--fail-on-unseen-labels", err);
    }

    [Fact]
    public void FailOnUnseenLabelsMakesThemAnError()
    {
        var data = model.TestSet("unseen-fail.csv", [.. Known, ("a granite rock", "mineral"), ("", "")]);
        var (code, stdout, err) = Evaluate(data, "--fail-on-unseen-labels");
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error: 2 of 8 rows", err);
        Assert.Contains("(empty), 'mineral'", err);
        Assert.Contains("--fail-on-unseen-labels", err);
    }

    [Fact]
    public void EveryRowUnseenIsAClearError()
    {
        var data = model.TestSet("all-unseen.csv", ("a granite rock", "mineral"), ("an old oak", "tree"));
        var (code, stdout, err) = Evaluate(data);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Contains("every row (2) has a label never seen in training ('mineral', 'tree')", err);
        Assert.Contains("'fruit'", err);                       // the labels the model knows
        Assert.DoesNotContain("infinity", err, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void AHeaderOnlyFileIsAClearError()
    {
        var data = model.TestSet("header-only.csv");
        var (code, _, err) = Evaluate(data);
        Assert.Equal(1, code);
        Assert.Contains("--data", err);
        Assert.Contains("no data rows", err);
    }

    [Fact]
    public void ASingleClassTestSetEvaluatesWithUndefinedMetricsAsNullAndAReason()
    {
        var data = model.TestSet("one-class.csv", ("a green apple", "fruit"), ("apple table", "fruit"), ("quiet apple", "fruit"));
        var (code, stdout, err) = Evaluate(data);
        Assert.True(code == 0, err);
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(3, json.GetProperty("rows").GetDouble());
        Assert.InRange(json.GetProperty("microAccuracy").GetDouble(), 0, 1);
        Assert.Equal(JsonValueKind.Null, json.GetProperty("logLossReduction").ValueKind);
        var notes = json.GetProperty("notes");
        Assert.Contains("one class", notes.GetProperty("logLossReduction").GetString());
        Assert.Contains("'fruit'", notes.GetProperty("singleClass").GetString());
        Assert.Equal("fruit", Assert.Single(json.GetProperty("classesInTestSet").EnumerateArray()).GetString());
        Assert.Equal(0, json.GetProperty("unseenLabelRows").GetInt64());
        var perClass = json.GetProperty("perClassLogLoss");                    // classes fruit, water, sound (training order)
        Assert.Equal(JsonValueKind.Number, perClass[0].ValueKind);
        Assert.Equal(JsonValueKind.Null, perClass[1].ValueKind);              // ML.NET reports 0 for a class with no rows
        Assert.Contains("'water': the class has no rows in the test set", notes.GetProperty("perClassLogLoss").GetString());
    }
}
