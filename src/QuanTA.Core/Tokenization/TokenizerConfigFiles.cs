using System.Text.Json;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// What the small JSON files of a Hugging Face folder say about special tokens: <c>tokenizer_config.json</c>,
/// <c>special_tokens_map.json</c>, <c>config.json</c> and <c>generation_config.json</c>. Missing files are skipped.
/// </summary>
internal sealed class TokenizerConfigFiles
{
    /// <summary>bos/eos/pad/unk token strings (tokenizer_config.json, else special_tokens_map.json).</summary>
    public string? BosToken, EosToken, PadToken, UnkToken;

    /// <summary><c>add_bos_token</c> / <c>add_eos_token</c> of tokenizer_config.json, null when absent.</summary>
    public bool? AddBosToken, AddEosToken;

    /// <summary><c>add_prefix_space</c> of tokenizer_config.json (used for bare vocab.json + merges.txt).</summary>
    public bool AddPrefixSpace;

    /// <summary><c>padding_side</c> / <c>truncation_side</c> of tokenizer_config.json, null when absent.</summary>
    public PaddingSide? PaddingSide;

    /// <inheritdoc cref="PaddingSide"/>
    public TruncationSide? TruncationSide;

    /// <summary><c>clean_up_tokenization_spaces</c> (default false, as in transformers 5).</summary>
    public bool CleanUpTokenizationSpaces;

    /// <summary>Token ids from config.json and generation_config.json (generation_config wins).</summary>
    public int? BosTokenId, PadTokenId;

    /// <summary>eos ids from config.json / generation_config.json (a list in LLaMA-3 instruct models).</summary>
    public List<int> EosTokenIds = new();

    /// <summary><c>added_tokens_decoder</c> of tokenizer_config.json.</summary>
    public List<AddedToken> AddedTokensDecoder = new();

    /// <summary>Reads whatever of the four files exists in <paramref name="dir"/>.</summary>
    /// <exception cref="InvalidDataException">a file is not valid JSON or has a field of the wrong kind (the message names it).</exception>
    public static TokenizerConfigFiles Read(string dir)
    {
        var c = new TokenizerConfigFiles();
        foreach (var name in new[] { "config.json", "generation_config.json" })
            ReadFile(Path.Combine(dir, name), root =>
            {
                if (TryInts(root, "bos_token_id") is [var bos, ..]) c.BosTokenId = bos;
                if (TryInts(root, "pad_token_id") is [var pad, ..]) c.PadTokenId = pad;
                if (TryInts(root, "eos_token_id") is { Count: > 0 } eos) c.EosTokenIds = eos;
            });
        ReadFile(Path.Combine(dir, "special_tokens_map.json"), c.ReadTokenStrings);
        ReadFile(Path.Combine(dir, "tokenizer_config.json"), root =>
        {
            c.ReadTokenStrings(root);
            c.AddBosToken = TryBool(root, "add_bos_token");
            c.AddEosToken = TryBool(root, "add_eos_token");
            c.AddPrefixSpace = TryBool(root, "add_prefix_space") ?? false;
            c.CleanUpTokenizationSpaces = TryBool(root, "clean_up_tokenization_spaces") ?? false;
            c.PaddingSide = TryString(root, "padding_side") switch
            {
                "left" => Tokenization.PaddingSide.Left, "right" => Tokenization.PaddingSide.Right, _ => null,
            };
            c.TruncationSide = TryString(root, "truncation_side") switch
            {
                "left" => Tokenization.TruncationSide.Left, "right" => Tokenization.TruncationSide.Right, _ => null,
            };
            if (root.TryGetProperty("added_tokens_decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
                foreach (var p in dec.EnumerateObject())
                    c.AddedTokensDecoder.Add(ParseAddedToken(p.Value, TokenizerLoader.TokenId(int.Parse(p.Name, System.Globalization.CultureInfo.InvariantCulture),
                        "tokenizer_config.json", "added_tokens_decoder entry")));
        });
        return c;
    }

    /// <summary>Parses <paramref name="path"/> if it exists and hands its root to <paramref name="read"/>; a field of the wrong
    /// kind becomes an <see cref="InvalidDataException"/> naming the file.</summary>
    static void ReadFile(string path, Action<JsonElement> read)
    {
        using var doc = TryParse(path);
        if (doc is null) return;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"'{path}' holds a JSON {doc.RootElement.ValueKind}, not an object.");
        try { read(doc.RootElement); }
        catch (Exception e) when (TokenizerLoader.IsMalformed(e)) { throw TokenizerLoader.Malformed(path, e); }
    }

    /// <summary>Parses one added-token object (<c>content</c>, <c>special</c>, <c>lstrip</c>, ...).</summary>
    public static AddedToken ParseAddedToken(JsonElement e, int id) => new(
        id,
        e.GetProperty("content").GetString() ?? "",
        TryBool(e, "special") ?? false,
        TryBool(e, "lstrip") ?? false,
        TryBool(e, "rstrip") ?? false,
        TryBool(e, "single_word") ?? false);

    void ReadTokenStrings(JsonElement root)
    {
        BosToken = TokenString(root, "bos_token") ?? BosToken;
        EosToken = TokenString(root, "eos_token") ?? EosToken;
        PadToken = TokenString(root, "pad_token") ?? PadToken;
        UnkToken = TokenString(root, "unk_token") ?? UnkToken;
    }

    // "bos_token": "<s>"  or  {"__type": "AddedToken", "content": "<s>", ...}  or  null
    static string? TokenString(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var v)) return null;
        return v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object when v.TryGetProperty("content", out var c) => c.GetString(),
            _ => null,
        };
    }

    static JsonDocument? TryParse(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path),
                new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    static bool? TryBool(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    static string? TryString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    static List<int>? TryInts(JsonElement e, string name)
    {
        if (!e.TryGetProperty(name, out var v)) return null;
        // A negative id means "none" (original LLaMA configs have pad_token_id: -1): left out, as if absent.
        if (v.ValueKind == JsonValueKind.Number) return v.GetInt32() is var id and >= 0 ? [id] : null;
        if (v.ValueKind == JsonValueKind.Array)
            return v.EnumerateArray().Where(x => x.ValueKind == JsonValueKind.Number).Select(x => x.GetInt32()).Where(id => id >= 0).ToList();
        return null;
    }
}
