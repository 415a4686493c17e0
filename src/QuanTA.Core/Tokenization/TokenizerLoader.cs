using System.Text.Json;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// Finds and reads the tokenizer files of a Hugging Face folder. Preference, as <c>AutoTokenizer</c> (fast): a BPE
/// <c>tokenizer.json</c> (byte-level, or SentencePiece-style with Metaspace/byte fallback); else <c>tokenizer.model</c>
/// (SentencePiece, through Microsoft.ML.Tokenizers' LlamaTokenizer); else <c>vocab.json</c> + <c>merges.txt</c>
/// (GPT-2 byte-level BPE).
/// </summary>
internal static class TokenizerLoader
{
    /// <summary>The files looked for, in order of preference (named in errors).</summary>
    public static readonly string[] Candidates = ["tokenizer.json", "tokenizer.model", "vocab.json + merges.txt"];

    /// <summary>What a folder's tokenizer files say.</summary>
    public sealed record Parts(
        ITokenizerModel Model,
        List<AddedToken> AddedTokens,
        int[]? TemplatePrefix,
        int[]? TemplateSuffix,
        PaddingSide? JsonPaddingSide,
        string SourceFile);

    public static Parts Load(string dir, TokenizerConfigFiles cfg)
    {
        string json = Path.Combine(dir, "tokenizer.json"), spm = Path.Combine(dir, "tokenizer.model");
        string vocab = Path.Combine(dir, "vocab.json"), merges = Path.Combine(dir, "merges.txt");

        string? jsonNotUsable = null;
        if (File.Exists(json))
        {
            using var doc = ParseJson(json);
            Parts? parts;
            try { parts = FromTokenizerJson(doc.RootElement, json, File.Exists(spm) ? spm : null, out jsonNotUsable); }
            catch (Exception e) when (IsMalformed(e)) { throw Malformed(json, e); }
            if (parts is not null) return parts;
        }
        if (File.Exists(spm))
        {
            using var s = File.OpenRead(spm);
            ITokenizerModel model;
            try { model = new SentencePieceModel(s); }
            catch (Exception e) when (e is not (FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or OutOfMemoryException))
            {
                // Protocol-buffer errors are IOExceptions too: a truncated or damaged file lands here, as does another model type.
                throw new NotSupportedException($"'{spm}' could not be read as a SentencePiece BPE model (damaged, or a model type " +
                    $"this library does not read): {e.Message}", e);
            }
            return new Parts(model, [], null, null, null, spm);
        }
        if (File.Exists(vocab) && File.Exists(merges))
            return FromVocabAndMerges(vocab, merges, cfg);
        if (jsonNotUsable is not null) throw new NotSupportedException(jsonNotUsable);
        var present = Directory.EnumerateFiles(dir).Select(Path.GetFileName).Order().ToList();
        throw new FileNotFoundException(
            $"No tokenizer found in '{dir}'. Looked for: {string.Join(", ", Candidates)}. " +
            $"The folder holds: {(present.Count == 0 ? "(nothing)" : string.Join(", ", present))}.");
    }

    static Parts? FromTokenizerJson(JsonElement root, string path, string? spmPath, out string? notUsable)
    {
        notUsable = null;
        var model = root.GetProperty("model");
        var type = model.TryGetProperty("type", out var t) ? t.GetString() : null;
        const string supported = "Supported: BPE tokenizer.json, byte-level (GPT-2, LLaMA-3, Qwen2, ...) or SentencePiece-style " +
                                 "(LLaMA-2, Mistral); SentencePiece tokenizer.model; vocab.json + merges.txt.";
        if (type != "BPE")
        {
            notUsable = $"'{path}' holds a '{type}' model, which is not supported. {supported}";
            if (spmPath is not null) return null; // tokenizer.model will be used instead
            throw new NotSupportedException(notUsable);
        }
        TextPipeline pipeline;
        try { pipeline = TextPipeline.FromJson(Opt(root, "normalizer"), Opt(root, "pre_tokenizer")); }
        catch (NotSupportedException e)
        {
            notUsable = $"'{path}': {e.Message} {supported}";
            if (spmPath is not null) return null;
            throw new NotSupportedException(notUsable, e);
        }
        var decoder = Opt(root, "decoder");
        bool byteLevel = pipeline.HasByteLevel || DecoderHas(decoder, "ByteLevel");
        bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
        bool metaspace = pipeline.HasMetaspace || DecoderHas(decoder, "Metaspace") || DecoderHas(decoder, "ByteFallback");
        if (!byteLevel && !metaspace)
        {
            notUsable = $"'{path}' holds a BPE model with neither a ByteLevel nor a Metaspace (SentencePiece-style) " +
                        $"pre-tokenizer/decoder, which is not supported. {supported}";
            if (spmPath is not null) return null;
            throw new NotSupportedException(notUsable);
        }
        if (byteLevel && byteFallback)
            throw new NotSupportedException($"'{path}': byte-level BPE with byte_fallback=true is not supported.");
        foreach (var name in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 })
                throw new NotSupportedException($"'{path}': BPE '{name}' is not supported.");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in model.GetProperty("vocab").EnumerateObject()) vocab[p.Name] = TokenId(p.Value.GetInt32(), path, $"vocab entry '{p.Name}'");
        var merges = new List<string>();
        foreach (var m in model.GetProperty("merges").EnumerateArray())
        {
            var (l, r) = m.ValueKind == JsonValueKind.Array ? (m[0].GetString() ?? "", m[1].GetString() ?? "")
                : SplitMerge(path, m.GetString() ?? throw new InvalidDataException($"'{path}': a merge is null (expected \"left right\" or [left, right])."));
            if (l.Contains(' ') || r.Contains(' '))
                throw new NotSupportedException($"'{path}': a merge holds a token with a space ('{l}' + '{r}'), which is not supported.");
            merges.Add($"{l} {r}");
        }
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
        bool fuseUnk = model.TryGetProperty("fuse_unk", out var fu) && fu.ValueKind == JsonValueKind.True;

        ITokenizerModel tokModel;
        if (byteLevel)
        {
            var kind = ignoreMerges ? "byte-level BPE, ignore_merges (tokenizer.json, LLaMA-3 style)" : "byte-level BPE (tokenizer.json)";
            tokModel = new ByteLevelBpeModel(vocab, merges, pipeline, ignoreMerges, unk, kind);
        }
        else
        {
            if (ignoreMerges)
                throw new NotSupportedException($"'{path}': ignore_merges is only supported for byte-level BPE.");
            tokModel = new MetaspaceBpeModel(vocab, merges, pipeline, byteFallback, unk, fuseUnk, LeadingSpaceOf(decoder),
                DecoderHas(decoder, "ByteFallback"));
        }

        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
            foreach (var a in at.EnumerateArray())
                added.Add(TokenizerConfigFiles.ParseAddedToken(a, TokenId(a.GetProperty("id").GetInt32(), path, "an added token")));

        var (prefix, suffix) = ParsePostProcessor(Opt(root, "post_processor"), path);
        PaddingSide? padSide = Opt(root, "padding") is { } pad && pad.TryGetProperty("direction", out var dir)
            ? (dir.GetString() == "Left" ? PaddingSide.Left : PaddingSide.Right) : null;

        return new Parts(tokModel, added, prefix, suffix, padSide, path);
    }

    static Parts FromVocabAndMerges(string vocabPath, string mergesPath, TokenizerConfigFiles cfg)
    {
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath))
                    ?? throw new InvalidDataException($"'{vocabPath}' holds null, not a JSON object of token → id.");
            foreach (var (token, id) in vocab) TokenId(id, vocabPath, $"token '{token}'");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{vocabPath}' is not a JSON object of token → id: {e.Message}", e);
        }
        var merges = File.ReadLines(mergesPath)
            .Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
        try
        {
            var model = new ByteLevelBpeModel(vocab, merges, TextPipeline.Gpt2ByteLevel(cfg.AddPrefixSpace), false, cfg.UnkToken,
                "byte-level BPE (vocab.json + merges.txt)");
            return new Parts(model, [], null, null, null, vocabPath);
        }
        catch (Exception e) when (IsMalformed(e))
        {
            throw new InvalidDataException($"'{vocabPath}' and '{mergesPath}' do not form a BPE vocabulary ({e.Message}).", e);
        }
    }

    // TemplateProcessing "single": [SpecialToken..., Sequence A, SpecialToken...]; Bert/Roberta: cls A sep.
    static (int[]? Prefix, int[]? Suffix) ParsePostProcessor(JsonElement? pp, string path)
    {
        if (pp is not { } p) return (null, null);
        var type = p.GetProperty("type").GetString();
        switch (type)
        {
            case "ByteLevel":
                return (null, null);
            case "Sequence":
                int[]? pre = null, suf = null;
                foreach (var inner in p.GetProperty("processors").EnumerateArray())
                {
                    var (a, b) = ParsePostProcessor(inner, path);
                    if (a is not null) pre = [.. pre ?? [], .. a];
                    if (b is not null) suf = [.. suf ?? [], .. b];
                }
                return (pre, suf);
            case "TemplateProcessing":
                var specials = p.GetProperty("special_tokens");
                var prefix = new List<int>();
                var suffix = new List<int>();
                bool seenA = false;
                foreach (var item in p.GetProperty("single").EnumerateArray())
                {
                    if (item.TryGetProperty("Sequence", out _)) { seenA = true; continue; }
                    var id = item.GetProperty("SpecialToken").GetProperty("id").GetString()!;
                    var ids = specials.GetProperty(id).GetProperty("ids").EnumerateArray().Select(x => TokenId(x.GetInt32(), path, $"post_processor token '{id}'"));
                    (seenA ? suffix : prefix).AddRange(ids);
                }
                return (prefix.ToArray(), suffix.ToArray());
            case "BertProcessing":
            case "RobertaProcessing":
                return ([TokenId(p.GetProperty("cls")[1].GetInt32(), path, "post_processor cls")], [TokenId(p.GetProperty("sep")[1].GetInt32(), path, "post_processor sep")]);
            default:
                throw new NotSupportedException(
                    $"'{path}': post_processor type '{type}' is not supported (supported: TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing).");
        }
    }

    static (string, string) SplitMerge(string path, string merge)
    {
        int i = merge.IndexOf(' ');
        return i <= 0 ? throw new InvalidDataException($"'{path}': bad merge entry '{merge}' (expected \"left right\").") : (merge[..i], merge[(i + 1)..]);
    }

    // decoder of the given type, directly or inside a Sequence.
    static bool DecoderHas(JsonElement? decoder, string type)
    {
        if (decoder is not { ValueKind: JsonValueKind.Object } d) return false;
        if (d.TryGetProperty("type", out var t) && t.GetString() == type) return true;
        return d.TryGetProperty("decoders", out var list) && list.EnumerateArray().Any(x => DecoderHas(x, type));
    }

    // LLaMA decoder: Sequence[Replace, ByteFallback, Fuse, Strip(start=1)]; Metaspace decoder: prepend_scheme != never.
    static LeadingSpace LeadingSpaceOf(JsonElement? decoder)
    {
        if (decoder is not { ValueKind: JsonValueKind.Object } d) return LeadingSpace.Keep;
        var type = d.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type == "Strip")
            return d.TryGetProperty("start", out var st) && st.GetInt32() > 0 ? LeadingSpace.StripOne : LeadingSpace.Keep;
        if (type == "Metaspace")
        {
            bool prepends = d.TryGetProperty("prepend_scheme", out var ps) ? ps.GetString() != "never"
                : !d.TryGetProperty("add_prefix_space", out var aps) || aps.ValueKind != JsonValueKind.False;
            return prepends ? LeadingSpace.DropInFirstToken : LeadingSpace.Keep;
        }
        if (d.TryGetProperty("decoders", out var list))
            foreach (var x in list.EnumerateArray())
                if (LeadingSpaceOf(x) is var l && l != LeadingSpace.Keep) return l;
        return LeadingSpace.Keep;
    }

    static JsonElement? Opt(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    /// <summary><paramref name="id"/> if it is a valid token id (non-negative); <paramref name="what"/> names it in the error.</summary>
    internal static int TokenId(int id, string path, string what) =>
        id >= 0 ? id : throw new InvalidDataException($"'{path}': {what} has id {id}; token ids must be non-negative.");

    /// <summary>What a field of the wrong kind, a missing key or an inconsistent vocabulary throws from deep inside a reader
    /// (System.Text.Json's GetProperty/GetInt32/GetString, Microsoft.ML.Tokenizers' BPE constructor).</summary>
    internal static bool IsMalformed(Exception e) => e is KeyNotFoundException or InvalidOperationException or FormatException
        or IndexOutOfRangeException or ArgumentException or OverflowException or InvalidCastException;

    /// <summary>A clear error for a file whose content is malformed, keeping the reader's own words.</summary>
    internal static InvalidDataException Malformed(string path, Exception e) =>
        new($"'{path}' is malformed or damaged and cannot be read as a tokenizer ({e.GetType().Name}: {e.Message}).", e);

    static JsonDocument ParseJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e); }
    }
}
