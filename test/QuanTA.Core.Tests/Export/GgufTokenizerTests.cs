using System.Text.Json.Nodes;
using QuanTA.Core.Export.Gguf;
using static QuanTA.Core.Tests.Export.GgufExpectations;

namespace QuanTA.Core.Tests.Export;

/// <summary>
/// <c>tokenizer.ggml.*</c> for the tokenizer kinds the project loads (the <c>tok-*</c> fixtures), read back with
/// @huggingface/gguf. The SentencePiece pieces are compared with transformers' own conversion of the same tokenizer.model
/// (the fixture's tokenizer.json).
/// </summary>
public sealed class GgufTokenizerTests : IDisposable
{
    readonly string _tmp = Path.Combine(Path.GetTempPath(), "quanta-ggtok-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_tmp)) Directory.Delete(_tmp, recursive: true);
    }

    static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    /// <summary>Writes a vocabulary-only GGUF (no tensors, like the converter's --vocab-only) and reads its metadata back.</summary>
    JsonObject VocabOnly(string fixture, int vocabSize)
    {
        var path = Path.Combine(_tmp, fixture + ".gguf");
        var kv = new List<KeyValuePair<string, GgufValue>> { new("general.architecture", GgufValue.Str("llama")) };
        kv.AddRange(GgufTokenizerMetadata.Build(Fixture(fixture), vocabSize));
        GgufWriter.Write(path, kv, []);
        return (JsonObject)OutsideGgufReader.Read(path)["metadata"]!;
    }

    static List<string> Strings(JsonObject meta, string key) => ((JsonArray)meta[key]!["value"]!).Select(x => (string)x!).ToList();
    static List<double> Numbers(JsonObject meta, string key) => ((JsonArray)meta[key]!["value"]!).Select(x => (double)x!).ToList();
    static JsonNode? Value(JsonObject meta, string key) => meta[key]?["value"];

    [Fact]
    public void SentencePiece_model_becomes_llama_vocabulary_with_scores_types_and_padding_to_the_model_vocab()
    {
        // tok-sentencepiece (700 pieces) on llama-tiny's weights (vocab_size 1024): ids 700…1023 are padding.
        var dir = Path.Combine(_tmp, "spm-model");
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(Fixture("llama-tiny"), f), Path.Combine(dir, f));
        foreach (var f in Directory.GetFiles(Fixture("tok-sentencepiece"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var path = Path.Combine(_tmp, "spm.gguf");
        GgufConverter.Convert(dir, path, new GgufConversionOptions { FileType = GgufFileType.F32 });
        var meta = (JsonObject)OutsideGgufReader.Read(path)["metadata"]!;

        Assert.Equal("llama", (string)Value(meta, "tokenizer.ggml.model")!);
        Assert.Equal("default", (string)Value(meta, "tokenizer.ggml.pre")!);
        var hfVocab = ((JsonObject)Json(Path.Combine(dir, "tokenizer.json"))["model"]!["vocab"]!).ToDictionary(kv => (int)kv.Value!, kv => kv.Key);
        Assert.Equal(700, hfVocab.Count);
        var tokens = Strings(meta, "tokenizer.ggml.tokens");
        Assert.Equal(Enumerable.Range(0, 1024).Select(i => i < 700 ? hfVocab[i] : $"[PAD{i}]"), tokens);
        var types = Numbers(meta, "tokenizer.ggml.token_type").Select(t => (int)t).ToList();
        Assert.Equal(Enumerable.Range(0, 1024).Select(i => i >= 700 ? 5 : i == 0 ? 2 : i <= 2 ? 3 : tokens[i].StartsWith("<0x") ? 6 : 1), types);
        var scores = Numbers(meta, "tokenizer.ggml.scores");
        Assert.Equal((9, 6), ((int)meta["tokenizer.ggml.scores"]!["type"]!, (int)meta["tokenizer.ggml.scores"]!["subType"]!));
        Assert.All(scores.Skip(700), s => Assert.Equal(-10000, s));
        var normal = Enumerable.Range(0, 700).Where(i => types[i] == 1).Select(i => scores[i]).ToList();
        Assert.True(normal.Zip(normal.Skip(1)).All(p => p.First > p.Second), "sentencepiece BPE scores fall with the piece id");

        Assert.Equal(1, (int)Value(meta, "tokenizer.ggml.bos_token_id")!);
        Assert.Equal(2, (int)Value(meta, "tokenizer.ggml.eos_token_id")!);
        Assert.Equal(0, (int)Value(meta, "tokenizer.ggml.unknown_token_id")!);
        Assert.Equal(1, (int)Value(meta, "tokenizer.ggml.padding_token_id")!);       // config.json's pad_token_id
        Assert.True((bool)Value(meta, "tokenizer.ggml.add_bos_token")!);                 // post-processor: <s> $A
        Assert.Null(meta["tokenizer.ggml.add_eos_token"]);
        Assert.Null(meta["tokenizer.ggml.merges"]);
    }

    [Fact]
    public void Llama3_style_tokenizer_is_gpt2_with_llama_bpe_pre_tokenizer_and_added_token_types()
    {
        var meta = VocabOnly("tok-llama3-style", 1032);
        Assert.Equal(("gpt2", "llama-bpe"), ((string)Value(meta, "tokenizer.ggml.model")!, (string)Value(meta, "tokenizer.ggml.pre")!));
        var tokens = Strings(meta, "tokenizer.ggml.tokens");
        Assert.Equal(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<think>"], tokens.Skip(1028));
        var types = Numbers(meta, "tokenizer.ggml.token_type").Select(t => (int)t).ToList();
        Assert.Equal([3, 3, 3, 4], types.Skip(1028));                                    // <think> is added but not special
        Assert.Equal([3, 3], types.Take(2));
        Assert.Equal(1028, (int)Value(meta, "tokenizer.ggml.bos_token_id")!);
        Assert.Equal(1029, (int)Value(meta, "tokenizer.ggml.eos_token_id")!);
        Assert.True((bool)Value(meta, "tokenizer.ggml.add_bos_token")!);
        var merges = ((JsonArray)Json(Path.Combine(Fixture("tok-llama3-style"), "tokenizer.json"))["model"]!["merges"]!).Select(m => $"{m![0]} {m[1]}");
        Assert.Equal(merges, Strings(meta, "tokenizer.ggml.merges"));
    }

    [Fact]
    public void Qwen2_style_tokenizer_is_gpt2_with_qwen2_pre_tokenizer_and_its_special_tokens()
    {
        var meta = VocabOnly("tok-qwen2-style", 1026);
        Assert.Equal(("gpt2", "qwen2"), ((string)Value(meta, "tokenizer.ggml.model")!, (string)Value(meta, "tokenizer.ggml.pre")!));
        Assert.Equal(["<|im_start|>", "<|im_end|>"], Strings(meta, "tokenizer.ggml.tokens").Skip(1024));
        Assert.Equal(1025, (int)Value(meta, "tokenizer.ggml.eos_token_id")!);
        Assert.Equal(0, (int)Value(meta, "tokenizer.ggml.padding_token_id")!);
        Assert.Null(meta["tokenizer.ggml.bos_token_id"]);
        Assert.Null(meta["tokenizer.ggml.add_bos_token"]);
    }

    [Fact]
    public void SentencePiece_style_tokenizer_json_without_model_file_gets_llama_vocabulary_with_falling_scores()
    {
        var meta = VocabOnly("tok-spm-metaspace-json", 300);
        Assert.Equal("llama", (string)Value(meta, "tokenizer.ggml.model")!);
        var hfVocab = ((JsonObject)Json(Path.Combine(Fixture("tok-spm-metaspace-json"), "tokenizer.json"))["model"]!["vocab"]!).ToDictionary(kv => (int)kv.Value!, kv => kv.Key);
        Assert.Equal(Enumerable.Range(0, 300).Select(i => hfVocab[i]), Strings(meta, "tokenizer.ggml.tokens"));
        Assert.Equal(Enumerable.Range(0, 300).Select(i => -(double)i), Numbers(meta, "tokenizer.ggml.scores"));
        var types = Numbers(meta, "tokenizer.ggml.token_type").Select(t => (int)t).ToList();
        Assert.Equal(Enumerable.Range(0, 300).Select(i => i <= 2 ? 3 : hfVocab[i].StartsWith("<0x") ? 6 : 1), types);
        Assert.Equal((1, 2, 0), ((int)Value(meta, "tokenizer.ggml.bos_token_id")!, (int)Value(meta, "tokenizer.ggml.eos_token_id")!, (int)Value(meta, "tokenizer.ggml.unknown_token_id")!));
    }

    [Fact]
    public void Byte_level_pre_tokenizer_with_prefix_space_is_refused_with_the_reason()
    {
        var e = Assert.Throws<NotSupportedException>(() => GgufTokenizerMetadata.Build(Fixture("tok-gpt2-prefix"), 1024));
        Assert.Contains("add_prefix_space", e.Message);
        Assert.Contains("tokenizer.json", e.Message);
    }
}
