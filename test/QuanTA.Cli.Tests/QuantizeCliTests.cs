using QuanTA.MLNet;

namespace QuanTA.Cli.Tests;

/// <summary><c>quanta finetune --quantize</c>: an NF4 base trains, saves and generates; a bad value names the flag.</summary>
public class QuantizeCliTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), "quanta-quantize-" + Guid.NewGuid().ToString("N")[..8]);
    public QuantizeCliTests() => Directory.CreateDirectory(_dir);
    public void Dispose() => Directory.Delete(_dir, recursive: true);
    string PathOf(string name) => Path.Combine(_dir, name);

    [Fact]
    public void FineTuneOnAnNF4BaseThenGenerateFromTheZip()
    {
        File.WriteAllLines(PathOf("train.tsv"), ["Text\tTarget", .. Enumerable.Range(0, 8).Select(i => $"word {i}:\t thing {i % 2}")]);
        var (code, _, err) = QuantaProcess.Run("finetune", "--task", "generation", "--base-model", QuantaProcess.Dir("llama-tiny"),
            "--train", PathOf("train.tsv"), "--output", PathOf("model.zip"), "--quantize", "nf4",
            "--axis-layout", "8,4,4", "--epochs", "1", "--batch-size", "4", "--max-seq-len", "16");
        Assert.True(code == 0, err);
        var ml = new Microsoft.ML.MLContext().RegisterQuanTA();
        using (var loaded = (QuanTA.MLNet.QuanTAFineTuneTransformer)ml.Model.Load(PathOf("model.zip"), out _))
            Assert.Equal(QuanTA.Core.Quantization.BaseQuantization.NF4, loaded.Options.BaseQuantization);
        (code, var stdout, err) = QuantaProcess.Run("generate", "--model", PathOf("model.zip"), "--prompt", "word 3:", "--max-new-tokens", "3");
        Assert.True(code == 0, err);
        Assert.NotEmpty(stdout);
    }

    [Fact]
    public void AnUnknownQuantizationNamesTheFlag()
    {
        File.WriteAllLines(PathOf("train.tsv"), ["Text\tTarget", "a\tb"]);
        var (code, _, err) = QuantaProcess.Run("finetune", "--task", "generation", "--base-model", QuantaProcess.Dir("llama-tiny"),
            "--train", PathOf("train.tsv"), "--output", PathOf("model.zip"), "--quantize", "fp4");
        Assert.NotEqual(0, code);
        Assert.Contains("--quantize 'fp4' is not none, int8 or nf4", err);
        Assert.False(File.Exists(PathOf("model.zip")));
    }
}
