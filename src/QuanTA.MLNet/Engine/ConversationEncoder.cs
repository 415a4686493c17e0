using QuanTA.Core.Chat;

namespace QuanTA.MLNet.Engine;

/// <summary>
/// Turns a conversation into token ids with the model's chat template, as TRL's <c>SFTTrainer</c> does with
/// <c>apply_chat_template</c>: the rendering is tokenized whole without adding special tokens (the template writes bos
/// itself), and for training every assistant turn — its content and the template's end-of-turn text — carries the loss.
/// Over the token budget the oldest exchanges are dropped first (system prompt kept): the fewest that make it fit, found by
/// a binary search over the number dropped (O(log n) renderings of an n-exchange history, not n; dropping an exchange never
/// lengthens a rendering). Only a single exchange that still does not fit is cut token-wise, and every such row is
/// reported as truncated.
/// </summary>
internal sealed class ConversationEncoder
{
    readonly ITextTokenizer _tokenizer;
    readonly int _maxLength;

    public ConversationEncoder(ITextTokenizer tokenizer, ChatTemplate template, int maxLength)
    {
        _tokenizer = tokenizer; Template = template; _maxLength = maxLength;
    }

    /// <summary>The chat template in use.</summary>
    public ChatTemplate Template { get; }

    /// <summary>A training row: the whole conversation, loss on every assistant turn. Needs at least one assistant turn.</summary>
    public EncodedRow EncodeForTraining(IReadOnlyList<ChatTurn> conversation)
    {
        if (!conversation.Any(t => t.IsAssistant))
            throw new InvalidDataException("The conversation has no assistant turn to learn from.");
        var (ids, rendered, k) = FewestDrops(conversation.ToList(), keepLastAssistant: true, _maxLength, t =>
        {
            var r = Template.RenderForTraining(t);
            return (_tokenizer.Encode(r.Text, addSpecialTokens: false), r);        // the rendering is kept for the loss mask
        });
        var mask = LossMask(rendered, ids);
        if (ids.Length <= _maxLength) return new EncodedRow(ids, 0, k > 0, mask);
        // One exchange over budget: keep the end (the answer), as the prompt/target path does.
        return new EncodedRow(ids[^_maxLength..], 0, true, mask[^_maxLength..]);
    }

    /// <summary>An inference prompt: the conversation (for evaluation rows, up to its trailing assistant turn) rendered with
    /// the generation prompt, in at most <paramref name="maxPromptTokens"/> tokens (default: the budget less one, leaving
    /// room for at least one new token). <c>Truncated</c> tells that old exchanges were dropped or the prompt was cut.</summary>
    /// <param name="conversation">The messages.</param>
    /// <param name="maxPromptTokens">Token budget of the prompt.</param>
    /// <param name="dropTrailingAssistant">True for evaluation rows, whose trailing assistant turn is the reference answer;
    /// false for a chat request, whose messages are all history.</param>
    public EncodedRow EncodePrompt(IReadOnlyList<ChatTurn> conversation, int? maxPromptTokens = null, bool dropTrailingAssistant = true)
    {
        var turns = conversation.ToList();
        while (dropTrailingAssistant && turns.Count > 0 && turns[^1].IsAssistant) turns.RemoveAt(turns.Count - 1);
        if (turns.Count == 0) throw new InvalidDataException("The conversation has no message before its assistant turn to answer.");
        int room = Math.Max(1, maxPromptTokens ?? _maxLength - 1);
        var (ids, _, k) = FewestDrops(turns, keepLastAssistant: false, room, t => (_tokenizer.Encode(Template.Render(t, addGenerationPrompt: true), addSpecialTokens: false), 0));
        return ids.Length <= room ? new EncodedRow(ids, ids.Length, k > 0) : new EncodedRow(ids[^room..], room, true);
    }

    /// <summary>
    /// The encoding of the conversation with the fewest oldest exchanges dropped that fits <paramref name="budget"/> tokens
    /// (or with every droppable exchange dropped when none fits), what <paramref name="encode"/> made beside the ids, and the
    /// number dropped. Binary search over that number: each probe drops the exchanges from a copy and encodes it once.
    /// </summary>
    static (int[] Ids, T State, int Dropped) FewestDrops<T>(List<ChatTurn> turns, bool keepLastAssistant, int budget, Func<List<ChatTurn>, (int[] Ids, T State)> encode)
    {
        var best = encode(turns);
        if (best.Ids.Length <= budget) return (best.Ids, best.State, 0);
        int most = 0;
        for (var probe = new List<ChatTurn>(turns); TryDropOldestExchange(probe, keepLastAssistant);) most++;
        if (most == 0) return (best.Ids, best.State, 0);
        List<ChatTurn> Dropping(int k) { var t = new List<ChatTurn>(turns); for (int i = 0; i < k; i++) TryDropOldestExchange(t, keepLastAssistant); return t; }
        best = encode(Dropping(most));
        if (best.Ids.Length > budget) return (best.Ids, best.State, most);       // nothing fits: the caller cuts tokens
        int lo = 0, hi = most;                                                   // fits(hi), !fits(lo)
        while (hi - lo > 1)
        {
            int mid = (lo + hi) / 2;
            var e = encode(Dropping(mid));
            if (e.Ids.Length <= budget) { hi = mid; best = e; } else lo = mid;
        }
        return (best.Ids, best.State, hi);
    }

    /// <summary>
    /// Drops the oldest exchange: the first non-system message and everything up to the next user message, so the
    /// conversation still starts with a user turn after the system prompt (templates such as LLaMA-2's require it).
    /// False when nothing can be dropped without losing the last exchange.
    /// </summary>
    static bool TryDropOldestExchange(List<ChatTurn> turns, bool keepLastAssistant)
    {
        int first = turns.FindIndex(t => t.Role != ChatTurn.SystemRole);
        if (first < 0) return false;
        int next = turns.FindIndex(first + 1, t => t.Role == ChatTurn.UserRole);
        if (next < 0) return false;
        if (keepLastAssistant && !turns.Skip(next).Any(t => t.IsAssistant)) return false;
        turns.RemoveRange(first, next - first);
        return true;
    }

    /// <summary>
    /// Token-level loss mask from the character spans of the assistant turns: a span [s, e) covers the tokens from the
    /// boundary of text[..s] to the boundary of text[..e]. A boundary is where tokenizing the text up to it stops agreeing
    /// with the tokens of the whole text (exact when the boundary falls between tokens, as it does at special tokens).
    /// </summary>
    bool[] LossMask(RenderedConversation rendered, int[] ids)
    {
        var mask = new bool[ids.Length];
        foreach (var span in rendered.AssistantSpans)
        {
            int from = Boundary(rendered.Text[..span.Start], ids);
            int to = Boundary(rendered.Text[..(span.Start + span.Length)], ids);
            for (int i = from; i < to; i++) mask[i] = true;
        }
        return mask;
    }

    int Boundary(string prefix, int[] ids)
    {
        var p = _tokenizer.Encode(prefix, addSpecialTokens: false);
        int n = Math.Min(p.Length, ids.Length), k = 0;
        while (k < n && p[k] == ids[k]) k++;
        return k;
    }
}
