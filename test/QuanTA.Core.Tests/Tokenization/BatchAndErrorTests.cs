using QuanTA.Core.Tokenization;

namespace QuanTA.Core.Tests.Tokenization;

/// <summary>Padding, truncation, BOS/EOS configuration, concurrency and error cases.</summary>
public class BatchAndErrorTests
{
    static HfTokenizer Tiny() => HfTokenizer.FromPretrained(FixtureFolder.Dir("llama-tiny"));
    static readonly string[] Texts = ["bull: a formal proclamation", "the cat sat on", "somatosensory: of or relating to the"];

    [Fact]
    public void LeftPaddingRightAlignsRowsAndMasksThePads()
    {
        var tok = Tiny();
        var right = tok.EncodeBatch(Texts, paddingSide: PaddingSide.Right);
        var left = tok.EncodeBatch(Texts, paddingSide: PaddingSide.Left);
        Assert.Equal(right.SequenceLength, left.SequenceLength);
        int t = left.SequenceLength;
        for (int b = 0; b < Texts.Length; b++)
        {
            var row = tok.Encode(Texts[b]).Select(i => (long)i).ToArray();
            Assert.Equal(row, right.Row(b));
            Assert.Equal(row, left.Row(b));
            int pads = t - row.Length;
            for (int i = 0; i < t; i++)
            {
                Assert.Equal(i < pads ? 0 : 1, left.AttentionMask[b, i]);
                Assert.Equal(i < row.Length ? 1 : 0, right.AttentionMask[b, i]);
                if (i < pads) Assert.Equal(tok.PadId, (int)left.InputIds[b, i]);
            }
            Assert.Equal(row[^1], left.InputIds[b, t - 1]); // every row ends with its last real token
        }
    }

    [Fact]
    public void TruncationKeepsTheChosenEndAndPadToMaxLengthPads()
    {
        var tok = Tiny();
        var full = tok.Encode(Texts[2]);
        Assert.True(full.Length > 5);
        var r = tok.EncodeBatch([Texts[2], "the"], maxLength: 5, truncationSide: TruncationSide.Right);
        Assert.Equal(full[..5].Select(i => (long)i), r.Row(0));
        var l = tok.EncodeBatch([Texts[2], "the"], maxLength: 5, truncationSide: TruncationSide.Left);
        Assert.Equal(full[^5..].Select(i => (long)i), l.Row(0));
        Assert.Equal(5, r.SequenceLength);

        var padded = tok.EncodeBatch(["the"], maxLength: 8, padToMaxLength: true);
        Assert.Equal(8, padded.SequenceLength);
        Assert.Equal(tok.Encode("the").Length, padded.AttentionMask.Cast<long>().Sum());
    }

    [Fact]
    public void AddBosAndEosFromTokenizerConfigAreAddedAndSurviveTruncation()
    {
        using var dir = new FixtureFolder.TempCopy("llama-tiny", "tokenizer.json", "config.json");
        dir.Write("tokenizer_config.json",
            """{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": true, "add_eos_token": true, "padding_side": "left"}""");
        var tok = HfTokenizer.FromPretrained(dir.Path);
        var plain = Tiny().Encode(Texts[0]);
        Assert.Equal([0, .. plain, 0], tok.Encode(Texts[0]));
        Assert.Equal(plain, tok.Encode(Texts[0], addSpecialTokens: false));
        Assert.Equal(plain.Length + 2, tok.CountTokens(Texts[0]));
        Assert.Null(tok.PadToken);
        Assert.Equal(PaddingSide.Left, tok.DefaultPaddingSide);

        var batch = tok.EncodeBatch([Texts[0]], maxLength: 4);
        Assert.Equal(new long[] { 0, plain[0], plain[1], 0 }, batch.Row(0));
        var ex = Assert.Throws<ArgumentException>(() => tok.EncodeBatch([Texts[0]], maxLength: 2));
        Assert.Contains("special token", ex.Message);
    }

    [Fact]
    public void PadFallsBackToEosWhenNoPadIsConfigured()
    {
        using var dir = new FixtureFolder.TempCopy("llama-tiny", "tokenizer.json");
        dir.Write("tokenizer_config.json", """{"eos_token": "<|endoftext|>"}""");
        var tok = HfTokenizer.FromPretrained(dir.Path);
        Assert.Equal(0, tok.EosId);
        Assert.Equal(0, tok.PadId);
        Assert.True(tok.PadIdIsEosFallback);
        Assert.Null(tok.BosId);
        var b = tok.EncodeBatch(["the cat sat on", "the"]);
        Assert.Equal(0, b.InputIds[1, b.SequenceLength - 1]);
    }

    [Fact]
    public void GenerationConfigEosListIsExposed()
    {
        using var dir = new FixtureFolder.TempCopy("llama-tiny", "tokenizer.json", "tokenizer_config.json");
        dir.Write("generation_config.json", """{"bos_token_id": 0, "eos_token_id": [0, 1]}""");
        var tok = HfTokenizer.FromPretrained(dir.Path);
        Assert.Equal(0, tok.EosId);
        Assert.Equal([0, 1], tok.EosIds);
    }

    [Fact]
    public void ConcurrentEncodeGivesTheSameIdsAsSequential()
    {
        var tok = Tiny();
        var texts = Enumerable.Range(0, 400).Select(i => $"{Texts[i % 3]} {i} naïve {new string('x', i % 17)}").ToArray();
        var sequential = texts.Select(t => tok.Encode(t)).ToArray();
        var parallel = new int[texts.Length][];
        Parallel.For(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i => parallel[i] = tok.Encode(texts[i]));
        for (int i = 0; i < texts.Length; i++) Assert.Equal(sequential[i], parallel[i]);
    }

    [Fact]
    public void MissingFolderIsAClearError()
    {
        var ex = Assert.Throws<DirectoryNotFoundException>(() => HfTokenizer.FromPretrained("/nonexistent/model-dir"));
        Assert.Contains("/nonexistent/model-dir", ex.Message);
    }

    [Fact]
    public void FolderWithoutTokenizerFilesListsWhatWasLookedFor()
    {
        using var dir = new FixtureFolder.TempCopy("llama-tiny", "config.json");
        var ex = Assert.Throws<FileNotFoundException>(() => HfTokenizer.FromPretrained(dir.Path));
        foreach (var name in new[] { "tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "config.json" })
            Assert.Contains(name, ex.Message);
    }

    [Fact]
    public void UnsupportedTokenizerTypeIsAClearError()
    {
        using var dir = new FixtureFolder.TempCopy("llama-tiny");
        dir.Write("tokenizer.json", """{"model": {"type": "WordPiece", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "BertPreTokenizer"}}""");
        var ex = Assert.Throws<NotSupportedException>(() => HfTokenizer.FromPretrained(dir.Path));
        Assert.Contains("WordPiece", ex.Message);
        Assert.Contains("tokenizer.model", ex.Message); // names what is supported
    }

    [Fact]
    public void UnsupportedPreTokenizerIsAClearError()
    {
        using var dir = new FixtureFolder.TempCopy("llama-tiny");
        dir.Write("tokenizer.json", """{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Digits", "individual_digits": true}}""");
        var ex = Assert.Throws<NotSupportedException>(() => HfTokenizer.FromPretrained(dir.Path));
        Assert.Contains("Digits", ex.Message);
    }

    [Fact]
    public void BadInputsAreRejected()
    {
        var tok = Tiny();
        Assert.Throws<ArgumentNullException>(() => tok.Encode(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([5, -1]));
        Assert.Equal(tok.Decode([67]), tok.Decode([67, tok.VocabSize + 10])); // embedding padding rows are skipped, as HF
        Assert.Throws<ArgumentException>(() => tok.EncodeBatch([]));
        Assert.Throws<ArgumentException>(() => tok.EncodeBatch(["a"], padToMaxLength: true));
    }

    [Fact]
    public void BatchConvertsToInt64Tensors()
    {
        var batch = Tiny().EncodeBatch(Texts);
        var (ids, mask) = batch.ToTensors();
        using (ids)
        using (mask)
        {
            Assert.Equal(new long[] { 3, batch.SequenceLength }, ids.shape);
            Assert.Equal(TorchSharp.torch.ScalarType.Int64, ids.dtype);
            Assert.Equal(batch.InputIds.Cast<long>().ToArray(), ids.data<long>().ToArray());
            Assert.Equal(batch.AttentionMask.Cast<long>().ToArray(), mask.data<long>().ToArray());
        }
    }
}
