using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace QuanTA.Core.Tokenization;

/// <summary>
/// The normalizer and pre-tokenizer of a tokenizer.json, rebuilt from its JSON: normalization, then splitting of a
/// plain-text piece into the words that BPE merges within. Immutable; safe for concurrent use.
/// </summary>
internal sealed class TextPipeline
{
    /// <summary>GPT-2's split pattern, used by the ByteLevel pre-tokenizer when <c>use_regex</c> is true.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    readonly List<Func<string, string>> _normalizers = new();
    readonly List<Func<string, bool, IEnumerable<string>>> _splitters = new();

    /// <summary>True when a ByteLevel pre-tokenizer was found (the model then works on byte-level characters).</summary>
    public bool HasByteLevel { get; private set; }

    /// <summary>True when a Metaspace pre-tokenizer was found (SentencePiece-style "▁" words).</summary>
    public bool HasMetaspace { get; private set; }

    /// <summary>The regex patterns used for splitting, outermost first (for diagnostics and tests).</summary>
    public List<string> Patterns { get; } = new();

    /// <summary>Builds the pipeline from the <c>normalizer</c> and <c>pre_tokenizer</c> objects (either may be null).</summary>
    public static TextPipeline FromJson(JsonElement? normalizer, JsonElement? preTokenizer)
    {
        var p = new TextPipeline();
        if (normalizer is { ValueKind: JsonValueKind.Object } n) p.AddNormalizer(n);
        if (preTokenizer is { ValueKind: JsonValueKind.Object } t) p.AddPreTokenizer(t);
        return p;
    }

    /// <summary>The GPT-2 byte-level pipeline used for a bare vocab.json + merges.txt pair.</summary>
    public static TextPipeline Gpt2ByteLevel(bool addPrefixSpace)
    {
        var p = new TextPipeline { HasByteLevel = true };
        if (addPrefixSpace) p._splitters.Add(PrefixSpace);
        p.AddRegexSplit(Gpt2Pattern, "Isolated");
        return p;
    }

    /// <summary>Normalizes a plain-text piece.</summary>
    public string Normalize(string text)
    {
        foreach (var f in _normalizers) text = f(text);
        return text;
    }

    /// <summary>
    /// Splits a normalized plain-text piece into pre-tokens (words), applying every splitter in turn.
    /// <paramref name="atStart"/>: the piece begins the input (Metaspace <c>prepend_scheme: "first"</c> prepends "▁" only then).
    /// </summary>
    public List<string> PreTokenize(string text, bool atStart = true)
    {
        var words = new List<string> { text };
        foreach (var split in _splitters)
        {
            var next = new List<string>();
            for (int i = 0; i < words.Count; i++) next.AddRange(split(words[i], atStart && i == 0));
            words = next;
        }
        words.RemoveAll(w => w.Length == 0);
        return words;
    }

    void AddNormalizer(JsonElement n)
    {
        var type = n.GetProperty("type").GetString();
        switch (type)
        {
            case "Sequence":
                foreach (var inner in n.GetProperty("normalizers").EnumerateArray()) AddNormalizer(inner);
                break;
            case "NFC": _normalizers.Add(s => s.Normalize(NormalizationForm.FormC)); break;
            case "NFD": _normalizers.Add(s => s.Normalize(NormalizationForm.FormD)); break;
            case "NFKC": _normalizers.Add(s => s.Normalize(NormalizationForm.FormKC)); break;
            case "NFKD": _normalizers.Add(s => s.Normalize(NormalizationForm.FormKD)); break;
            case "Lowercase": _normalizers.Add(s => s.ToLowerInvariant()); break;
            case "Prepend":
                var prefix = n.GetProperty("prepend").GetString() ?? "";
                _normalizers.Add(s => s.Length == 0 ? s : prefix + s);
                break;
            case "Replace":
                var pattern = n.GetProperty("pattern");
                var content = n.GetProperty("content").GetString() ?? "";
                if (pattern.TryGetProperty("String", out var str))
                {
                    var from = str.GetString() ?? "";
                    _normalizers.Add(s => s.Replace(from, content, StringComparison.Ordinal));
                }
                else
                {
                    var rx = new Regex(pattern.GetProperty("Regex").GetString() ?? "", RegexOptions.CultureInvariant);
                    _normalizers.Add(s => rx.Replace(s, content));
                }
                break;
            default:
                throw new NotSupportedException(
                    $"tokenizer.json normalizer type '{type}' is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace).");
        }
    }

    void AddPreTokenizer(JsonElement t)
    {
        var type = t.GetProperty("type").GetString();
        switch (type)
        {
            case "Sequence":
                foreach (var inner in t.GetProperty("pretokenizers").EnumerateArray()) AddPreTokenizer(inner);
                break;
            case "ByteLevel":
                HasByteLevel = true;
                if (Bool(t, "add_prefix_space", false)) _splitters.Add(PrefixSpace);
                if (Bool(t, "use_regex", true)) AddRegexSplit(Gpt2Pattern, "Isolated");
                break;
            case "Metaspace":
                HasMetaspace = true;
                var replacement = t.TryGetProperty("replacement", out var rep) ? rep.GetString() ?? "\u2581" : "\u2581";
                // tokenizers >= 0.19: prepend_scheme always|first|never; older files: add_prefix_space true|false.
                var scheme = t.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind == JsonValueKind.String
                    ? ps.GetString() : Bool(t, "add_prefix_space", true) ? "always" : "never";
                bool splitWords = Bool(t, "split", true);
                _splitters.Add((s, atStart) => Metaspace(s, atStart, replacement, scheme!, splitWords));
                break;
            case "Split":
                if (Bool(t, "invert", false))
                    throw new NotSupportedException("tokenizer.json Split pre-tokenizer with invert=true is not supported.");
                var pattern = t.GetProperty("pattern");
                string regex = pattern.TryGetProperty("Regex", out var r)
                    ? r.GetString() ?? ""
                    : Regex.Escape(pattern.GetProperty("String").GetString() ?? "");
                AddRegexSplit(regex, t.GetProperty("behavior").GetString() ?? "Isolated");
                break;
            default:
                throw new NotSupportedException(
                    $"tokenizer.json pre_tokenizer type '{type}' is not supported (supported: Sequence, ByteLevel, Split, Metaspace).");
        }
    }

    static bool Bool(JsonElement e, string name, bool fallback) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    // HF ByteLevel(add_prefix_space=true): a space is prepended unless the text already starts with one.
    static IEnumerable<string> PrefixSpace(string s, bool atStart) => [s.StartsWith(' ') ? s : " " + s];

    // HF Metaspace: spaces become the replacement ("▁"), which is prepended (unless already there) always, or only to
    // the piece that begins the input ("first"); with split, every "▁" starts a new word (MergedWithNext).
    static IEnumerable<string> Metaspace(string s, bool atStart, string replacement, string scheme, bool split)
    {
        if (s.Length == 0) return [s];
        s = s.Replace(" ", replacement, StringComparison.Ordinal);
        if ((scheme == "always" || (scheme == "first" && atStart)) && !s.StartsWith(replacement, StringComparison.Ordinal))
            s = replacement + s;
        if (!split) return [s];
        var words = new List<string>();
        int start = 0;
        for (int i = s.IndexOf(replacement, 1, StringComparison.Ordinal); i > 0 && i < s.Length;
             i = s.IndexOf(replacement, i + replacement.Length, StringComparison.Ordinal))
        {
            words.Add(s[start..i]);
            start = i;
        }
        words.Add(s[start..]);
        return words;
    }

    void AddRegexSplit(string pattern, string behavior)
    {
        // The patterns of LLaMA-3 / Qwen2 / GPT-2 (\p{L}, \p{N}, (?i:...), lookahead) mean the same in .NET as in the
        // Rust regex engine, except that .NET matches UTF-16 code units: letters outside the BMP are not \p{L}.
        var rx = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);
        Patterns.Add(pattern);
        _splitters.Add(behavior switch
        {
            "Isolated" => (s, _) => SplitIsolated(rx, s, keepMatches: true),
            "Removed" => (s, _) => SplitIsolated(rx, s, keepMatches: false),
            _ => throw new NotSupportedException(
                $"tokenizer.json Split behavior '{behavior}' is not supported (supported: Isolated, Removed)."),
        });
    }

    // Every match is a piece; the text between matches is a piece too (HF SplitDelimiterBehavior::Isolated).
    static IEnumerable<string> SplitIsolated(Regex rx, string s, bool keepMatches)
    {
        int last = 0;
        for (var m = rx.Match(s); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            if (m.Index > last) yield return s[last..m.Index];
            if (keepMatches) yield return m.Value;
            last = m.Index + m.Length;
        }
        if (last < s.Length) yield return s[last..];
    }
}
