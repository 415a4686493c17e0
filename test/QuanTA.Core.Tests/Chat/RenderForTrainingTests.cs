using QuanTA.Core.Chat;

namespace QuanTA.Core.Tests.Chat;

/// <summary>
/// RenderForTraining: the spans of assistant turns cover exactly each answer as the template renders it plus the
/// template's end-of-turn text, found by incremental rendering; AssistantTurnSuffix / GenerationPrompt probes.
/// </summary>
public class RenderForTrainingTests
{
    static readonly ChatTurn[] MultiTurn = ChatReferences.Get("llama2|multi-turn|agp=False").Messages;

    static ChatTemplate BuiltIn(string name)
    {
        var info = ChatReferences.Templates[name];
        return ChatTemplate.FromString(info.Text, info.BosToken, info.EosToken, name);
    }

    // How each template writes an assistant turn (content as rendered + end of turn).
    public static TheoryData<string, string, string> Expectations => new()
    {
        { "llama2", "trim-leading-space", " </s>" },
        { "mistral", "raw", "</s> " },
        { "llama3", "trim", "<|eot_id|>" },
        { "qwen2", "raw", "<|im_end|>\n" },
        { "qwen2.5", "raw", "<|im_end|>\n" },
        { "llama3.3", "trim", "<|eot_id|>" },
    };

    [Theory]
    [MemberData(nameof(Expectations))]
    public void SpansCoverEachAnswerAndItsEndOfTurn(string name, string contentForm, string endOfTurn)
    {
        var template = BuiltIn(name);
        var rendered = template.RenderForTraining(MultiTurn);

        Assert.Equal(template.Render(MultiTurn, addGenerationPrompt: false), rendered.Text);
        Assert.Equal(ChatReferences.Get($"{name}|multi-turn|agp=False").Expected, rendered.Text);
        var assistants = MultiTurn.Select((m, i) => (m, i)).Where(x => x.m.IsAssistant).ToList();
        Assert.Equal(assistants.Select(x => x.i), rendered.AssistantSpans.Select(s => s.MessageIndex));
        Assert.Equal(endOfTurn, template.AssistantTurnSuffix);
        int previousEnd = 0;
        foreach (var (span, (message, _)) in rendered.AssistantSpans.Zip(assistants))
        {
            string content = contentForm switch
            {
                "trim" => message.Content.Trim(),
                "trim-leading-space" => " " + message.Content.Trim(),
                _ => message.Content,
            };
            Assert.Equal(content + endOfTurn, rendered.Text.Substring(span.Start, span.Length));
            Assert.True(span.Start >= previousEnd, "spans are ordered and do not overlap");
            previousEnd = span.End;
        }
        // Outside the spans there is no assistant text: every span starts right after the template's prompt part.
        var outside = string.Concat(rendered.Text.Select((c, i) => rendered.AssistantSpans.Any(s => i >= s.Start && i < s.End) ? '\0' : c));
        foreach (var (message, _) in assistants) Assert.DoesNotContain(message.Content.Trim(), outside);
    }

    [Theory]
    [InlineData("llama2", "")]
    [InlineData("mistral", "")]
    [InlineData("llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n")]
    [InlineData("qwen2", "<|im_start|>assistant\n")]
    [InlineData("qwen2.5", "<|im_start|>assistant\n")]
    public void GenerationPromptIsWhatAddGenerationPromptAppends(string name, string expected) =>
        Assert.Equal(expected, BuiltIn(name).GenerationPrompt);

    [Fact]
    public void SpansOfAConversationWithSystemPromptAndUnicode()
    {
        var messages = ChatReferences.Get("qwen2|unicode-newlines|agp=False").Messages;
        var rendered = BuiltIn("qwen2").RenderForTraining(messages);
        var span = Assert.Single(rendered.AssistantSpans);
        Assert.Equal(messages[1].Content + "<|im_end|>\n", rendered.Text.Substring(span.Start, span.Length));
        Assert.Equal(rendered.Text.Length, span.End);
    }

    [Fact]
    public void NoAssistantTurnsGiveNoSpans()
    {
        var rendered = BuiltIn("llama3").RenderForTraining([new ChatTurn("user", "only a question")]);
        Assert.Empty(rendered.AssistantSpans);
        Assert.Equal("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nonly a question<|eot_id|>", rendered.Text);
    }

    [Fact]
    public void ATemplateThatRendersEarlierTurnsDependingOnLaterOnesIsReported()
    {
        // Marks the final message differently: a prefix rendering is then not a prefix of the whole conversation.
        var template = ChatTemplate.FromString(
            "{% for m in messages %}{{ m.role }}: {{ m.content }}{{ ' (final)' if loop.last }}\n{% endfor %}", null, null, "marks-last");
        var e = Assert.Throws<ChatTemplateException>(() => template.RenderForTraining(MultiTurn));
        Assert.Contains("'marks-last'", e.Message);
        Assert.Contains("assistant turn 1", e.Message);
        Assert.Contains("not a prefix", e.Message);
    }

    [Fact]
    public void Qwen3StyleReasoningTemplatesAreReportedNotMislocated()
    {
        // Qwen3's template drops <think> blocks from assistant turns before the last user question, so the first
        // answer renders differently once a later question follows: incremental rendering must refuse, not guess.
        var reasoning = ChatReferences.Get("qwen3|reasoning|agp=False").Messages;
        var e = Assert.Throws<ChatTemplateException>(() => BuiltIn("qwen3").RenderForTraining(reasoning));
        Assert.Contains("'qwen3'", e.Message);
        Assert.Contains("assistant turn 1", e.Message);
        // Without reasoning in earlier turns only the last answer carries the (empty) think block, and it is located.
        var single = ChatReferences.Get("qwen3|system-prompt|agp=False").Messages;
        var rendered = BuiltIn("qwen3").RenderForTraining(single);
        var span = Assert.Single(rendered.AssistantSpans);
        Assert.Equal("<think>\n\n</think>\n\nRed.<|im_end|>\n", rendered.Text.Substring(span.Start, span.Length));
    }

    [Fact]
    public void ARefusedConversationIsReportedAsARefusal()
    {
        var nonAlternating = ChatReferences.Get("llama2|non-alternating|agp=False").Messages;
        var e = Assert.Throws<ChatTemplateRefusedException>(() => BuiltIn("llama2").RenderForTraining(nonAlternating));
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", e.TemplateMessage);
        Assert.Contains("'llama2' refused the conversation", e.Message);
    }
}
