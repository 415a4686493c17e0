using QuanTA.Core.Generation;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// The tokenizer of a local Hugging Face model folder, built on Microsoft.ML.Tokenizers, giving the same ids as
/// <c>AutoTokenizer.from_pretrained(dir)</c>. Supported, in this order of preference:
/// <list type="bullet">
/// <item><c>tokenizer.json</c> with a byte-level BPE (GPT-2, LLaMA-3 with <c>ignore_merges</c>, Qwen2): the folder's own
/// split regex(es), normalizer and added tokens are used;</item>
/// <item><c>tokenizer.json</c> with a SentencePiece-style BPE (LLaMA-2, Mistral: Metaspace "▁" words, byte fallback);</item>
/// <item><c>tokenizer.model</c> alone (SentencePiece BPE through Microsoft.ML.Tokenizers' <c>LlamaTokenizer</c>);</item>
/// <item><c>vocab.json</c> + <c>merges.txt</c> (GPT-2 style byte-level BPE).</item>
/// </list>
/// </summary>
/// <remarks>
/// <para>Encoding follows HF: added tokens (e.g. <c>&lt;|endoftext|&gt;</c>) are found in the raw text first and map to their
/// ids; the text between them is normalized, pre-tokenized and BPE-encoded. With <c>addSpecialTokens</c> the tokens
/// of the tokenizer.json post-processor template are added (e.g. LLaMA-3's <c>&lt;|begin_of_text|&gt;</c>); explicit
/// <c>add_bos_token</c> / <c>add_eos_token</c> in tokenizer_config.json override that; a SentencePiece model without
/// either adds BOS only (LLaMA's default).</para>
/// <para>Known differences: split regexes run on .NET's <see cref="System.Text.RegularExpressions.Regex"/>, where letters
/// and digits outside the BMP (e.g. mathematical alphanumerics) are not <c>\p{L}</c>/<c>\p{N}</c>; with only a
/// <c>tokenizer.model</c>, Microsoft.ML.Tokenizers 2.0.1 breaks ties between equal-score merges right-to-left where
/// sentencepiece goes left-to-right, so a run of one repeated piece (e.g. three spaces) may split differently
/// (same text, same length). Folders that ship tokenizer.json are not affected by the latter.</para>
/// <para>Thread safety: an instance is immutable after <see cref="FromPretrained"/>; <see cref="Encode"/>,
/// <see cref="EncodeBatch"/>, <see cref="CountTokens"/> and <see cref="Decode"/> may be called concurrently.</para>
/// </remarks>
public sealed class HfTokenizer : ITextCodec
{
    readonly ITokenizerModel _model;
    readonly AddedTokenSplitter _splitter;
    readonly Dictionary<int, AddedToken> _addedById = new();
    readonly Dictionary<string, AddedToken> _addedByContent = new(StringComparer.Ordinal);
    readonly HashSet<int> _specialIds = new();
    readonly int[] _prefix, _suffix;
    readonly bool _cleanUpSpaces;

    HfTokenizer(string dir, TokenizerConfigFiles cfg, TokenizerLoader.Parts parts)
    {
        _model = parts.Model;
        Directory = dir;
        SourceFile = parts.SourceFile;
        _cleanUpSpaces = cfg.CleanUpTokenizationSpaces;

        // Added tokens: tokenizer.json wins; tokenizer_config's added_tokens_decoder fills in the rest.
        foreach (var t in parts.AddedTokens.Concat(cfg.AddedTokensDecoder))
            if (_addedById.TryAdd(t.Id, t)) _addedByContent.TryAdd(t.Content, t);
        // bos/eos/unk/pad named in the configs are special tokens even when only the model vocabulary has them.
        foreach (var s in new[] { cfg.BosToken, cfg.EosToken, cfg.UnkToken, cfg.PadToken })
            if (s is not null && !_addedByContent.ContainsKey(s) && _model.TryGetId(s, out var id) && !_addedById.ContainsKey(id))
            {
                var t = new AddedToken(id, s, Special: true);
                _addedById[id] = t;
                _addedByContent[s] = t;
            }
        _splitter = new AddedTokenSplitter(_addedById.Values);

        BosToken = cfg.BosToken;
        EosToken = cfg.EosToken;
        PadToken = cfg.PadToken;
        var sp = _model as SentencePieceModel;
        BosId = TokenToId(cfg.BosToken) ?? cfg.BosTokenId ?? sp?.ModelBosId;
        EosId = TokenToId(cfg.EosToken) ?? (cfg.EosTokenIds.Count > 0 ? cfg.EosTokenIds[0] : sp?.ModelEosId);
        EosIds = (EosId is { } e0 ? new[] { e0 } : []).Concat(cfg.EosTokenIds).Distinct().ToArray();
        UnkId = TokenToId(cfg.UnkToken);
        PadId = TokenToId(cfg.PadToken) ?? cfg.PadTokenId;
        if (PadId is null && EosId is not null) { PadId = EosId; PadIdIsEosFallback = true; }

        // Tokens added by Encode(addSpecialTokens: true).
        var prefix = parts.TemplatePrefix ?? (sp is not null && BosId is { } b ? [b] : []);
        var suffix = parts.TemplateSuffix ?? [];
        if (cfg.AddBosToken is { } addBos)
            prefix = addBos ? [BosId ?? throw new InvalidDataException($"'{dir}': add_bos_token is true but no bos token is configured.")] : [];
        if (cfg.AddEosToken is { } addEos)
            suffix = addEos ? [EosId ?? throw new InvalidDataException($"'{dir}': add_eos_token is true but no eos token is configured.")] : [];
        _prefix = prefix;
        _suffix = suffix;

        foreach (var t in _addedById.Values) if (t.Special) _specialIds.Add(t.Id);
        foreach (var id in new[] { BosId, EosId, UnkId, PadIdIsEosFallback ? null : PadId }) if (id is { } x) _specialIds.Add(x);

        VocabSize = Math.Max(_model.VocabCount, _addedById.Count == 0 ? 0 : _addedById.Keys.Max() + 1);
        DefaultPaddingSide = cfg.PaddingSide ?? parts.JsonPaddingSide ?? PaddingSide.Right;
        DefaultTruncationSide = cfg.TruncationSide ?? TruncationSide.Right;
    }

    /// <summary>
    /// Loads the tokenizer of a Hugging Face model folder (tokenizer.json / tokenizer.model / vocab.json + merges.txt,
    /// with tokenizer_config.json, special_tokens_map.json, config.json and generation_config.json for special tokens).
    /// </summary>
    /// <param name="dir">The model folder.</param>
    /// <exception cref="DirectoryNotFoundException">the folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">no tokenizer file is there (the message lists what was looked for).</exception>
    /// <exception cref="NotSupportedException">the tokenizer type, normalizer, pre-tokenizer or post-processor is not supported.</exception>
    /// <exception cref="InvalidDataException">a file is not valid JSON or is inconsistent.</exception>
    public static HfTokenizer FromPretrained(string dir)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dir);
        if (!System.IO.Directory.Exists(dir))
            throw new DirectoryNotFoundException($"Model folder '{dir}' does not exist (expected a Hugging Face model folder with tokenizer files).");
        var full = Path.GetFullPath(dir);
        var cfg = TokenizerConfigFiles.Read(full);
        return new HfTokenizer(full, cfg, TokenizerLoader.Load(full, cfg));
    }

    /// <summary>The folder this tokenizer was loaded from.</summary>
    public string Directory { get; }

    /// <summary>The file the vocabulary came from (tokenizer.json, tokenizer.model or vocab.json).</summary>
    public string SourceFile { get; }

    /// <summary>What kind of tokenizer was loaded, e.g. "byte-level BPE (tokenizer.json)".</summary>
    public string Kind => _model.Kind;

    /// <summary>Number of ids: one more than the largest id of the vocabulary and the added tokens (HF <c>len(tokenizer)</c>).
    /// The model's embedding table may be larger (config.json <c>vocab_size</c>).</summary>
    public int VocabSize { get; }

    /// <summary>Beginning-of-sequence id (tokenizer_config <c>bos_token</c>, else config.json/generation_config.json), or null.</summary>
    public int? BosId { get; }

    /// <summary>End-of-sequence id (tokenizer_config <c>eos_token</c>, else config.json/generation_config.json), or null.</summary>
    public int? EosId { get; }

    /// <summary>All ids that end generation: <see cref="EosId"/> plus every <c>eos_token_id</c> of config.json / generation_config.json.</summary>
    public IReadOnlyList<int> EosIds { get; }

    /// <summary>
    /// Padding id: tokenizer_config <c>pad_token</c>, else <c>pad_token_id</c> of config.json/generation_config.json, else
    /// <see cref="EosId"/> (then <see cref="PadIdIsEosFallback"/> is true; padded positions are masked out anyway), else null.
    /// </summary>
    public int? PadId { get; }

    /// <summary>True when the folder names no pad token and <see cref="PadId"/> fell back to <see cref="EosId"/>.</summary>
    public bool PadIdIsEosFallback { get; }

    /// <summary>Unknown-token id, or null (byte-level BPE never needs one).</summary>
    public int? UnkId { get; }

    /// <summary>The bos / eos / pad token strings named in the configs (null when not named).</summary>
    public string? BosToken { get; }

    /// <inheritdoc cref="BosToken"/>
    public string? EosToken { get; }

    /// <inheritdoc cref="BosToken"/>
    public string? PadToken { get; }

    /// <summary>Ids put before the text by <c>Encode(text, addSpecialTokens: true)</c> (e.g. [bos]).</summary>
    public IReadOnlyList<int> PrefixIds => _prefix;

    /// <summary>Ids put after the text by <c>Encode(text, addSpecialTokens: true)</c> (e.g. [eos] with add_eos_token).</summary>
    public IReadOnlyList<int> SuffixIds => _suffix;

    /// <summary>Padding side from tokenizer_config.json <c>padding_side</c> (or tokenizer.json padding), default right.</summary>
    public PaddingSide DefaultPaddingSide { get; }

    /// <summary>Truncation side from tokenizer_config.json <c>truncation_side</c>, default right.</summary>
    public TruncationSide DefaultTruncationSide { get; }

    /// <summary>The added tokens (special or not), by id.</summary>
    public IReadOnlyCollection<AddedToken> AddedTokens => _addedById.Values;

    /// <summary>Token ids of <paramref name="text"/>; with <paramref name="addSpecialTokens"/> the configured BOS/EOS are added.
    /// Special-token strings inside the text (e.g. "&lt;|endoftext|&gt;") map to their ids.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is null.</exception>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        var content = EncodeContent(text);
        return addSpecialTokens ? [.. _prefix, .. content, .. _suffix] : content.ToArray();
    }

    /// <summary>Number of tokens <see cref="Encode"/> gives for <paramref name="text"/>.</summary>
    public int CountTokens(string text, bool addSpecialTokens = true) =>
        EncodeContent(text).Count + (addSpecialTokens ? _prefix.Length + _suffix.Length : 0);

    /// <summary>
    /// Text of <paramref name="ids"/>. Special tokens are dropped when <paramref name="skipSpecialTokens"/> (HF default
    /// for generation output). Ids at or above <see cref="VocabSize"/> (embedding padding rows) are skipped, as HF does.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">an id is negative.</exception>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (var id in ids)
        {
            if (id < 0) throw new ArgumentOutOfRangeException(nameof(ids), id, "Token ids must be non-negative.");
            if (skipSpecialTokens && _specialIds.Contains(id)) continue;
            if (_addedById.TryGetValue(id, out var added)) tokens.Add(added.Content);
            else if (_model.IdToToken(id) is { } tok) tokens.Add(tok);
        }
        var text = _model.DecodeTokens(tokens);
        return _cleanUpSpaces ? CleanUpTokenizationSpaces(text) : text;
    }

    /// <summary>
    /// Encodes a batch into padded [B, T] ids and attention mask (HF <c>tokenizer(texts, padding=True, truncation=True,
    /// max_length=maxLength)</c>). T is the longest row, or <paramref name="maxLength"/> with <paramref name="padToMaxLength"/>.
    /// </summary>
    /// <param name="texts">The texts, one row each.</param>
    /// <param name="maxLength">Truncate rows (special tokens included) to this many tokens; null = no truncation.</param>
    /// <param name="paddingSide">Side of the pads; null = <see cref="DefaultPaddingSide"/>. Use left for batched generation.</param>
    /// <param name="truncationSide">Side that is cut; null = <see cref="DefaultTruncationSide"/>.</param>
    /// <param name="addSpecialTokens">Add BOS/EOS as <see cref="Encode"/> does; they are kept when truncating.</param>
    /// <param name="padToMaxLength">Pad every row to <paramref name="maxLength"/> instead of to the longest row.</param>
    /// <exception cref="ArgumentException">empty batch, <paramref name="maxLength"/> too small for the special tokens,
    /// or <paramref name="padToMaxLength"/> without <paramref name="maxLength"/>.</exception>
    /// <exception cref="InvalidOperationException">padding is needed but the folder defines no pad or eos token.</exception>
    public BatchEncoding EncodeBatch(IReadOnlyList<string> texts, int? maxLength = null, PaddingSide? paddingSide = null,
        TruncationSide? truncationSide = null, bool addSpecialTokens = true, bool padToMaxLength = false)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (texts.Count == 0) throw new ArgumentException("The batch is empty; pass at least one text.", nameof(texts));
        if (padToMaxLength && maxLength is null)
            throw new ArgumentException("padToMaxLength needs maxLength.", nameof(padToMaxLength));
        var side = paddingSide ?? DefaultPaddingSide;
        var cut = truncationSide ?? DefaultTruncationSide;
        int specials = addSpecialTokens ? _prefix.Length + _suffix.Length : 0;
        if (maxLength is { } max && max <= specials)
            throw new ArgumentException(
                $"maxLength {max} leaves no room for text: {specials} special token(s) are added per row; pass maxLength > {specials}.",
                nameof(maxLength));

        var rows = new int[texts.Count][];
        for (int b = 0; b < texts.Count; b++)
        {
            var content = EncodeContent(texts[b] ?? throw new ArgumentNullException(nameof(texts), $"texts[{b}] is null."));
            if (maxLength is { } m && content.Count + specials > m)
            {
                int keep = m - specials;
                content = cut == TruncationSide.Right ? content.GetRange(0, keep) : content.GetRange(content.Count - keep, keep);
            }
            rows[b] = addSpecialTokens ? [.. _prefix, .. content, .. _suffix] : content.ToArray();
        }

        int t = padToMaxLength ? maxLength!.Value : rows.Max(r => r.Length);
        bool needsPad = rows.Any(r => r.Length < t);
        if (needsPad && PadId is null)
            throw new InvalidOperationException($"Padding is needed but '{Directory}' defines no pad token and no eos token to fall back on.");
        long pad = PadId ?? 0;
        var ids = new long[rows.Length, t];
        var mask = new long[rows.Length, t];
        var lengths = new int[rows.Length];
        for (int b = 0; b < rows.Length; b++)
        {
            var r = rows[b];
            int offset = side == PaddingSide.Left ? t - r.Length : 0;
            for (int i = 0; i < t; i++) ids[b, i] = pad;
            for (int i = 0; i < r.Length; i++) { ids[b, offset + i] = r[i]; mask[b, offset + i] = 1; }
            lengths[b] = r.Length;
        }
        return new BatchEncoding(ids, mask, lengths, side);
    }

    /// <summary>Id of a token string (added token or vocabulary entry, as stored, e.g. "Ġthe"), or null.</summary>
    public int? TokenToId(string? token)
    {
        if (token is null) return null;
        if (_addedByContent.TryGetValue(token, out var a)) return a.Id;
        return _model.TryGetId(token, out var id) ? id : null;
    }

    /// <summary>Token string of an id (as stored in the vocabulary), or null when unknown.</summary>
    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var a) ? a.Content : _model.IdToToken(id);

    /// <summary>True for special ids (special added tokens, bos, eos, unk, pad).</summary>
    public bool IsSpecial(int id) => _specialIds.Contains(id);

    /// <summary><see cref="ITextCodec"/> for <see cref="TextGenerator"/>: <c>Encode(text, addSpecialTokens: true)</c>.</summary>
    IReadOnlyList<int> ITextCodec.Encode(string text) => Encode(text);

    /// <summary><see cref="ITextCodec"/> for <see cref="TextGenerator"/>: <c>Decode(ids, skipSpecialTokens: true)</c>.</summary>
    string ITextCodec.Decode(IReadOnlyList<int> ids) => Decode(ids);

    /// <inheritdoc/>
    public override string ToString() => $"HfTokenizer({Kind}, vocab {VocabSize}, bos {BosId?.ToString() ?? "none"}, eos {EosId?.ToString() ?? "none"}, pad {PadId?.ToString() ?? "none"})";

    List<int> EncodeContent(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        foreach (var piece in _splitter.Split(text))
        {
            if (piece.Token is { } added) ids.Add(added.Id);
            else _model.EncodePlain(piece.Text, piece.Start == 0, ids);
        }
        return ids;
    }

    // transformers' clean_up_tokenization (only when tokenizer_config says clean_up_tokenization_spaces: true).
    static string CleanUpTokenizationSpaces(string s) => s
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");
}
