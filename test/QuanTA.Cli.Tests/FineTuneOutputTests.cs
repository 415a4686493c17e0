using System.Diagnostics;

namespace QuanTA.Cli.Tests;

/// <summary><c>quanta finetune</c> checks that it can write its outputs before it trains (a run is never lost at the end).</summary>
[Collection("console")]
public sealed class FineTuneOutputTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quanta-cli-out");

    public void Dispose() => _dir.Delete(recursive: true);

    (int Code, string Err, TimeSpan Elapsed) FineTune(string output, params string[] extra)
    {
        var train = Path.Combine(_dir.FullName, "train.csv");
        FineTuneEvaluateCliTests.WriteToyCsv(train, 24, 1);
        var clock = Stopwatch.StartNew();
        var (code, _, err) = QuantaProcess.Run(["finetune", "--base-model", QuantaProcess.Dir("llama-tiny-seqcls"), "--train", train,
            "--text-column", "Sentence", "--label-column", "Category", "--axis-layout", "8,4,4", "--epochs", "3", "--batch-size", "8",
            "--max-seq-len", "32", "--output", output, .. extra]);
        return (code, err, clock.Elapsed);
    }

    public static TheoryData<string, string> UnwritableOutputs => new()
    {
        { "under-a-file", "is a file, not a folder" },       // the --output folder is a regular file (refused even for root)
        { "missing-folder", "does not exist" },
        { "a-folder", "is a folder" },
    };

    [Theory]
    [MemberData(nameof(UnwritableOutputs))]
    public void AnUnwritableOutputFailsBeforeTraining(string kind, string reason)
    {
        var file = Path.Combine(_dir.FullName, "a-file");
        File.WriteAllText(file, "not a folder");
        var output = kind switch
        {
            "under-a-file" => Path.Combine(file, "model.zip"),
            "missing-folder" => Path.Combine(_dir.FullName, "no", "such", "model.zip"),
            _ => Directory.CreateDirectory(Path.Combine(_dir.FullName, "model.zip")).FullName,
        };
        var (code, err, elapsed) = FineTune(output);
        Assert.Equal(1, code);
        Assert.StartsWith("error: --output", err);
        Assert.Contains(reason, err);
        Assert.DoesNotContain("step ", err);                    // no training log: the check ran first
        Assert.True(elapsed < TimeSpan.FromSeconds(5), $"took {elapsed}");
    }

    [Fact]
    public void AnUnwritableExportAdapterPathFailsBeforeTraining()
    {
        var file = Path.Combine(_dir.FullName, "a-file");
        File.WriteAllText(file, "not a folder");
        var (code, err, _) = FineTune(Path.Combine(_dir.FullName, "model.zip"), "--export-adapter", Path.Combine(file, "adapter.safetensors"));
        Assert.Equal(1, code);
        Assert.StartsWith("error: --export-adapter", err);
        Assert.DoesNotContain("step ", err);
        Assert.False(File.Exists(Path.Combine(_dir.FullName, "model.zip")));
        Assert.Empty(Directory.GetFiles(_dir.FullName, "*.quanta-tmp", SearchOption.AllDirectories));
    }
}
