using Microsoft.ML.Tokenizers;
using QuanTA.Core.Data;

namespace QuanTA.Core.Tests.Data;

/// <summary>The byte-level BPE tokenizer trained by tools/wordnet/train_bpe.py loads with Microsoft.ML.Tokenizers.</summary>
public class WordNetTokenizerTests
{
    static CodeGenTokenizer Load()
    {
        var dir = EmbeddedDefaults.BaseModelDirectory();
        using var vocab = File.OpenRead(Path.Combine(dir, "vocab.json"));
        using var merges = File.OpenRead(Path.Combine(dir, "merges.txt"));
        return CodeGenTokenizer.Create(vocab, merges, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
    }

    [Theory]
    // ids printed by the trainer's own encoder (train_bpe.bpe: merges applied in rank order)
    [InlineData("dog: a member of the genus Canis (probably descended from the common wolf)",
        new[] { 69, 410, 27, 260, 1281, 274, 283, 434, 2244, 282, 351, 711, 67, 1750, 750, 68, 1343, 411, 283, 1132, 285, 2603, 10 })]
    [InlineData("Sierra Leone: a republic in West Africa; achieved independence in 1961",
        new[] { 52, 1033, 323, 1987, 429, 27, 260, 3840, 286, 2628, 1654, 28, 2805, 1127, 2616, 511, 286, 963, 23, 18 })]
    // (no runs of spaces: CodeGenTokenizer maps those to CodeGen's own extra ids; WordNet text has none)
    [InlineData("tumble-dryer's spin\tzzqx 'll 42!",
        new[] { 85, 336, 991, 14, 69, 454, 262, 475, 428, 258, 199, 2943, 82, 89, 222, 8, 654, 2650, 19, 2 })]
    public void EncodesLikeTheTrainer(string text, int[] expected)
    {
        var tok = Load();
        Assert.Equal(expected, tok.EncodeToIds(text));
        Assert.Equal(text, tok.Decode(expected));
    }

    [Theory]
    // the project's own tokenizer reads tokenizer.json; it also matches the trainer on runs of spaces ("Ġ" + "Ġspin")
    [InlineData("tumble-dryer's  spin\tzzqx", new[] { 85, 336, 991, 14, 69, 454, 262, 475, 222, 428, 258, 199, 2943, 82, 89 })]
    [InlineData("dog: a member of the genus Canis (probably descended from the common wolf)",
        new[] { 69, 410, 27, 260, 1281, 274, 283, 434, 2244, 282, 351, 711, 67, 1750, 750, 68, 1343, 411, 283, 1132, 285, 2603, 10 })]
    public void HfTokenizerReadsTokenizerJsonLikeTheTrainer(string text, int[] expected)
    {
        var tok = QuanTA.Core.Tokenization.HfTokenizer.FromPretrained(EmbeddedDefaults.BaseModelDirectory());
        Assert.Equal(expected, tok.Encode(text, addSpecialTokens: false));
        Assert.Equal(text, tok.Decode(expected));
        Assert.Equal(0, tok.BosId);
        Assert.Equal(0, tok.EosId);
        Assert.Equal(1, tok.PadId);
        Assert.Equal(4096, tok.VocabSize);
    }

    [Fact]
    public void VocabularyAndSpecialTokens()
    {
        var tok = Load();
        Assert.Equal(4096, tok.Vocabulary.Count);
        Assert.Equal(0, tok.Vocabulary["<|endoftext|>"]);
        Assert.Equal(1, tok.Vocabulary["<|pad|>"]);
        Assert.Equal(4095, tok.Vocabulary.Values.Max());
    }

    [Fact]
    public void RoundTripsValidationTextCompactly()
    {
        var tok = Load();
        long words = 0, tokens = 0;
        foreach (var row in WordNetData.LoadLexnames(WordNetSplit.Validation))
        {
            var ids = tok.EncodeToIds(row.Text);
            Assert.Equal(row.Text, tok.Decode(ids));
            tokens += ids.Count;
            words += row.Text.Split(' ').Length;
        }
        // a 4k-token BPE on in-domain English text: well under 2 tokens per word (bytes would be ~6)
        Assert.InRange((double)tokens / words, 1.0, 2.0);
    }
}
