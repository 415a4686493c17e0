namespace QuanTA.Core.Tokenization;

/// <summary>
/// A token added on top of the model vocabulary (<c>added_tokens</c> of tokenizer.json, <c>added_tokens_decoder</c> of
/// tokenizer_config.json): matched verbatim in the input text before normalization and pre-tokenization.
/// </summary>
/// <param name="Id">Token id.</param>
/// <param name="Content">The exact text of the token, e.g. <c>&lt;|endoftext|&gt;</c>.</param>
/// <param name="Special">Special tokens are dropped by <see cref="HfTokenizer.Decode"/> when skipping special tokens.</param>
/// <param name="LStrip">The match swallows whitespace on its left.</param>
/// <param name="RStrip">The match swallows whitespace on its right.</param>
/// <param name="SingleWord">Only matched when not inside a word.</param>
public sealed record AddedToken(int Id, string Content, bool Special, bool LStrip = false, bool RStrip = false, bool SingleWord = false);

/// <summary>
/// Splits text into pieces that are either an added token (its id) or ordinary text, like the AddedVocabulary of
/// Hugging Face tokenizers: at each position the longest added token that matches wins (leftmost-longest).
/// Immutable once built, so safe for concurrent use.
/// </summary>
internal sealed class AddedTokenSplitter
{
    readonly AddedToken[] _byLengthDesc;
    readonly Dictionary<char, AddedToken[]> _byFirstChar;

    public AddedTokenSplitter(IEnumerable<AddedToken> tokens)
    {
        _byLengthDesc = tokens.Where(t => t.Content.Length > 0)
            .OrderByDescending(t => t.Content.Length).ThenBy(t => t.Id).ToArray();
        _byFirstChar = _byLengthDesc.GroupBy(t => t.Content[0]).ToDictionary(g => g.Key, g => g.ToArray());
    }

    /// <summary>A piece of split text: an added token (<see cref="Token"/> set) or plain text to be tokenized by the
    /// model; <see cref="Start"/> is its offset in the input.</summary>
    public readonly record struct Piece(string Text, AddedToken? Token, int Start);

    /// <summary>Splits <paramref name="text"/> into plain-text pieces and added tokens, in order; empty plain pieces are dropped.</summary>
    public List<Piece> Split(string text)
    {
        var pieces = new List<Piece>();
        if (_byLengthDesc.Length == 0) { if (text.Length > 0) pieces.Add(new Piece(text, null, 0)); return pieces; }
        int plainStart = 0, i = 0;
        while (i < text.Length)
        {
            var match = MatchAt(text, i);
            if (match is null) { i++; continue; }
            int start = i, end = i + match.Content.Length;
            if (match.LStrip) while (start > plainStart && char.IsWhiteSpace(text[start - 1])) start--;
            if (match.RStrip) while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > plainStart) pieces.Add(new Piece(text[plainStart..start], null, plainStart));
            pieces.Add(new Piece(match.Content, match, i));
            plainStart = i = end;
        }
        if (plainStart < text.Length) pieces.Add(new Piece(text[plainStart..], null, plainStart));
        return pieces;
    }

    AddedToken? MatchAt(string text, int i)
    {
        if (!_byFirstChar.TryGetValue(text[i], out var candidates)) return null;
        foreach (var t in candidates) // longest first
        {
            if (i + t.Content.Length > text.Length || string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) != 0) continue;
            if (t.SingleWord && !IsWordBoundary(text, i, i + t.Content.Length)) continue;
            return t;
        }
        return null;
    }

    static bool IsWordBoundary(string text, int start, int end)
    {
        static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';
        return (start == 0 || !IsWordChar(text[start - 1])) && (end == text.Length || !IsWordChar(text[end]));
    }
}
