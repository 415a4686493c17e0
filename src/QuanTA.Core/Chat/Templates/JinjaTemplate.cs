namespace QuanTA.Core.Chat.Templates;

/// <summary>
/// A parsed Jinja template (the subset chat templates use). Immutable; <see cref="Render"/> may be called concurrently.
/// </summary>
internal sealed class JinjaTemplate
{
    readonly IReadOnlyList<Stmt> _body;

    JinjaTemplate(string name, IReadOnlyList<Stmt> body)
    {
        Name = name;
        _body = body;
    }

    /// <summary>The name used in error messages.</summary>
    public string Name { get; }

    /// <summary>Parses <paramref name="text"/>; syntax errors are <see cref="ChatTemplateSyntaxException"/>s with line and column.</summary>
    public static JinjaTemplate Parse(string text, string name)
    {
        try
        {
            return new JinjaTemplate(name, JinjaParser.Parse(text));
        }
        catch (JinjaSyntaxError e)
        {
            throw new ChatTemplateSyntaxException(name, e.Message, e.Line, e.Column);
        }
    }

    /// <summary>Renders with the given variables (values in the evaluator's model: string, long, bool, List, JinjaDict, ...).</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables, TimeProvider? clock = null) =>
        new JinjaEvaluator(Name, clock ?? TimeProvider.System).Render(_body, variables);
}
