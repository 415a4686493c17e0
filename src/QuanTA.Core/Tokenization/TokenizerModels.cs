using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// The model part of a tokenizer: turns plain text (no added tokens in it) into ids of its vocabulary, and token
/// strings back into text. Implementations are immutable after construction and safe for concurrent use.
/// </summary>
internal interface ITokenizerModel
{
    /// <summary>Short description, e.g. "byte-level BPE (tokenizer.json)".</summary>
    string Kind { get; }

    /// <summary>One more than the largest id of the model vocabulary.</summary>
    int VocabCount { get; }

    /// <summary>Appends the ids of a plain-text piece (normalization and pre-tokenization included);
    /// <paramref name="atStart"/> tells whether the piece begins the input text.</summary>
    void EncodePlain(string text, bool atStart, List<int> ids);

    /// <summary>Id of a vocabulary entry, given as stored in the vocabulary.</summary>
    bool TryGetId(string token, out int id);

    /// <summary>The vocabulary entry for an id, or null when the id is not in the model vocabulary.</summary>
    string? IdToToken(int id);

    /// <summary>Joins token strings (vocabulary entries and added-token contents) into text, as the HF decoder does.</summary>
    string DecodeTokens(IReadOnlyList<string> tokens);
}

/// <summary>
/// Byte-level BPE (GPT-2, LLaMA-3, Qwen2, ...): our <see cref="TextPipeline"/> splits the text into words, and
/// Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> (ByteLevel mode) maps each word to UTF-8 byte characters and
/// applies the merges in rank order. With <c>ignore_merges</c> (LLaMA-3, tiktoken-converted vocabularies) a word
/// found whole in the vocabulary is emitted as one token before any merging, as HF tokenizers does.
/// </summary>
internal sealed class ByteLevelBpeModel : ITokenizerModel
{
    readonly BpeTokenizer _bpe;
    readonly TextPipeline _pipeline;
    readonly Dictionary<string, int> _vocab;
    readonly string?[] _idToToken;
    readonly bool _ignoreMerges;

    public ByteLevelBpeModel(Dictionary<string, int> vocab, IReadOnlyList<string> merges, TextPipeline pipeline,
        bool ignoreMerges, string? unknownToken, string kind)
    {
        _vocab = vocab;
        _pipeline = pipeline;
        _ignoreMerges = ignoreMerges;
        Kind = kind;
        VocabCount = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        _idToToken = new string?[VocabCount];
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        _bpe = BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            UnknownToken = unknownToken is not null && vocab.ContainsKey(unknownToken) ? unknownToken : null,
        });
    }

    public string Kind { get; }
    public int VocabCount { get; }

    /// <summary>The split patterns in use (from the tokenizer's own pre-tokenizer).</summary>
    public IReadOnlyList<string> Patterns => _pipeline.Patterns;

    public void EncodePlain(string text, bool atStart, List<int> ids)
    {
        foreach (var word in _pipeline.PreTokenize(_pipeline.Normalize(text), atStart))
        {
            if (_ignoreMerges && _vocab.TryGetValue(ByteLevelAlphabet.Encode(word), out var whole)) { ids.Add(whole); continue; }
            ids.AddRange(_bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
        }
    }

    public bool TryGetId(string token, out int id) => _vocab.TryGetValue(token, out id);

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    // HF decoders.ByteLevel: every token's chars back to bytes, then one lossy UTF-8 decode.
    public string DecodeTokens(IReadOnlyList<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (var t in tokens) ByteLevelAlphabet.AppendTokenBytes(t, bytes);
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}

/// <summary>
/// SentencePiece BPE from a <c>tokenizer.model</c> (LLaMA-1/2, Mistral) through Microsoft.ML.Tokenizers'
/// <see cref="LlamaTokenizer"/> (dummy-prefix "▁", whitespace escaping, byte fallback). BOS/EOS are added by
/// <see cref="HfTokenizer"/>, not here. Decoding follows the HF LLaMA decoder: "▁" → space, <c>&lt;0xNN&gt;</c> byte
/// tokens fused into UTF-8, and one leading space removed.
/// </summary>
internal sealed class SentencePieceModel : ITokenizerModel
{
    readonly LlamaTokenizer _sp;
    readonly Dictionary<string, int> _vocab;
    readonly string?[] _idToToken;

    public SentencePieceModel(Stream modelProto)
    {
        _sp = LlamaTokenizer.Create(modelProto, addBeginOfSentence: false, addEndOfSentence: false);
        _vocab = new Dictionary<string, int>(_sp.Vocabulary);
        VocabCount = _vocab.Count == 0 ? 0 : _vocab.Values.Max() + 1;
        _idToToken = new string?[VocabCount];
        foreach (var (token, id) in _vocab) _idToToken[id] = token;
    }

    public string Kind => "SentencePiece BPE (tokenizer.model)";
    public int VocabCount { get; }

    /// <summary>The SentencePiece BOS id stored in the model file.</summary>
    public int ModelBosId => _sp.BeginningOfSentenceId;

    /// <summary>The SentencePiece EOS id stored in the model file.</summary>
    public int ModelEosId => _sp.EndOfSentenceId;

    public void EncodePlain(string text, bool atStart, List<int> ids) =>
        ids.AddRange(_sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false));

    public bool TryGetId(string token, out int id) => _vocab.TryGetValue(token, out id);

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public string DecodeTokens(IReadOnlyList<string> tokens) => MetaspaceText.Decode(tokens, LeadingSpace.StripOne);
}

/// <summary>Decoding of SentencePiece-style tokens, as the HF LLaMA decoder (Replace "▁"→" ", ByteFallback, Fuse, Strip).</summary>
internal static class MetaspaceText
{
    /// <summary>Byte-fallback token <c>&lt;0xNN&gt;</c> → its byte.</summary>
    public static bool TryParseByteToken(string t, out byte b)
    {
        b = 0;
        return t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>' &&
               byte.TryParse(t.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out b);
    }

    /// <summary>Joins tokens: "▁" becomes a space, byte tokens are fused into UTF-8, and the dummy prefix is removed
    /// as <paramref name="leading"/> says. Without <paramref name="byteFallback"/> (no ByteFallback decoder) byte
    /// tokens stay as their text, as HF does.</summary>
    public static string Decode(IReadOnlyList<string> tokens, LeadingSpace leading, bool byteFallback = true)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < tokens.Count; i++)
        {
            var t = tokens[i];
            if (byteFallback && TryParseByteToken(t, out var b)) { bytes.Add(b); continue; } // HF decoders.ByteFallback
            // HF decoders.Metaspace: in the first token every "▁" is dropped, elsewhere it is a space.
            t = i == 0 && leading == LeadingSpace.DropInFirstToken ? t.Replace("\u2581", "") : t.Replace('\u2581', ' ');
            bytes.AddRange(Encoding.UTF8.GetBytes(t));
        }
        var text = Encoding.UTF8.GetString(bytes.ToArray());
        return leading == LeadingSpace.StripOne && text.StartsWith(' ') ? text[1..] : text;
    }
}

/// <summary>How a SentencePiece-style decoder removes the dummy-prefix space.</summary>
internal enum LeadingSpace
{
    /// <summary>Nothing removed.</summary>
    Keep,
    /// <summary>One leading space of the whole text (LLaMA decoder's Strip(start=1); sentencepiece).</summary>
    StripOne,
    /// <summary>Every "▁" of the first token (HF Metaspace decoder with a prepend scheme).</summary>
    DropInFirstToken,
}
