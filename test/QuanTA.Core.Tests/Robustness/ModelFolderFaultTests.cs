using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using QuanTA.Core.Tokenization;
using QuanTA.Tests.Robustness;

namespace QuanTA.Core.Tests.Robustness;

/// <summary>
/// The small files of a Hugging Face model folder (config.json, generation_config.json, tokenizer.json, vocab.json,
/// merges.txt, tokenizer_config.json, tokenizer.model), damaged at random: loading either works or fails with a clear error
/// naming the file, never a hang, a crash or an allocation sized by a damaged field.
/// </summary>
public class ModelFolderFaultTests
{
    static ModelFolderFaultTests() => TorchRuntime.Initialize();

    static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void DamagedConfigJsonGivesAClearError(string fixture)
    {
        using var folder = new FaultFolder(Fixture(fixture), "config.json", "generation_config.json");
        ReaderProperty.Check(FaultFolder.Faults("config.json", "generation_config.json"), c =>
        {
            long size = folder.Damage(c.File, c.Fault);
            return (c.File, size, () => HfModelConfig.Load(folder.Path));
        }, iter: 250);
    }

    [Fact]
    public void AModelFolderWithADamagedConfigLoadsOrFailsClearlyBeforeAllocatingTheDamagedSizes()
    {
        using var folder = new FaultFolder(Fixture("llama-tiny"), "config.json", "model.safetensors");
        ReaderProperty.Check(FaultFolder.Faults("config.json"), c =>
        {
            long size = folder.Damage(c.File, c.Fault);
            return ("config.json", size, () => CausalLM.FromPretrained(folder.Path).Dispose());
        }, iter: 80);
    }

    [Theory]
    [InlineData("llama-tiny", new[] { "tokenizer.json", "tokenizer_config.json" })]
    [InlineData("tok-llama3-style", new[] { "tokenizer.json", "tokenizer_config.json" })]
    [InlineData("tok-spm-metaspace-json", new[] { "tokenizer.json", "tokenizer_config.json" })]
    [InlineData("tok-sentencepiece", new[] { "tokenizer.model", "tokenizer_config.json" })]
    public void DamagedTokenizerFilesGiveAClearError(string fixture, string[] damaged)
    {
        var files = Directory.GetFiles(Fixture(fixture)).Select(Path.GetFileName).Where(f => !f!.StartsWith("reference", StringComparison.Ordinal))
            .Where(f => fixture != "tok-sentencepiece" || f != "tokenizer.json").ToArray();
        using var folder = new FaultFolder(Fixture(fixture), files!);
        ReaderProperty.Check(FaultFolder.Faults(damaged), c =>
        {
            long size = folder.Damage(c.File, c.Fault);
            return (c.File, size, () => Use(HfTokenizer.FromPretrained(folder.Path)));
        }, iter: 120);
    }

    [Fact]
    public void DamagedVocabAndMergesGiveAClearError()
    {
        using var folder = new FaultFolder(Fixture("llama-tiny"), "vocab.json", "merges.txt", "tokenizer_config.json");
        ReaderProperty.Check(FaultFolder.Faults("vocab.json", "merges.txt"), c =>
        {
            long size = folder.Damage(c.File, c.Fault);
            return (c.File, size, () => Use(HfTokenizer.FromPretrained(folder.Path)));
        }, iter: 150);
    }

    /// <summary>A loaded tokenizer must also work: encode and decode a few strings.</summary>
    static void Use(HfTokenizer tok)
    {
        foreach (var text in new[] { "Hello world, 123!", "  tabs\tand\nnewlines  ", "émoji 🙂 and ünïcode" })
            _ = tok.Decode(tok.Encode(text));
    }
}
