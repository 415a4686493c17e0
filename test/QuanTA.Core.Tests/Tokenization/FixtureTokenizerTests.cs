using QuanTA.Core.Tokenization;

namespace QuanTA.Core.Tests.Tokenization;

/// <summary>
/// Parity with the Hugging Face tokenizer that made the fixtures (make_fixtures.py: <c>fast(prompts, padding=True)</c>,
/// right padding; greedy output decoded with <c>fast.decode</c>).
/// </summary>
public class FixtureTokenizerTests
{
    public static TheoryData<string> Fixtures => new() { "llama-tiny", "qwen2-tiny", "llama-tiny-seqcls" };

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void BatchReproducesReferenceInputIdsAndMask(string fixture)
    {
        var tok = HfTokenizer.FromPretrained(FixtureFolder.Dir(fixture));
        var expectedIds = FixtureFolder.Int64Rows(fixture, "input_ids")!;
        var expectedMask = FixtureFolder.Int64Rows(fixture, "attention_mask")!;
        Assert.Equal("right", FixtureFolder.JsonString(fixture, "padding_side"));

        var batch = tok.EncodeBatch(FixtureFolder.Prompts(fixture));

        Assert.Equal(expectedIds.Length, batch.BatchSize);
        Assert.Equal(expectedIds[0].Length, batch.SequenceLength);
        for (int b = 0; b < batch.BatchSize; b++)
            for (int t = 0; t < batch.SequenceLength; t++)
            {
                Assert.Equal(expectedIds[b][t], batch.InputIds[b, t]);
                Assert.Equal(expectedMask[b][t], batch.AttentionMask[b, t]);
            }
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void SpecialIdsComeFromTheConfigs(string fixture)
    {
        var tok = HfTokenizer.FromPretrained(FixtureFolder.Dir(fixture));
        Assert.Equal("byte-level BPE (tokenizer.json)", tok.Kind);
        Assert.Equal(0, tok.BosId);  // "<|endoftext|>"
        Assert.Equal(0, tok.EosId);
        Assert.Equal(1, tok.PadId);  // "<|pad|>"
        Assert.False(tok.PadIdIsEosFallback);
        Assert.Equal(1024, tok.VocabSize); // = config.json vocab_size = len(fast)
        Assert.Empty(tok.PrefixIds);       // this post-processor template adds nothing (no BOS in input_ids)
        Assert.Empty(tok.SuffixIds);
        Assert.Equal(PaddingSide.Right, tok.DefaultPaddingSide);
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void SinglePromptMatchesGreedyPromptIdsAndDecodeMatchesReference(string fixture)
    {
        var tok = HfTokenizer.FromPretrained(FixtureFolder.Dir(fixture));
        var prompt = FixtureFolder.Prompts(fixture)[0];
        var expected = FixtureFolder.Int64Rows(fixture, "greedy_prompt_ids")![0];
        Assert.Equal(expected, tok.Encode(prompt).Select(i => (long)i).ToArray());
        Assert.Equal(expected.Length, tok.CountTokens(prompt));

        // decoded_greedy = fast.decode(greedy_output_ids[0]) (skip_special_tokens=False)
        var output = FixtureFolder.Int64Rows(fixture, "greedy_output_ids")![0].Select(i => (int)i).ToArray();
        Assert.Equal(FixtureFolder.JsonString(fixture, "decoded_greedy"), tok.Decode(output, skipSpecialTokens: false));
    }

    [Theory]
    [InlineData("bull: a formal proclamation")]
    [InlineData("  leading spaces, tabs\tand\nnew lines\r\n")]
    [InlineData("naïve café — Grüße, 日本語 and emoji 😀👍🏽!")]
    [InlineData("numbers 1234567 and symbols #$%&*()[]{}")]
    [InlineData("")]
    public void DecodeRoundTrips(string text)
    {
        var tok = HfTokenizer.FromPretrained(FixtureFolder.Dir("llama-tiny"));
        var ids = tok.Encode(text);
        Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
        Assert.Equal(text, tok.Decode(ids));
    }

    [Fact]
    public void SpecialTokensInTextMapToTheirIdsAndAreSkippedOnDecode()
    {
        var tok = HfTokenizer.FromPretrained(FixtureFolder.Dir("llama-tiny"));
        var a = tok.Encode("the cat", addSpecialTokens: false);
        var b = tok.Encode(" sat on", addSpecialTokens: false);
        var ids = tok.Encode("the cat<|endoftext|> sat on<|pad|>");
        Assert.Equal([.. a, 0, .. b, 1], ids);
        Assert.Equal("the cat sat on", tok.Decode(ids));
        Assert.Equal("the cat<|endoftext|> sat on<|pad|>", tok.Decode(ids, skipSpecialTokens: false));
        Assert.True(tok.IsSpecial(0));
        Assert.True(tok.IsSpecial(1));
        Assert.False(tok.IsSpecial(a[0]));
        Assert.Equal(0, tok.TokenToId("<|endoftext|>"));
        Assert.Equal("<|pad|>", tok.IdToToken(1));
    }

    [Fact]
    public void WorksAsTheGeneratorsTextCodec()
    {
        QuanTA.Core.Generation.ITextCodec codec = HfTokenizer.FromPretrained(FixtureFolder.Dir("llama-tiny"));
        var prompt = FixtureFolder.Prompts("llama-tiny")[0];
        Assert.Equal(FixtureFolder.Int64Rows("llama-tiny", "greedy_prompt_ids")![0].Select(i => (int)i), codec.Encode(prompt));
        Assert.Equal(prompt, codec.Decode([.. codec.Encode(prompt), 0])); // eos skipped
    }

    [Fact]
    public void VocabJsonAndMergesTxtGiveTheSameIds()
    {
        using var dir = new FixtureFolder.TempCopy("llama-tiny", "vocab.json", "merges.txt", "tokenizer_config.json", "config.json");
        var tok = HfTokenizer.FromPretrained(dir.Path);
        Assert.Equal("byte-level BPE (vocab.json + merges.txt)", tok.Kind);
        var expectedIds = FixtureFolder.Int64Rows("llama-tiny", "input_ids")!;
        var batch = tok.EncodeBatch(FixtureFolder.Prompts("llama-tiny"));
        for (int b = 0; b < batch.BatchSize; b++)
            Assert.Equal(expectedIds[b], Enumerable.Range(0, batch.SequenceLength).Select(t => batch.InputIds[b, t]).ToArray());
        Assert.Equal((0, 0, 1), (tok.BosId, tok.EosId, tok.PadId));
    }
}
