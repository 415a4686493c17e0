using System.Globalization;
using Microsoft.ML;

namespace QuanTA.Cli.Tests;

/// <summary>
/// Issue 17 item 3: errors name what the user can change — the data file's columns and the flag that selects them, the CLI
/// flag (not the library property) of a bad option, and a damaged or foreign model .zip with its path and size.
/// </summary>
[Collection("console")]
public sealed class ActionableErrorTests(ToyClassifierFixture toy) : IClassFixture<ToyClassifierFixture>, IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quanta-errors");

    public void Dispose() => _dir.Delete(recursive: true);

    string Write(string name, params string[] lines)
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    static readonly string[] GoodRows = ["a green apple\tfruit", "the river bank\twater", "an apple pie\tfruit", "river water\twater"];

    (int Code, string Out, string Err) FineTune(string train, params string[] extra) => QuantaProcess.Run(
        ["finetune", "--base-model", QuantaProcess.Dir("llama-tiny-seqcls"), "--train", train, "--axis-layout", "8,4,4",
         .. extra.Contains("--epochs") ? Array.Empty<string>() : ["--epochs", "1"],
         "--batch-size", "4", "--max-seq-len", "16", "--output", Path.Combine(_dir.FullName, "model.zip"), .. extra]);

    [Fact]
    public void OtherColumnNamesListTheFilesColumnsAndTheFlags()
    {
        var train = Write("other.tsv", ["sentence\tcategory", .. GoodRows]);
        var (code, _, err) = FineTune(train);
        Assert.Equal(1, code);
        Assert.Contains($"--train '{train}'", err);
        Assert.Contains("'sentence', 'category'", err);
        Assert.Contains("--text-column", err);
        Assert.Contains("--label-column", err);
        Assert.DoesNotContain("inputSchema", err);
        Assert.False(File.Exists(Path.Combine(_dir.FullName, "model.zip")));
    }

    [Fact]
    public void ALayoutThatCannotCoverATargetNamesTheFlagsNotTheProperties()
    {
        // --axis-layout 8,4,4 covers the 128-wide attention projections, not the 128→384 MLP ones all-linear adds
        var train = Write("good.tsv", ["Text\tLabel", .. GoodRows]);
        var (code, _, err) = FineTune(train, "--target-modules", "all-linear");
        Assert.Equal(1, code);
        Assert.Contains("--target-modules / --axis-layout", err);
        Assert.Contains("smaller than the layer", err);
        Assert.Contains("Leave --axis-layout unset", err);
        Assert.DoesNotContain("QuanTAFineTuneOptions", err);
        Assert.False(File.Exists(Path.Combine(_dir.FullName, "model.zip")));
    }

    [Fact]
    public void OneWrongColumnNamesOnlyItsFlag()
    {
        var train = Write("label-only.tsv", ["Text\tcategory", .. GoodRows]);
        var (code, _, err) = FineTune(train);
        Assert.Equal(1, code);
        Assert.Contains("no label column 'Label' (set by --label-column)", err);
        Assert.Contains("'Text', 'category'", err);
        Assert.DoesNotContain("--text-column", err);
    }

    [Fact]
    public void TsvWithoutHeaderSaysTheFirstLineIsReadAsTheHeader()
    {
        var train = Write("no-header.tsv", GoodRows);
        var (code, _, err) = FineTune(train);
        Assert.Equal(1, code);
        Assert.Contains("'a green apple', 'fruit'", err);
        Assert.Contains("header row", err);
        Assert.Contains("--text-column", err);
        Assert.Contains("--label-column", err);
    }

    [Fact]
    public void HeaderOnlyTsvSaysTheFileHasNoRows()
    {
        var train = Write("header-only.tsv", "Text\tLabel");
        var (code, _, err) = FineTune(train);
        Assert.Equal(1, code);
        Assert.Contains($"--train '{train}' has no data rows", err);
        Assert.DoesNotContain("the label column has 1", err);
    }

    [Fact]
    public void OneClassTrainingDataNamesTheFileTheClassAndTheFlag()
    {
        var train = Write("one-class.tsv", "Text\tLabel", "a green apple\tfruit", "an apple pie\tfruit");
        var (code, _, err) = FineTune(train);
        Assert.Equal(1, code);
        Assert.Contains($"--train '{train}' has one class ('fruit')", err);
        Assert.Contains("--label-column", err);
    }

    [Fact]
    public void OptionErrorsNameTheCliFlag()
    {
        var train = Write("good.tsv", ["Text\tLabel", .. GoodRows]);
        var (code, _, err) = FineTune(train, "--epochs", "0");
        Assert.Equal(1, code);
        Assert.StartsWith("error: --epochs must be positive (got 0)", err);
        Assert.DoesNotContain("QuanTAFineTuneOptions", err);

        (code, _, err) = FineTune(train, "--lora-rank", "0", "--adapter", "lora");
        Assert.Equal(1, code);
        Assert.StartsWith("error: --lora-rank must be positive", err);
    }

    [Fact]
    public void ValidationRowsWithUnseenLabelsAreCountedNamedAndLeftOutOfValidation()
    {
        var train = Write("good.tsv", ["Text\tLabel", .. GoodRows]);
        var validation = Write("valid-mixed.tsv", "Text\tLabel", "a ripe apple\tfruit", "a red car\tvehicle", "a blue truck\tvehicle", "sea water\t");
        var (code, _, err) = FineTune(train, "--validation", validation);
        Assert.True(code == 0, err);
        Assert.Contains($"warning: --validation '{validation}': 3 of 4 rows have labels never seen in the training data ((empty), 'vehicle'; " +
            "--train has 'fruit', 'water')", err);
        Assert.Matches(@"validation loss [0-9]", err);                                // the known row was validated
        Assert.True(File.Exists(Path.Combine(_dir.FullName, "model.zip")));
    }

    [Fact]
    public void AValidationSetWithoutAnyKnownLabelFailsBeforeTraining()
    {
        var train = Write("good.tsv", ["Text\tLabel", .. GoodRows]);
        var validation = Write("valid-unseen.tsv", "Text\tLabel", "a red car\tvehicle", "a blue boat\tboat");
        var (code, _, err) = FineTune(train, "--validation", validation);
        Assert.Equal(1, code);
        Assert.StartsWith($"error: --validation '{validation}': none of its 2 rows has a known label", err);
        Assert.Contains("'boat', 'vehicle'", err);
        Assert.Contains("--label-column", err);
        Assert.DoesNotContain("epoch 1 step", err);                                   // nothing was trained
        Assert.False(File.Exists(Path.Combine(_dir.FullName, "model.zip")));
    }

    [Theory]
    [InlineData("evaluate", "cuda:x")]
    [InlineData("evaluate", "gpu")]
    [InlineData("generate", "cuda:1x")]
    [InlineData("generate", "tpu")]
    public void ABadDeviceNamesTheDeviceFlag(string verb, string device)
    {
        string[] args = verb == "evaluate"
            ? ["evaluate", "--model", Path.Combine(_dir.FullName, "model.zip"), "--data", Path.Combine(_dir.FullName, "test.tsv"), "--device", device]
            : ["generate", "--model", QuantaProcess.Dir("llama-tiny"), "--prompt", "hello", "--device", device];
        var (code, stdout, err) = QuantaProcess.Run(args);
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Equal($"error: --device '{device}' is not cpu, cuda or cuda:N.", err.TrimEnd());
    }

    [Fact]
    public void TargetModulesRegexPrefixOfTheHelpIsAccepted()
    {
        var (_, help, _) = QuantaProcess.Run("finetune", "--help");
        Assert.Contains("regex:<pattern>", help);
        Assert.Contains("re:<pattern>", help);
        var train = Write("good.tsv", ["Text\tLabel", .. GoodRows]);
        foreach (var prefix in new[] { "re:", "regex:" })
        {
            var (code, _, err) = FineTune(train, "--target-modules", prefix + @".*\.(q_proj|v_proj)");
            Assert.True(code == 0, prefix + ": " + err);
        }
    }

    string Damaged(string name, Func<byte[], byte[]> damage)
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllBytes(path, damage(File.ReadAllBytes(toy.Model)));
        return path;
    }

    static byte[] FlipMiddle(byte[] b)
    {
        for (int i = b.Length / 3; i < b.Length / 3 + 64; i++) b[i] ^= 0xFF;
        return b;
    }

    public static TheoryData<string> Damages => ["flipped", "truncated", "foreign", "other-mlnet"];

    string DamagedModel(string kind) => kind switch
    {
        "flipped" => Damaged("flipped.zip", FlipMiddle),
        "truncated" => Damaged("truncated.zip", b => b[..(b.Length / 2)]),
        "other-mlnet" => OtherMlNetModel(),
        _ => Write("foreign.zip", "this is not a zip archive"),
    };

    /// <summary>A valid ML.NET model .zip without a QuanTA step.</summary>
    string OtherMlNetModel()
    {
        var path = Path.Combine(_dir.FullName, "other-mlnet.zip");
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(new[] { new TextOnly { Text = "hello" } });
        ml.Model.Save(ml.Transforms.CopyColumns("Copy", "Text").Fit(data), data.Schema, path);
        return path;
    }

    sealed class TextOnly { public string Text { get; set; } = ""; }

    static void AssertCorrupt(string path, int code, string err)
    {
        Assert.Equal(1, code);
        Assert.True(err.Contains("corrupt or not a QuanTA model", StringComparison.Ordinal) || err.Contains("is not a QuanTA model", StringComparison.Ordinal), err);
        Assert.Contains(path, err);
        Assert.Contains($"({new FileInfo(path).Length.ToString(CultureInfo.InvariantCulture)} bytes)", err);
    }

    [Theory]
    [MemberData(nameof(Damages))]
    public void EvaluateOnADamagedModelSaysCorruptWithPathAndSize(string kind)
    {
        var path = DamagedModel(kind);
        var data = toy.TestSet($"eval-{kind}.csv", ("a green apple", "fruit"), ("the river bank", "water"));
        var (code, stdout, err) = QuantaProcess.Run("evaluate", "--model", path, "--data", data);
        Assert.Equal("", stdout);
        AssertCorrupt(path, code, err);
    }

    [Theory]
    [MemberData(nameof(Damages))]
    public void GenerateOnADamagedModelSaysCorruptWithPathAndSize(string kind)
    {
        var path = DamagedModel(kind);
        var (code, _, err) = QuantaProcess.Run("generate", "--model", path, "--prompt", "hello", "--max-new-tokens", "2");
        AssertCorrupt(path, code, err);
    }
}
