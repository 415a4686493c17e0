using QuanTA.Core.Chat;
using QuanTA.Core.Chat.Templates;

namespace QuanTA.Core.Tests.Chat;

/// <summary>
/// Exact parity with Jinja2 (rendering as transformers' apply_chat_template does) on the references made by
/// tools/chat/make_chat_references.py: every built-in template (and a LLaMA-3.3-style template with tools) on each
/// reference conversation with and without the generation prompt, and the evaluator cases (one Jinja construct each).
/// </summary>
public partial class ChatTemplateParityTests
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

    /// <summary>
    /// Differential test: several hundred random expressions (tools/chat/chat_fuzz_cases.py, fixed seed) over a few
    /// variables print exactly what Jinja2 prints, and fail exactly where Jinja2 fails.
    /// </summary>
    [Fact]
    public void RandomExpressionsMatchJinja2()
    {
        var root = ChatReferences.Load("references.json")!.Value;
        var variables = ChatReferences.Variables(root.GetProperty("fuzz_variables"));
        var failures = new List<string>();
        int count = 0;
        foreach (var c in root.GetProperty("fuzz_cases").EnumerateArray())
        {
            count++;
            string expr = c.GetProperty("expression").GetString()!;
            // Python prints iterators with their memory address ("<generator object x at 0x7f...>"): compare without it.
            string? expected = c.TryGetProperty("expected", out var e) ? MemoryAddress().Replace(e.GetString()!, "") : null;
            string actual;
            try
            {
                actual = JinjaTemplate.Parse("{{ " + expr + " }}", "fuzz").Render(variables);
            }
            catch (ChatTemplateException ex)
            {
                if (expected is not null) failures.Add($"{expr}\n  Jinja2: {expected}\n  here:   error {ex.Reason}");
                continue;
            }
            actual = MemoryAddress().Replace(actual, "");
            if (expected is null) failures.Add($"{expr}\n  Jinja2: {c.GetProperty("error_type").GetString()}\n  here:   {actual}");
            else if (expected != actual) failures.Add($"{expr}\n  Jinja2: {expected}\n  here:   {actual}");
        }
        Assert.True(count > 100);
        Assert.True(failures.Count == 0, $"{failures.Count} of {count} differ:\n" + string.Join("\n", failures));
    }

    /// <summary>
    /// Differential test of whitespace control: random templates mixing text (spaces, tabs, newlines, CRLF), tags with
    /// "-" / "+" modifiers, comments, raw blocks and nested if/for blocks render exactly as with Jinja2
    /// (trim_blocks + lstrip_blocks, as transformers configures it).
    /// </summary>
    [Fact]
    public void RandomWhitespaceControlMatchesJinja2()
    {
        var root = ChatReferences.Load("references.json")!.Value;
        var failures = new List<string>();
        int count = 0;
        foreach (var c in root.GetProperty("whitespace_cases").EnumerateArray())
        {
            count++;
            string template = c.GetProperty("template").GetString()!;
            string? expected = c.TryGetProperty("expected", out var e) ? e.GetString() : null;
            string actual;
            try
            {
                actual = JinjaTemplate.Parse(template, "whitespace").Render(new Dictionary<string, object?>());
            }
            catch (ChatTemplateException ex)
            {
                if (expected is not null) failures.Add($"{Show(template)}\n  Jinja2: {Show(expected)}\n  here:   error {ex.Message}");
                continue;
            }
            if (expected != actual) failures.Add($"{Show(template)}\n  Jinja2: {(expected is null ? "error" : Show(expected))}\n  here:   {Show(actual)}");
        }
        Assert.True(count > 100);
        Assert.True(failures.Count == 0, $"{failures.Count} of {count} differ:\n" + string.Join("\n", failures));
    }

    static string Show(string s) => System.Text.Json.JsonSerializer.Serialize(s);

    [System.Text.RegularExpressions.GeneratedRegex(" at 0x[0-9a-f]+", System.Text.RegularExpressions.RegexOptions.IgnoreCase)]
    private static partial System.Text.RegularExpressions.Regex MemoryAddress();
}
