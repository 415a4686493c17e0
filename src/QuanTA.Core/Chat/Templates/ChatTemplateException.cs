namespace QuanTA.Core.Chat;

/// <summary>
/// A chat template could not be loaded, parsed or rendered. <see cref="Line"/> and <see cref="Column"/> (1-based) point
/// into the template text when the problem has a place there.
/// </summary>
public class ChatTemplateException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ChatTemplateException(string message, Exception? inner = null) : base(message, inner) { }

    internal ChatTemplateException(string templateName, string reason, int line, int column, Exception? inner = null)
        : this($"Chat template '{templateName}', line {line}, column {column}: {reason}", templateName, reason, line, column, inner)
    {
    }

    internal ChatTemplateException(string message, string templateName, string reason, int line, int column, Exception? inner)
        : base(message, inner)
    {
        TemplateName = templateName;
        Reason = reason;
        Line = line;
        Column = column;
    }

    /// <summary>The template's name (built-in name, file path, or "inline template"); null when not known.</summary>
    public string? TemplateName { get; }

    /// <summary>The problem without the template name and position.</summary>
    public string? Reason { get; }

    /// <summary>1-based line in the template text, or null.</summary>
    public int? Line { get; }

    /// <summary>1-based column in the template text, or null.</summary>
    public int? Column { get; }
}

/// <summary>The template text is not valid (or uses a Jinja feature this evaluator does not support).</summary>
public sealed class ChatTemplateSyntaxException : ChatTemplateException
{
    internal ChatTemplateSyntaxException(string templateName, string reason, int line, int column)
        : base(templateName, reason, line, column) { }
}

/// <summary>
/// The template itself rejected the conversation by calling <c>raise_exception(message)</c> (e.g. LLaMA-2's "Conversation
/// roles must alternate user/assistant/user/assistant/..."). <see cref="TemplateMessage"/> is the template's text.
/// </summary>
public sealed class ChatTemplateRefusedException : ChatTemplateException
{
    internal ChatTemplateRefusedException(string templateName, string templateMessage, int line, int column)
        : base($"Chat template '{templateName}' refused the conversation: {templateMessage} " +
               $"(raise_exception at line {line}, column {column} of the template)", templateName, templateMessage, line, column, null)
    {
        TemplateMessage = templateMessage;
    }

    /// <summary>The message the template passed to <c>raise_exception</c>.</summary>
    public string TemplateMessage { get; }
}
