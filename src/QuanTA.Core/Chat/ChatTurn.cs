namespace QuanTA.Core.Chat;

/// <summary>
/// One message of a conversation as chat templates see it: <c>{"role": ..., "content": ...}</c>. Roles are the strings the
/// model's template knows (<c>system</c>, <c>user</c>, <c>assistant</c>, sometimes <c>tool</c>).
/// </summary>
public sealed record ChatTurn(string Role, string Content)
{
    /// <summary>The role name used for the model's own turns (the ones training puts loss on).</summary>
    public const string AssistantRole = "assistant";
    /// <summary>The role name of the user.</summary>
    public const string UserRole = "user";
    /// <summary>The role name of the system prompt.</summary>
    public const string SystemRole = "system";

    /// <summary>True for an assistant turn.</summary>
    public bool IsAssistant => string.Equals(Role, AssistantRole, StringComparison.Ordinal);
}
