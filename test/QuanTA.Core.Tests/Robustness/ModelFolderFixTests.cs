using System.Text.Json.Nodes;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using QuanTA.Core.Tokenization;
using QuanTA.Tests.Robustness;

namespace QuanTA.Core.Tests.Robustness;

/// <summary>
/// One test per reader fix found by <see cref="ModelFolderFaultTests"/>: each bad input below used to escape as a raw
/// exception from deep inside (JsonReaderException, DivideByZeroException, NullReferenceException, libtorch's
/// ExternalException, InvalidOperationException, KeyNotFoundException, InvalidProtocolBufferException) or a message without
/// the file; now it is a clear error naming the file.
/// </summary>
public class ModelFolderFixTests
{
    static ModelFolderFixTests() => TorchRuntime.Initialize();

    static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    /// <summary>A temp copy of <paramref name="fixture"/> with <paramref name="file"/> edited; returns the folder.</summary>
    static FaultFolder Edited(string fixture, string file, Func<string, string> edit, params string[] files)
    {
        var folder = new FaultFolder(Fixture(fixture), files);
        var path = Path.Combine(folder.Path, file);
        File.WriteAllText(path, edit(File.ReadAllText(path)));
        return folder;
    }

    static string SetJson(string json, string key, JsonNode? value)
    {
        var o = JsonNode.Parse(json)!.AsObject();
        if (key == "rope_theta") o.Remove("rope_parameters");   // the fixture's 5.x layout would win over a top-level rope_theta
        o[key] = value;
        return o.ToJsonString();
    }

    static void AssertClear<T>(Exception? e, string fileName) where T : Exception
    {
        Assert.NotNull(e);
        Assert.IsAssignableFrom<T>(e);
        ReaderProperty.AssertClear(e!, fileName);
    }

    [Fact]
    public void ATruncatedConfigJsonNamesTheFile()
    {
        using var f = Edited("llama-tiny", "config.json", s => s[..(s.Length / 2)], "config.json");
        AssertClear<FormatException>(Record.Exception(() => HfModelConfig.Load(f.Path)), "config.json");
    }

    [Fact]
    public void ABrokenGenerationConfigNamesTheFile()
    {
        using var f = Edited("llama-tiny", "generation_config.json", s => s + "}", "config.json", "generation_config.json");
        AssertClear<FormatException>(Record.Exception(() => HfModelConfig.Load(f.Path)), "generation_config.json");
    }

    [Theory]
    [InlineData("hidden_size", "1e20")]                 // was cast to int.MinValue silently
    [InlineData("num_key_value_heads", "0")]            // was DivideByZeroException
    [InlineData("num_attention_heads", "-4")]
    [InlineData("eos_token_id", "[null]")]              // was NullReferenceException
    [InlineData("eos_token_id", "[\"2\"]")]             // was InvalidOperationException
    [InlineData("rms_norm_eps", "1e308")]
    [InlineData("rope_theta", "-1")]
    public void ABadNumberInConfigJsonIsAFormatErrorNamingTheKey(string key, string value)
    {
        var json = SetJson(File.ReadAllText(Path.Combine(Fixture("llama-tiny"), "config.json")), key, JsonNode.Parse(value));
        var e = Record.Exception(() => HfModelConfig.Parse(json, "my/config.json"));
        AssertClear<FormatException>(e, "my/config.json");
        Assert.Contains(key, e!.Message);
    }

    [Fact]
    public void ARopeThetaBeyondFloatRangeNoLongerReachesLibtorch()
    {
        using var f = Edited("llama-tiny", "config.json", s => SetJson(s, "rope_theta", 1e308), "config.json", "model.safetensors");
        AssertClear<FormatException>(Record.Exception(() => CausalLM.FromPretrained(f.Path).Dispose()), "config.json");
    }

    [Theory]
    [InlineData("vocab_size", 2_000_000_000)]           // a 512 GB embedding: was libtorch's allocation error
    [InlineData("num_hidden_layers", 100_000)]
    [InlineData("intermediate_size", 1_000_000_000)]
    public void AConfigFarLargerThanItsWeightsIsRefusedBeforeTheModelIsAllocated(string key, int value)
    {
        using var f = Edited("llama-tiny", "config.json", s => SetJson(s, key, value), "config.json", "model.safetensors");
        var outcome = ReaderProperty.RunBounded(() => CausalLM.FromPretrained(f.Path).Dispose());
        Assert.True(outcome.Finished);
        AssertClear<InvalidDataException>(outcome.Error, "config.json");
        Assert.Contains(key, outcome.Error!.Message);
    }

    [Theory]
    [InlineData("model", null)]                                          // was KeyNotFoundException
    [InlineData("vocab", "{\"a\": \"not an id\"}")]                      // was InvalidOperationException
    [InlineData("vocab", "{\"a\": 1e20}")]                               // was FormatException without the file
    [InlineData("merges", "[\"zz_unknown qq_unknown\"]")]                // was Microsoft.ML.Tokenizers' InvalidOperationException
    [InlineData("merges", "[\"nospace\"]")]                              // was "Bad merge entry" without the file
    [InlineData("merges", "[[null, null]]")]
    public void ABadTokenizerJsonFieldNamesTheFile(string key, string? value)
    {
        using var f = Edited("llama-tiny", "tokenizer.json", s =>
        {
            var o = JsonNode.Parse(s)!.AsObject();
            if (key == "model") o.Remove("model");
            else o["model"]![key] = JsonNode.Parse(value!);
            return o.ToJsonString();
        }, "tokenizer.json", "tokenizer_config.json", "config.json");
        AssertClear<InvalidDataException>(Record.Exception(() => HfTokenizer.FromPretrained(f.Path)), "tokenizer.json");
    }

    [Theory]
    [InlineData("vocab")]
    [InlineData("added_tokens")]
    public void ANegativeTokenIdInTokenizerJsonIsRefused(string where)
    {
        // Before: loaded; Encode/Decode then threw ArgumentOutOfRangeException "Token ids must be non-negative" (found by the property).
        using var f = Edited("llama-tiny", "tokenizer.json", s =>
        {
            var o = JsonNode.Parse(s)!.AsObject();
            if (where == "vocab")
            {
                var vocab = o["model"]!["vocab"]!.AsObject();
                vocab[vocab.First().Key] = -1;
            }
            else o["added_tokens"]!.AsArray()[0]!["id"] = -1;
            return o.ToJsonString();
        }, "tokenizer.json", "tokenizer_config.json", "config.json");
        var e = Record.Exception(() => HfTokenizer.FromPretrained(f.Path));
        AssertClear<InvalidDataException>(e, "tokenizer.json");
        Assert.Contains("non-negative", e!.Message);
    }

    [Theory]
    [InlineData("added_tokens_decoder", "{\"abc\": {\"content\": \"<x>\"}}")]   // was int.Parse's FormatException
    [InlineData("added_tokens_decoder", "{\"5\": {\"special\": true}}")]       // was KeyNotFoundException
    public void ABadTokenizerConfigFieldNamesTheFile(string key, string value)
    {
        using var f = Edited("llama-tiny", "tokenizer_config.json", s => SetJson(s, key, JsonNode.Parse(value)),
            "tokenizer.json", "tokenizer_config.json");
        AssertClear<InvalidDataException>(Record.Exception(() => HfTokenizer.FromPretrained(f.Path)), "tokenizer_config.json");
    }

    [Fact]
    public void ATruncatedSentencePieceModelNamesTheFile()
    {
        using var f = new FaultFolder(Fixture("tok-sentencepiece"), "tokenizer.model", "tokenizer_config.json");
        var path = Path.Combine(f.Path, "tokenizer.model");
        File.WriteAllBytes(path, File.ReadAllBytes(path)[..100]);
        AssertClear<NotSupportedException>(Record.Exception(() => HfTokenizer.FromPretrained(f.Path)), "tokenizer.model");   // was InvalidProtocolBufferException
    }

    [Theory]
    [InlineData("null")]                                  // was InvalidDataException("empty")
    [InlineData("{\"a\": 0, \"b\": 1}")]                  // merges of tokens it lacks: was InvalidOperationException
    public void ABadVocabJsonNamesTheFile(string vocab)
    {
        using var f = new FaultFolder(Fixture("llama-tiny"), "vocab.json", "merges.txt", "tokenizer_config.json");
        File.WriteAllText(Path.Combine(f.Path, "vocab.json"), vocab);
        AssertClear<InvalidDataException>(Record.Exception(() => HfTokenizer.FromPretrained(f.Path)), "vocab.json");
    }
}
