using QuanTA.Core.Chat;
using QuanTA.Core.Chat.Templates;

namespace QuanTA.Core.Tests.Chat;

/// <summary>
/// Exact parity with Jinja2 (rendering as transformers' apply_chat_template does) on the references made by
/// tools/chat/make_chat_references.py: every built-in template (and a LLaMA-3.3-style template with tools) on each
/// reference conversation with and without the generation prompt, and the evaluator cases (one Jinja construct each).
/// </summary>
public class ChatTemplateParityTests
{
    public static TheoryData<string> CaseIds => new(ChatReferences.Cases.Select(c => c.Id));

    public static TheoryData<string> EngineCaseNames => new(ChatReferences.EngineCases.Select(c => c.Name));

    [Theory]
    [MemberData(nameof(CaseIds))]
    public void RenderMatchesJinja2(string id)
    {
        var c = ChatReferences.Get(id);
        var info = ChatReferences.Templates[c.Template];
        var template = ChatTemplate.FromString(info.Text, info.BosToken, info.EosToken, c.Template);
        if (c.Expected is not null)
        {
            Assert.Equal(c.Expected, template.Render(c.Messages, c.AddGenerationPrompt));
            return;
        }
        // Jinja2 raised: raise_exception in the template is a refusal with the template's own message.
        var e = Assert.ThrowsAny<ChatTemplateException>(() => template.Render(c.Messages, c.AddGenerationPrompt));
        if (c.ErrorType == "TemplateError")
        {
            var refused = Assert.IsType<ChatTemplateRefusedException>(e);
            Assert.Equal(c.Error, refused.TemplateMessage);
            Assert.Contains(c.Template, refused.Message);
        }
    }

    [Fact]
    public void ReferencesCoverEveryBuiltInTemplate()
    {
        var covered = ChatReferences.Templates.Values.Select(t => Path.GetFileNameWithoutExtension(t.File)).ToHashSet();
        foreach (var name in ChatTemplates.Names.Where(n => n != ChatTemplates.ChatML))
            Assert.Contains(name, covered);
        Assert.Equal(ChatTemplates.GetText(ChatTemplates.Qwen2), ChatTemplates.GetText(ChatTemplates.ChatML));
        // The refused cases are there too (LLaMA-2 and Mistral reject non-alternating roles, Mistral v0.1 a system turn).
        Assert.Contains(ChatReferences.Cases, c => c.Template == "llama2" && c.ErrorType == "TemplateError");
        Assert.Contains(ChatReferences.Cases, c => c.Template == "mistral" && c.Conversation == "system-prompt" && c.ErrorType == "TemplateError");
    }

    [Theory]
    [MemberData(nameof(EngineCaseNames))]
    public void EngineCaseMatchesJinja2(string name)
    {
        var c = ChatReferences.EngineCases.Single(x => x.Name == name);
        string Render() => JinjaTemplate.Parse(c.Template, name).Render(ChatReferences.Variables(c.Variables), ChatReferences.ReferenceClock);
        if (c.Expected is not null)
        {
            Assert.Equal(c.Expected, Render());
            return;
        }
        var e = Assert.ThrowsAny<ChatTemplateException>(Render);
        switch (c.ErrorType)
        {
            case "TemplateError":
                Assert.Equal(c.Error, Assert.IsType<ChatTemplateRefusedException>(e).TemplateMessage);
                break;
            case "TemplateSyntaxError" or "TemplateAssertionError":
                Assert.IsType<ChatTemplateSyntaxException>(e);
                Assert.Equal(c.Error, e.Reason);
                break;
            default:
                Assert.Equal(c.Error, e.Reason);
                break;
        }
    }
}
