using System.Runtime.InteropServices;
using QuanTA.Core.Training;
using Xunit.Abstractions;

namespace QuanTA.Cli.Tests;

/// <summary>Issue 17 item 7: an out-of-memory training step (simulated) reaches the user of <c>quanta finetune</c> with the
/// flags to change.</summary>
[Collection("console")]
public sealed class OutOfMemoryCliTests(ITestOutputHelper log) : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quanta-cli-oom");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    public void SimulatedOutOfMemoryInFinetuneNamesTheFlagsToChange()
    {
        var train = Path.Combine(_dir.FullName, "train.csv");
        FineTuneEvaluateCliTests.WriteToyCsv(train, 24, 1);
        var output = Path.Combine(_dir.FullName, "model.zip");
        TrainingFaults.BeforeMicroBatch = step => { if (step == 2) throw new ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB"); };
        (int Code, string Out, string Err) r;
        try
        {
            r = QuantaProcess.Run(["finetune", "--base-model", QuantaProcess.Dir("llama-tiny-seqcls"), "--train", train,
                "--text-column", "Sentence", "--label-column", "Category", "--axis-layout", "8,4,4", "--epochs", "1", "--batch-size", "8",
                "--max-seq-len", "32", "--output", output]);
        }
        finally { TrainingFaults.BeforeMicroBatch = null; }
        log.WriteLine(r.Err);
        Assert.Equal(1, r.Code);
        Assert.Contains("error: Out of memory on the device during optimizer step 2 (batch size 8, gradient accumulation 1)", r.Err);
        Assert.Contains("Lower the batch size (e.g. 4) and raise gradient accumulation (e.g. 2)", r.Err);
        Assert.Contains("--batch-size, now 8", r.Err);
        Assert.Contains("--grad-accum, now 1", r.Err);
        Assert.Contains("--max-seq-len, now 32", r.Err);
        Assert.Contains("--training-path layerwise", r.Err);
        Assert.False(File.Exists(output));
    }
}
