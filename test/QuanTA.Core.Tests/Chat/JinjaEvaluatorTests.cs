using QuanTA.Core.Chat;
using QuanTA.Core.Chat.Templates;

namespace QuanTA.Core.Tests.Chat;

/// <summary>
/// The Jinja-subset evaluator on its own: constructs chat templates rely on, and the errors (with template line and
/// column) for bad or unsupported templates. Exact output parity with Jinja2 on many more constructs is in
/// ChatTemplateParityTests (the "engine" cases of references.json).
/// </summary>
public class JinjaEvaluatorTests
{
    static string Render(string template, params (string Name, object? Value)[] variables) =>
        JinjaTemplate.Parse(template, "test").Render(variables.ToDictionary(v => v.Name, v => v.Value));

    static JinjaDict Message(string role, string content)
    {
        var d = new JinjaDict();
        d.Set("role", role);
        d.Set("content", content);
        return d;
    }

    static readonly List<object?> Messages = [Message("system", "be brief"), Message("user", "hi"), Message("assistant", "hello")];

    [Fact]
    public void LoopsWithLoopVariablesElseAndFilter()
    {
        Assert.Equal("0:a(first) 1:b 2:c(last) ", Render("{% for x in xs %}{{ loop.index0 }}:{{ x }}{% if loop.first %}(first){% elif loop.last %}(last){% endif %} {% endfor %}",
            ("xs", new List<object?> { "a", "b", "c" })));
        Assert.Equal("none", Render("{% for x in [] %}{{ x }}{% else %}none{% endfor %}"));
        Assert.Equal("hi/2 hello/2 ", Render("{% for m in messages if m.role != 'system' %}{{ m.content }}/{{ loop.length }} {% endfor %}", ("messages", Messages)));
        Assert.Equal("0 1 2 ", Render("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{{ i }} {% endfor %}"));
    }

    [Fact]
    public void NamespaceCarriesStateOutOfALoopButSetDoesNot()
    {
        const string template = "{% set ns = namespace(system='') %}{% set plain = 'outer' %}{% for m in messages %}" +
                                "{% if m['role'] == 'system' %}{% set ns.system = m.content %}{% set plain = 'inner' %}{% endif %}{% endfor %}" +
                                "{{ ns.system }}|{{ plain }}";
        Assert.Equal("be brief|outer", Render(template, ("messages", Messages)));
    }

    [Fact]
    public void SlicesNegativeIndexesMethodsAndFilters()
    {
        Assert.Equal("2 hello assistant", Render("{{ messages[1:]|length }} {{ messages[-1].content }} {{ (messages|last)['role'] }}", ("messages", Messages)));
        Assert.Equal("b|A B|x,y|True", Render("{{ ' a b '.split()[1] }}|{{ 'a b'|title|upper }}|{{ ['x', 'y']|join(',') }}|{{ 'abc'.startswith('a') }}"));
        Assert.Equal("{\"a\": [1, \"é\"]}", Render("{{ {'a': [1, 'é']}|tojson }}"));
        Assert.Equal("user", Render("{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='role')|first }}", ("messages", Messages)));
    }

    [Fact]
    public void UndefinedPrintsEmptyIsFalsyAndFailsOnlyWhenUsedFurther()
    {
        Assert.Equal("[]False0", Render("[{{ nothing }}]{{ nothing is defined }}{{ nothing|length }}"));
        Assert.Equal("[]", Render("[{{ messages[0].missing }}]", ("messages", Messages)));
        var e = Assert.Throws<ChatTemplateException>(() => Render("{{ nothing.attr }}"));
        Assert.Equal("'nothing' is undefined", e.Reason);
        e = Assert.Throws<ChatTemplateException>(() => Render("\n  {{ messages[0].missing.deeper }}", ("messages", Messages)));
        Assert.Equal("'dict object' has no attribute 'missing'", e.Reason);
        Assert.Equal(2, e.Line);
    }

    [Fact]
    public void RaiseExceptionRefusesWithTheTemplatesMessage()
    {
        var e = Assert.Throws<ChatTemplateRefusedException>(() => Render("ok\n{% if true %}{{ raise_exception('No system role here!') }}{% endif %}"));
        Assert.Equal("No system role here!", e.TemplateMessage);
        Assert.Equal(2, e.Line);
        Assert.Equal(17, e.Column);
        Assert.Contains("Chat template 'test' refused the conversation: No system role here!", e.Message);
    }

    [Fact]
    public void StrftimeNowReadsTheInjectedClock()
    {
        var clock = new ChatReferences.FixedClock(new DateTime(2025, 1, 2, 15, 4, 5));
        var template = ChatTemplate.FromString("{{ strftime_now('%d %b %Y, %H:%M (%A)') }}", null, null).WithClock(clock);
        Assert.Equal("02 Jan 2025, 15:04 (Thursday)", template.Render([], false));
        Assert.Same(clock, template.Clock);
    }

    [Theory]
    [InlineData("line 1\n{% for x in %}{% endfor %}", 2, 13, "Expected an expression, got 'end of statement block'")]
    [InlineData("{{ x | nosuchfilter }}", 1, 8, "No filter named 'nosuchfilter'.")]
    [InlineData("{% if x is nosuchtest %}{% endif %}", 1, 12, "No test named 'nosuchtest'.")]
    [InlineData("a\n\n   {% include 'other.jinja' %}", 3, 7, "the 'include' tag is not supported by this chat-template evaluator (a Jinja subset for chat templates)")]
    [InlineData("{{ x | truncate(5) }}", 1, 8, "the filter 'truncate' is not supported by this chat-template evaluator (a Jinja subset for chat templates)")]
    [InlineData("{% for x in y %}{% endif %}", 1, 20, "Encountered unknown tag 'endif'. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'.")]
    [InlineData("{% if x %}\nnever closed", 2, 13, "Unexpected end of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.")]
    [InlineData("{% break %}", 1, 4, "'break' outside of a for loop")]
    [InlineData("{{ 'unterminated }}", 1, 4, "unterminated string literal")]
    [InlineData("{{ a ! b }}", 1, 6, "unexpected char '!'")]
    [InlineData("{# never closed", 1, 1, "Missing end of comment tag")]
    [InlineData("{{ (1, 2 }}", 1, 10, "unexpected '}', expected ')'")]
    public void SyntaxErrorsNameTheProblemAndItsPosition(string template, int line, int column, string reason)
    {
        var e = Assert.Throws<ChatTemplateSyntaxException>(() => JinjaTemplate.Parse(template, "bad.jinja"));
        Assert.Equal(reason, e.Reason);
        Assert.Equal((line, column), (e.Line, e.Column));
        Assert.Equal($"Chat template 'bad.jinja', line {line}, column {column}: {reason}", e.Message);
    }

    [Theory]
    [InlineData("{{ 1 + 'a' }}", 1, 6, "unsupported operand type(s) for +: 'int' and 'str'")]
    [InlineData("x\n  {{ messages.append(1) }}", 2, 14, "access to attribute 'append' of 'list' object is unsafe.")]
    [InlineData("{% set d = {} %}{% set d.x = 1 %}", 1, 20, "cannot assign attribute on non-namespace object")]
    [InlineData("{% for a, b in [1] %}{% endfor %}", 1, 4, "'int' object is not iterable")]
    [InlineData("{{ 1 // 0 }}", 1, 6, "integer division or modulo by zero")]
    [InlineData("{{ range(1000000)|length }}", 1, 4, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")]
    public void RuntimeErrorsNameTheProblemAndItsPosition(string template, int line, int column, string reason)
    {
        var e = Assert.Throws<ChatTemplateException>(() => Render(template, ("messages", new List<object?>())));
        Assert.Equal(reason, e.Reason);
        Assert.Equal((line, column), (e.Line, e.Column));
    }

    [Fact]
    public void ATemplateRendersTheSameOnManyThreads()
    {
        var info = ChatReferences.Templates["qwen2.5"];
        var template = ChatTemplate.FromString(info.Text, info.BosToken, info.EosToken);
        var conversation = ChatReferences.Get("qwen2.5|multi-turn|agp=True");
        var results = new string[64];
        Parallel.For(0, results.Length, i => results[i] = template.Render(conversation.Messages, conversation.AddGenerationPrompt));
        Assert.All(results, r => Assert.Equal(conversation.Expected, r));
    }
}
