using System.Text.Json;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// Finds and reads the tokenizer files of a Hugging Face folder. Preference: a byte-level BPE <c>tokenizer.json</c>;
/// else <c>tokenizer.model</c> (SentencePiece); else <c>vocab.json</c> + <c>merges.txt</c> (GPT-2 byte-level BPE).
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
            var parts = FromTokenizerJson(doc.RootElement, json, File.Exists(spm) ? spm : null, out jsonNotUsable);
            if (parts is not null) return parts;
        }
        if (File.Exists(spm))
        {
            using var s = File.OpenRead(spm);
            ITokenizerModel model;
            try { model = new SentencePieceModel(s); }
            catch (Exception e) when (e is not IOException)
            {
                throw new NotSupportedException($"'{spm}' could not be read as a SentencePiece BPE model: {e.Message}", e);
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
        const string supported = "Supported: byte-level BPE tokenizer.json (GPT-2, LLaMA-3, Qwen2, ...), " +
                                 "SentencePiece tokenizer.model (LLaMA-2, Mistral), vocab.json + merges.txt.";
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
        var decoderType = Opt(root, "decoder") is { } d && d.TryGetProperty("type", out var dt) ? dt.GetString() : null;
        if (!pipeline.HasByteLevel && decoderType != "ByteLevel")
        {
            notUsable = $"'{path}' holds a BPE model without a ByteLevel pre-tokenizer (e.g. SentencePiece-style BPE), " +
                        $"which is not supported from tokenizer.json; put the model's tokenizer.model next to it. {supported}";
            if (spmPath is not null) return null;
            throw new NotSupportedException(notUsable);
        }
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
            throw new NotSupportedException($"'{path}': byte-level BPE with byte_fallback=true is not supported.");
        foreach (var name in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 })
                throw new NotSupportedException($"'{path}': BPE '{name}' is not supported for byte-level BPE.");

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in model.GetProperty("vocab").EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        var merges = new List<string>();
        foreach (var m in model.GetProperty("merges").EnumerateArray())
            merges.Add(m.ValueKind == JsonValueKind.Array ? $"{m[0].GetString()} {m[1].GetString()}" : m.GetString()!);
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;

        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
            foreach (var a in at.EnumerateArray())
                added.Add(TokenizerConfigFiles.ParseAddedToken(a, a.GetProperty("id").GetInt32()));

        var (prefix, suffix) = ParsePostProcessor(Opt(root, "post_processor"), path);
        PaddingSide? padSide = Opt(root, "padding") is { } pad && pad.TryGetProperty("direction", out var dir)
            ? (dir.GetString() == "Left" ? PaddingSide.Left : PaddingSide.Right) : null;

        var kind = ignoreMerges ? "byte-level BPE, ignore_merges (tokenizer.json, LLaMA-3 style)" : "byte-level BPE (tokenizer.json)";
        var bpe = new ByteLevelBpeModel(vocab, merges, pipeline, ignoreMerges, unk, kind);
        return new Parts(bpe, added, prefix, suffix, padSide, path);
    }

    static Parts FromVocabAndMerges(string vocabPath, string mergesPath, TokenizerConfigFiles cfg)
    {
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath))
                    ?? throw new InvalidDataException("empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{vocabPath}' is not a JSON object of token → id: {e.Message}", e);
        }
        var merges = File.ReadLines(mergesPath)
            .Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
        var model = new ByteLevelBpeModel(vocab, merges, TextPipeline.Gpt2ByteLevel(cfg.AddPrefixSpace), false, cfg.UnkToken,
            "byte-level BPE (vocab.json + merges.txt)");
        return new Parts(model, [], null, null, null, vocabPath);
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
                    var ids = specials.GetProperty(id).GetProperty("ids").EnumerateArray().Select(x => x.GetInt32());
                    (seenA ? suffix : prefix).AddRange(ids);
                }
                return (prefix.ToArray(), suffix.ToArray());
            case "BertProcessing":
            case "RobertaProcessing":
                return ([p.GetProperty("cls")[1].GetInt32()], [p.GetProperty("sep")[1].GetInt32()]);
            default:
                throw new NotSupportedException(
                    $"'{path}': post_processor type '{type}' is not supported (supported: TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing).");
        }
    }

    static JsonElement? Opt(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    static JsonDocument ParseJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e); }
    }
}
