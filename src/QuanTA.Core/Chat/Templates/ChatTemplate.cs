using QuanTA.Core.Chat.Templates;

namespace QuanTA.Core.Chat;

/// <summary>An assistant turn's place in a rendered conversation: <c>Text.Substring(Start, Length)</c>.</summary>
/// <param name="MessageIndex">Index of the assistant message in the conversation.</param>
/// <param name="Start">Offset of the turn's first character (in UTF-16 units of <see cref="RenderedConversation.Text"/>).</param>
/// <param name="Length">Length of the turn: the content as the template renders it plus its end-of-turn text.</param>
public readonly record struct AssistantSpan(int MessageIndex, int Start, int Length)
{
    /// <summary>Offset just after the turn.</summary>
    public int End => Start + Length;
}

/// <summary>A conversation rendered for training: the whole text and where each assistant turn is in it.</summary>
/// <param name="Text">The conversation as the template renders it (no generation prompt).</param>
/// <param name="AssistantSpans">One span per assistant message, in order.</param>
public sealed record RenderedConversation(string Text, IReadOnlyList<AssistantSpan> AssistantSpans);

/// <summary>
/// A model's chat template (a Jinja template, rendered exactly as Hugging Face transformers'
/// <c>apply_chat_template</c> renders it: Jinja2 with <c>trim_blocks</c>, <c>lstrip_blocks</c>, loop controls,
/// <c>raise_exception</c>, <c>strftime_now</c> and transformers' <c>tojson</c>; the variables are <c>messages</c>,
/// <c>add_generation_prompt</c>, the special tokens (<c>bos_token</c>, <c>eos_token</c>, ...) and <c>tools</c> /
/// <c>documents</c> = None).
/// </summary>
/// <remarks>Immutable: the template is parsed once, and <see cref="Render"/> / <see cref="RenderForTraining"/> may be called concurrently.</remarks>
public sealed partial class ChatTemplate
{
    const string ProbeUser = "QuanTA probe question";
    const string ProbeAssistant = "QuanTAProbeAssistantReply";

    readonly JinjaTemplate _template;
    readonly IReadOnlyDictionary<string, string> _specialTokens;
    readonly Lazy<string> _assistantTurnSuffix, _generationPrompt;

    ChatTemplate(string text, string name, IReadOnlyDictionary<string, string> specialTokens, TimeProvider clock, JinjaTemplate? parsed = null)
    {
        Text = text;
        Name = name;
        _specialTokens = specialTokens;
        Clock = clock;
        _template = parsed ?? JinjaTemplate.Parse(text, name);
        _assistantTurnSuffix = new Lazy<string>(FindAssistantTurnSuffix);
        _generationPrompt = new Lazy<string>(FindGenerationPrompt);
    }

    /// <summary>Where the template came from: a built-in name, a file path, "tokenizer_config.json of DIR", or "inline template".</summary>
    public string Name { get; }

    /// <summary>The template text.</summary>
    public string Text { get; }

    /// <summary>The <c>bos_token</c> string the template sees (undefined in the template when null).</summary>
    public string? BosToken => _specialTokens.GetValueOrDefault("bos_token");

    /// <summary>The <c>eos_token</c> string the template sees (undefined in the template when null).</summary>
    public string? EosToken => _specialTokens.GetValueOrDefault("eos_token");

    /// <summary>The clock <c>strftime_now</c> reads (the system clock unless replaced with <see cref="WithClock"/>).</summary>
    public TimeProvider Clock { get; }

    /// <summary>
    /// The text the template puts after an assistant message's content (e.g. <c>&lt;|eot_id|&gt;</c>,
    /// <c>&lt;|im_end|&gt;\n</c>, <c>" &lt;/s&gt;"</c>), found by rendering a one-question, one-answer probe conversation.
    /// </summary>
    public string AssistantTurnSuffix => _assistantTurnSuffix.Value;

    /// <summary>What <c>add_generation_prompt=True</c> appends after a user turn (e.g. <c>&lt;|im_start|&gt;assistant\n</c>; "" for LLaMA-2).</summary>
    public string GenerationPrompt => _generationPrompt.Value;

    /// <summary>A template from its text; <paramref name="bosToken"/> / <paramref name="eosToken"/> are left undefined when null.</summary>
    /// <exception cref="ChatTemplateSyntaxException">The text is not a valid template (or uses unsupported Jinja).</exception>
    public static ChatTemplate FromString(string template, string? bosToken, string? eosToken, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(template);
        var tokens = new Dictionary<string, string>(StringComparer.Ordinal);
        if (bosToken is not null) tokens["bos_token"] = bosToken;
        if (eosToken is not null) tokens["eos_token"] = eosToken;
        return new ChatTemplate(template, name ?? "inline template", tokens, TimeProvider.System);
    }

    /// <summary>The same template with <c>strftime_now</c> reading <paramref name="clock"/> (for reproducible renders).</summary>
    public ChatTemplate WithClock(TimeProvider clock) =>
        new(Text, Name, _specialTokens, clock ?? throw new ArgumentNullException(nameof(clock)), _template);

    /// <summary>Renders <paramref name="messages"/> as <c>tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)</c> does.</summary>
    /// <exception cref="ChatTemplateRefusedException">The template called <c>raise_exception</c> (e.g. roles do not alternate).</exception>
    /// <exception cref="ChatTemplateException">Rendering failed (the message gives the template line and column).</exception>
    public string Render(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = new List<object?>(messages.Count);
        foreach (var m in messages)
        {
            var d = new JinjaDict();
            d.Set("role", m.Role);
            d.Set("content", m.Content);
            list.Add(d);
        }
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = list,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["tools"] = null,
            ["documents"] = null,
        };
        foreach (var (k, v) in _specialTokens) variables[k] = v;
        return _template.Render(variables, Clock);
    }

    /// <summary>
    /// Renders the whole conversation (no generation prompt) and finds each assistant turn by incremental rendering:
    /// a turn starts where <c>messages[..i]</c> rendered with the generation prompt ends, and ends where
    /// <c>messages[..(i+1)]</c> rendered without it ends, so the span holds the content as rendered plus the
    /// template's end-of-turn text (e.g. <c>&lt;|eot_id|&gt;</c>, <c>&lt;|im_end|&gt;\n</c>, <c>" &lt;/s&gt;"</c>).
    /// </summary>
    /// <exception cref="ChatTemplateException">A partial rendering is not a prefix of the whole one (the template renders
    /// earlier turns differently depending on later ones), so the turns cannot be located this way.</exception>
    public RenderedConversation RenderForTraining(IReadOnlyList<ChatTurn> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        string full = Render(messages, addGenerationPrompt: false);
        var spans = new List<AssistantSpan>();
        for (int i = 0; i < messages.Count; i++)
        {
            if (!messages[i].IsAssistant) continue;
            string before = RenderPrefix(messages, i, addGenerationPrompt: true);
            string through = RenderPrefix(messages, i + 1, addGenerationPrompt: false);
            CheckPrefix(before, full, i, $"messages[0..{i}) with add_generation_prompt=true");
            CheckPrefix(through, full, i, $"messages[0..{i + 1}) without a generation prompt");
            if (through.Length < before.Length)
                throw new ChatTemplateException(
                    $"Chat template '{Name}': assistant turn {i} renders shorter than the generation prompt before it " +
                    $"(the template's generation prompt is not the start of an assistant turn), so the turn cannot be located.");
            spans.Add(new AssistantSpan(i, before.Length, through.Length - before.Length));
        }
        return new RenderedConversation(full, spans);
    }

    string RenderPrefix(IReadOnlyList<ChatTurn> messages, int count, bool addGenerationPrompt)
    {
        var prefix = messages.Take(count).ToList();
        try
        {
            return Render(prefix, addGenerationPrompt);
        }
        catch (ChatTemplateException e)
        {
            throw new ChatTemplateException(
                $"Chat template '{Name}': cannot locate assistant turn {count - (addGenerationPrompt ? 0 : 1)} because rendering the " +
                $"first {count} message(s) failed: {e.Message}", e);
        }
    }

    void CheckPrefix(string part, string full, int turn, string what)
    {
        if (full.StartsWith(part, StringComparison.Ordinal)) return;
        int at = 0;
        while (at < part.Length && at < full.Length && part[at] == full[at]) at++;
        throw new ChatTemplateException(
            $"Chat template '{Name}': rendering {what} is not a prefix of the rendered conversation (they differ from " +
            $"character {at}), so assistant turn {turn} cannot be located by incremental rendering. The template renders " +
            "earlier turns differently depending on what follows them (for example it drops reasoning from non-final turns).");
    }

    string FindAssistantTurnSuffix()
    {
        string text = Render([new ChatTurn(ChatTurn.UserRole, ProbeUser), new ChatTurn(ChatTurn.AssistantRole, ProbeAssistant)], false);
        int at = text.LastIndexOf(ProbeAssistant, StringComparison.Ordinal);
        if (at < 0)
            throw new ChatTemplateException($"Chat template '{Name}': the assistant's content does not appear in a rendered probe conversation, " +
                                            "so the end-of-turn text cannot be determined.");
        return text[(at + ProbeAssistant.Length)..];
    }

    string FindGenerationPrompt()
    {
        var probe = new[] { new ChatTurn(ChatTurn.UserRole, ProbeUser) };
        string with = Render(probe, true), without = Render(probe, false);
        if (!with.StartsWith(without, StringComparison.Ordinal))
            throw new ChatTemplateException($"Chat template '{Name}': the rendering with add_generation_prompt=true does not extend the one without it.");
        return with[without.Length..];
    }
}
