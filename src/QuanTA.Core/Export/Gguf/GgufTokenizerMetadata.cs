using System.Text.Json.Nodes;

namespace QuanTA.Core.Export.Gguf;

/// <summary>
/// The <c>tokenizer.ggml.*</c> metadata of a Hugging Face folder, built the way llama.cpp's <c>convert_hf_to_gguf.py</c> and
/// gguf-py's <c>SpecialVocab</c> build it:
/// <list type="bullet">
/// <item>a SentencePiece <c>tokenizer.model</c> → model <c>llama</c>, pre <c>default</c>: pieces, scores and piece types from the
/// model; <c>added_tokens_decoder</c> entries of tokenizer_config.json override them (control if special, else user-defined,
/// score −1000); ids up to <c>vocab_size</c> are padded with <c>[PADi]</c> (score −10000, unused);</item>
/// <item>a byte-level BPE <c>tokenizer.json</c> → model <c>gpt2</c>: tokens by id (<c>[PADi]</c>/unused for holes), types normal /
/// control (added and special, or looking special like <c>&lt;|…|&gt;</c>) / user-defined, merges as <c>"a b"</c>, and
/// <c>pre</c> named after the pre-tokenizer (GPT-2 regex → <c>gpt-2</c>, LLaMA-3's → <c>llama-bpe</c>, Qwen2's → <c>qwen2</c>);</item>
/// <item>a SentencePiece-style BPE <c>tokenizer.json</c> (byte fallback) without tokenizer.model → model <c>llama</c> as gguf-py's
/// <c>LlamaHfVocab</c> lists it, except that scores are −id (sentencepiece's BPE order) instead of its −1000 placeholder,
/// which would leave llama.cpp's SentencePiece merger without priorities.</item>
/// </list>
/// Special ids come from tokenizer_config.json's token strings looked up in tokenizer.json's added tokens, then from
/// config.json's <c>*_token_id</c>; <c>add_bos_token</c>/<c>add_eos_token</c> from the post-processor template and
/// tokenizer_config.json; the chat template from tokenizer_config.json, else <c>chat_template.jinja</c>.
/// </summary>
public static class GgufTokenizerMetadata
{
    /// <summary>GGUF token types (llama.cpp's <c>llama_token_type</c>).</summary>
    internal const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    const string Gpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    const string Llama3Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const string Qwen2Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

    /// <summary>
    /// Builds the tokenizer metadata of <paramref name="modelDir"/> for a model with <paramref name="vocabSize"/> embedding rows.
    /// </summary>
    /// <exception cref="FileNotFoundException">neither tokenizer.model nor tokenizer.json exists.</exception>
    /// <exception cref="NotSupportedException">a tokenizer kind or pre-tokenizer llama.cpp has no name for (the message says which).</exception>
    public static List<KeyValuePair<string, GgufValue>> Build(string modelDir, int vocabSize)
    {
        var kv = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue v) => kv.Add(new(key, v));
        int AddSentencePiece((List<string> Tokens, List<float> Scores, List<int> Types) vocab)   // model "llama": pieces, scores, types
        {
            Add("tokenizer.ggml.model", GgufValue.Str("llama"));
            Add("tokenizer.ggml.pre", GgufValue.Str("default"));
            Add("tokenizer.ggml.tokens", GgufValue.Array(vocab.Tokens));
            Add("tokenizer.ggml.scores", GgufValue.Array(vocab.Scores));
            Add("tokenizer.ggml.token_type", GgufValue.Array(vocab.Types));
            return vocab.Tokens.Count;
        }
        var tokJsonPath = Path.Combine(modelDir, "tokenizer.json");
        var tokJson = File.Exists(tokJsonPath) ? ParseObject(tokJsonPath) : null;
        var tokConfig = File.Exists(Path.Combine(modelDir, "tokenizer_config.json")) ? ParseObject(Path.Combine(modelDir, "tokenizer_config.json")) : null;
        var spmPath = Path.Combine(modelDir, "tokenizer.model");

        var n = vocabSize;
        if (File.Exists(spmPath))
        {
            n = AddSentencePiece(SentencePieceVocab(spmPath, tokConfig, vocabSize));
        }
        else if (tokJson is not null)
        {
            var model = tokJson["model"] as JsonObject ?? throw new NotSupportedException($"{tokJsonPath}: no \"model\" object.");
            var type = model["type"]?.GetValue<string>();
            var byteFallback = model["byte_fallback"]?.GetValue<bool>() ?? false;
            if (type != "BPE")
                throw new NotSupportedException($"{tokJsonPath}: GGUF export supports BPE tokenizers (byte-level or SentencePiece-style); this one is \"{type}\".");
            if (byteFallback)
            {
                n = AddSentencePiece(LlamaHfVocab(tokJson, tokConfig, vocabSize));
            }
            else
            {
                var (tokens, types) = Gpt2Vocab(tokJson, vocabSize, tokJsonPath);
                Add("tokenizer.ggml.model", GgufValue.Str("gpt2"));
                Add("tokenizer.ggml.pre", GgufValue.Str(PreTokenizerName(tokJson, tokJsonPath)));
                Add("tokenizer.ggml.tokens", GgufValue.Array(tokens));
                Add("tokenizer.ggml.token_type", GgufValue.Array(types));
                Add("tokenizer.ggml.merges", GgufValue.Array(Merges(model)));
            }
        }
        else throw new FileNotFoundException($"'{modelDir}' has neither tokenizer.model nor tokenizer.json; GGUF export needs the tokenizer.", tokJsonPath);

        AddSpecialTokens(kv, modelDir, tokJson, tokConfig, n);
        return kv;
    }

    static (List<string>, List<float>, List<int>) SentencePieceVocab(string spmPath, JsonObject? tokConfig, int vocabSize)
    {
        var pieces = SentencePieceModelFile.Read(spmPath);
        var tokens = Enumerable.Range(0, vocabSize).Select(i => $"[PAD{i}]").ToList();
        var scores = Enumerable.Repeat(-10000f, vocabSize).ToList();
        var types = Enumerable.Repeat(Unused, vocabSize).ToList();
        for (var i = 0; i < Math.Min(pieces.Count, vocabSize); i++)
            (tokens[i], scores[i], types[i]) = (pieces[i].Text, pieces[i].Score, pieces[i].Type);
        if (tokConfig?["added_tokens_decoder"] is JsonObject decoder)
            foreach (var (idText, entry) in decoder)
            {
                var id = int.Parse(idText, System.Globalization.CultureInfo.InvariantCulture);
                if (id >= vocabSize || entry is not JsonObject e) continue;
                var content = e["content"]!.GetValue<string>();
                var special = e["special"]?.GetValue<bool>() ?? false;
                (tokens[id], types[id], scores[id]) = special || LooksSpecial(content)
                    ? (content, Control, -1000f) : (content.Replace('\u2581', ' '), UserDefined, -1000f);
            }
        return (tokens, scores, types);
    }

    static (List<string>, List<float>, List<int>) LlamaHfVocab(JsonObject tokJson, JsonObject? tokConfig, int vocabSize)
    {
        var vocab = (JsonObject)tokJson["model"]!["vocab"]!;
        var baseSize = vocab.Count;
        var byId = new SortedDictionary<int, string>();
        foreach (var (tok, id) in vocab) byId[id!.GetValue<int>()] = tok;
        var added = AddedTokens(tokJson);
        var specialIds = added.Where(a => a.Special).Select(a => a.Id).ToHashSet();
        var tokens = new List<string>(); var scores = new List<float>(); var types = new List<int>();
        for (var id = 0; id < baseSize; id++)
        {
            var text = byId.TryGetValue(id, out var t) ? t : throw new InvalidDataException($"tokenizer.json: the vocabulary has no id {id} (ids must be 0..{baseSize - 1}).");
            tokens.Add(text);
            scores.Add(-id);
            types.Add(System.Text.RegularExpressions.Regex.IsMatch(text, "^<0x[0-9A-Fa-f]{2}>$") ? Byte : specialIds.Contains(id) ? Control : Normal);
        }
        foreach (var a in added.Where(a => a.Id >= baseSize).OrderBy(a => a.Id))
        {
            tokens.Add(a.Content); scores.Add(-1000f); types.Add(a.Special ? Control : UserDefined);
        }
        for (var i = tokens.Count; i < vocabSize; i++) { tokens.Add($"[PAD{i}]"); scores.Add(-1000f); types.Add(Unused); }
        return (tokens, scores, types);
    }

    static (List<string>, List<int>) Gpt2Vocab(JsonObject tokJson, int vocabSize, string source)
    {
        var byId = new Dictionary<int, string>();
        foreach (var (tok, id) in (JsonObject)tokJson["model"]!["vocab"]!) byId[id!.GetValue<int>()] = tok;
        var added = AddedTokens(tokJson).ToDictionary(a => a.Id);
        foreach (var a in added.Values) byId[a.Id] = a.Content;
        if (byId.Keys.Max() >= vocabSize)
            throw new InvalidDataException($"{source}: token id {byId.Keys.Max()} does not fit the model's vocab_size {vocabSize} (config.json).");
        var tokens = new List<string>(vocabSize); var types = new List<int>(vocabSize);
        for (var i = 0; i < vocabSize; i++)
        {
            if (!byId.TryGetValue(i, out var token)) { tokens.Add($"[PAD{i}]"); types.Add(Unused); continue; }
            if (added.TryGetValue(i, out var a))
            {
                if (a.Special || LooksSpecial(token)) types.Add(Control);
                else { token = token.Replace('\u2581', ' '); types.Add(UserDefined); }
            }
            else types.Add(Normal);
            tokens.Add(token);
        }
        return (tokens, types);
    }

    /// <summary>llama.cpp's name for the pre-tokenizer (the converter finds it by hashing; here it is read off tokenizer.json).</summary>
    static string PreTokenizerName(JsonObject tokJson, string source)
    {
        var pre = tokJson["pre_tokenizer"] as JsonObject;
        var steps = pre?["type"]?.GetValue<string>() == "Sequence" ? (pre["pretokenizers"] as JsonArray)!.OfType<JsonObject>().ToList()
            : pre is null ? [] : [pre];
        var byteLevel = steps.FirstOrDefault(s => s["type"]?.GetValue<string>() == "ByteLevel");
        var split = steps.FirstOrDefault(s => s["type"]?.GetValue<string>() == "Split");
        if (byteLevel is not null && (byteLevel["add_prefix_space"]?.GetValue<bool>() ?? false))
            throw new NotSupportedException($"{source}: a byte-level pre-tokenizer with add_prefix_space=true has no llama.cpp pre-tokenizer name; GGUF export cannot describe it.");
        var regex = split?["pattern"]?["Regex"]?.GetValue<string>();
        if (steps.Count == 1 && byteLevel is not null && (byteLevel["use_regex"]?.GetValue<bool>() ?? true)) return "gpt-2";
        if (steps.Count == 2 && byteLevel is not null && regex is not null)
        {
            if (regex == Llama3Regex) return "llama-bpe";
            if (regex == Qwen2Regex) return "qwen2";
            if (regex == Gpt2Regex) return "gpt-2";
        }
        throw new NotSupportedException($"{source}: the pre-tokenizer {pre?.ToJsonString() ?? "null"} is none that GGUF export can name " +
            "(supported: GPT-2 byte-level, LLaMA-3's and Qwen2's split regex followed by byte-level).");
    }

    static List<string> Merges(JsonObject model)
    {
        var merges = new List<string>();
        foreach (var m in model["merges"] as JsonArray ?? [])
            merges.Add(m is JsonArray pair
                ? string.Join(' ', pair.Select(p => new string(p!.GetValue<string>().Select(c => c == ' ' ? (char)(' ' + 256) : c).ToArray())))
                : m!.GetValue<string>());
        return merges;
    }

    static void AddSpecialTokens(List<KeyValuePair<string, GgufValue>> kv, string modelDir, JsonObject? tokJson, JsonObject? tokConfig, int nVocab)
    {
        var ids = new List<(string Type, int Id)>();
        void Set(string typ, int? id)
        {
            if (id is int i && i >= 0 && i < nVocab && !ids.Any(x => x.Type == typ)) ids.Add((typ, i));
        }
        var addFlags = new Dictionary<string, bool>();
        string[] types = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
        var added = tokJson is null ? [] : AddedTokens(tokJson);
        if (tokJson is not null)
        {
            string? Tok(string typ) => TokenString(tokConfig, typ);
            foreach (var processor in PostProcessors(tokJson))
            {
                if (processor["type"]?.GetValue<string>() != "TemplateProcessing" || processor["single"] is not JsonArray single || single.Count < 2) continue;
                if (single[0]?["SpecialToken"]?["id"]?.GetValue<string>() is string first)
                    addFlags["bos"] = first == Tok("bos") || first == Tok("cls");
                if (single[^1]?["SpecialToken"]?["id"]?.GetValue<string>() is string last)
                    addFlags["eos"] = last == Tok("eos");
            }
            if (tokConfig is not null)
                foreach (var typ in types)
                {
                    if (tokConfig[$"add_{typ}_token"] is JsonValue b && b.TryGetValue<bool>(out var flag)) addFlags[typ] = flag;
                    if (Tok(typ) is string content) Set(typ, added.FirstOrDefault(a => a.Content == content)?.Id);
                }
        }
        var config = File.Exists(Path.Combine(modelDir, "config.json")) ? ParseObject(Path.Combine(modelDir, "config.json")) : null;
        foreach (var typ in types)
            if (config?[$"{typ}_token_id"] is JsonValue v && v.TryGetValue<int>(out var id)) Set(typ, id);

        var keyNames = new Dictionary<string, string>
        {
            ["bos"] = "bos_token_id", ["eos"] = "eos_token_id", ["unk"] = "unknown_token_id", ["sep"] = "seperator_token_id",
            ["pad"] = "padding_token_id", ["cls"] = "cls_token_id", ["mask"] = "mask_token_id",
        };
        foreach (var (typ, id) in ids) kv.Add(new($"tokenizer.ggml.{keyNames[typ]}", GgufValue.U32((uint)id)));
        foreach (var typ in types)
            if (addFlags.TryGetValue(typ, out var flag) && typ is "bos" or "eos" or "sep")
                kv.Add(new($"tokenizer.ggml.add_{typ}_token", GgufValue.Bool(flag)));
        var template = tokConfig?["chat_template"] switch
        {
            JsonValue s when s.TryGetValue<string>(out var t) => t,
            JsonArray named => named.OfType<JsonObject>().FirstOrDefault(o => o["name"]?.GetValue<string>() == "default")?["template"]?.GetValue<string>(),
            _ => null,
        };
        var jinja = Path.Combine(modelDir, "chat_template.jinja");
        template ??= File.Exists(jinja) ? File.ReadAllText(jinja) : null;
        if (template is not null) kv.Add(new("tokenizer.chat_template", GgufValue.Str(template)));
    }

    static IEnumerable<JsonObject> PostProcessors(JsonObject tokJson) => tokJson["post_processor"] switch
    {
        JsonObject p when p["processors"] is JsonArray list => list.OfType<JsonObject>(),
        JsonObject p => [p],
        _ => [],
    };

    static string? TokenString(JsonObject? tokConfig, string typ) => tokConfig?[$"{typ}_token"] switch
    {
        JsonValue s when s.TryGetValue<string>(out var t) => t,
        JsonObject o => o["content"]?.GetValue<string>(),
        _ => null,
    };

    internal sealed record AddedToken(int Id, string Content, bool Special);

    static List<AddedToken> AddedTokens(JsonObject tokJson) => (tokJson["added_tokens"] as JsonArray ?? [])
        .OfType<JsonObject>()
        .Select(a => new AddedToken(a["id"]!.GetValue<int>(), a["content"]!.GetValue<string>(), a["special"]?.GetValue<bool>() ?? false))
        .ToList();

    /// <summary>convert_hf_to_gguf.py's <c>does_token_look_special</c>.</summary>
    internal static bool LooksSpecial(string t)
        => t is "<pad>" or "<mask>" or "<2mass>" or "[@BOS@]"
           || (t.StartsWith("<|", StringComparison.Ordinal) && t.EndsWith("|>", StringComparison.Ordinal))
           || (t.StartsWith("<\uFF5C", StringComparison.Ordinal) && t.EndsWith("\uFF5C>", StringComparison.Ordinal))
           || (t.StartsWith("<unused", StringComparison.Ordinal) && t.EndsWith('>'));

    static JsonObject ParseObject(string path)
    {
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"'{path}' is not a JSON object."); }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e); }
    }
}
