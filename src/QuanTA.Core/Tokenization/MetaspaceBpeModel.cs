using System.Text;
using Microsoft.ML.Tokenizers;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// SentencePiece-style BPE from a <c>tokenizer.json</c> (LLaMA-2 / Mistral as converted by transformers): words of "▁"
/// (Metaspace pre-tokenizer, or the older Prepend + Replace normalizers), merges applied by Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/>, and <c>byte_fallback</c>: a character missing from the vocabulary becomes its UTF-8 byte
/// tokens <c>&lt;0xNN&gt;</c>. Such a character never takes part in a merge, so the text on either side of it is
/// merged on its own, which is what HF tokenizers computes too.
/// </summary>
/// <remarks>A character outside the BMP that is in the vocabulary is emitted as its own token (merges across it are
/// not attempted; LLaMA-2/Mistral vocabularies have no merges with such characters).</remarks>
internal sealed class MetaspaceBpeModel : ITokenizerModel
{
    readonly BpeTokenizer _bpe;
    readonly TextPipeline _pipeline;
    readonly Dictionary<string, int> _vocab;
    readonly string?[] _idToToken;
    readonly bool _byteFallback, _fuseUnknown, _decodeByteFallback;
    readonly LeadingSpace _leading;
    readonly int? _unkId;
    readonly int[] _byteIds = new int[256];
    readonly bool _canSplitAtWordStarts;

    public MetaspaceBpeModel(Dictionary<string, int> vocab, IReadOnlyList<string> merges, TextPipeline pipeline,
        bool byteFallback, string? unknownToken, bool fuseUnknown, LeadingSpace leading, bool decodeByteFallback)
    {
        _vocab = vocab;
        _pipeline = pipeline;
        _byteFallback = byteFallback;
        _fuseUnknown = fuseUnknown;
        _leading = leading;
        _decodeByteFallback = decodeByteFallback;
        _unkId = unknownToken is not null && vocab.TryGetValue(unknownToken, out var u) ? u : null;
        VocabCount = vocab.Count == 0 ? 0 : vocab.Values.Max() + 1;
        _idToToken = new string?[VocabCount];
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out var id) ? id : -1;
        _bpe = BpeTokenizer.Create(new BpeOptions(vocab) { Merges = merges, ByteLevel = false });
        // Merges only make vocabulary entries, so if no entry has "▁" right after another character, no token can
        // span such a place: the text may be cut there and merged piecewise with the same result (much faster for
        // long texts; SentencePiece vocabularies have this property).
        _canSplitAtWordStarts = !vocab.Keys.Any(HasInnerWordStart);
    }

    static bool HasInnerWordStart(string token)
    {
        for (int i = 1; i < token.Length; i++)
            if (token[i] == '\u2581' && token[i - 1] != '\u2581') return true;
        return false;
    }

    public string Kind => "SentencePiece-style BPE (tokenizer.json)";
    public int VocabCount { get; }

    public void EncodePlain(string text, bool atStart, List<int> ids)
    {
        foreach (var word in _pipeline.PreTokenize(_pipeline.Normalize(text), atStart))
        {
            if (!_canSplitAtWordStarts) { EncodeWord(word, ids); continue; }
            int start = 0;
            for (int i = 1; i < word.Length; i++)
                if (word[i] == '\u2581' && word[i - 1] != '\u2581') { EncodeWord(word[start..i], ids); start = i; }
            EncodeWord(word[start..], ids);
        }
    }

    void EncodeWord(string word, List<int> ids)
    {
        int runStart = 0;
        bool lastUnknown = false;
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsSurrogatePair(word, i) ? 2 : 1;
            if (len == 1 && _vocab.ContainsKey(word.Substring(i, 1))) { i++; continue; }
            // A character the merges cannot touch: encode the run before it, then the character alone.
            if (i > runStart) { EncodeRun(word[runStart..i], ids); lastUnknown = false; }
            var ch = word.Substring(i, len);
            if (_vocab.TryGetValue(ch, out var whole)) { ids.Add(whole); lastUnknown = false; }
            else lastUnknown = EmitUnknown(ch, ids, lastUnknown);
            i += len;
            runStart = i;
        }
        if (runStart < word.Length) EncodeRun(word[runStart..], ids);
    }

    void EncodeRun(string run, List<int> ids) =>
        ids.AddRange(_bpe.EncodeToIds(run, considerPreTokenization: false, considerNormalization: false));

    // Returns true when an unk id was emitted (for fuse_unk).
    bool EmitUnknown(string ch, List<int> ids, bool lastUnknown)
    {
        if (_byteFallback)
        {
            var bytes = Encoding.UTF8.GetBytes(ch);
            if (bytes.All(b => _byteIds[b] >= 0))
            {
                foreach (var b in bytes) ids.Add(_byteIds[b]);
                return false;
            }
        }
        if (_unkId is not { } unk)
            throw new InvalidOperationException(
                $"Character U+{char.ConvertToUtf32(ch, 0):X4} is not in the vocabulary, which has no byte fallback and no unk token.");
        if (!(_fuseUnknown && lastUnknown)) ids.Add(unk);
        return true;
    }

    public bool TryGetId(string token, out int id) => _vocab.TryGetValue(token, out id);

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public string DecodeTokens(IReadOnlyList<string> tokens) => MetaspaceText.Decode(tokens, _leading, _decodeByteFallback);
}
