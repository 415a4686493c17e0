using System.Text.Json;

namespace QuanTA.Core.Chat;

/// <summary>
/// Turns one JSON record of a chat / instruction file into a <see cref="ChatExample"/>. Problems are thrown as
/// <see cref="InvalidDataException"/> whose message says what is wrong with which key; <see cref="ChatDataFile"/> puts the
/// file name and line in front.
/// </summary>
internal static class ChatRecords
{
    const string MessagesKey = "messages", ConversationsKey = "conversations";
    const string PromptKey = "prompt", CompletionKey = "completion";
    const string InstructionKey = "instruction", InputKey = "input", OutputKey = "output";

    /// <summary>What the file names its keys, for the message when a record matches no format.</summary>
    public const string ExpectedKeys =
        "\"messages\" (or \"conversations\"), \"prompt\" + \"completion\", or \"instruction\" + \"output\"";

    static readonly string[] KnownRoles = [ChatTurn.SystemRole, ChatTurn.UserRole, ChatTurn.AssistantRole, "tool"];

    /// <summary>ShareGPT's <c>from</c> names and the roles they stand for.</summary>
    static readonly Dictionary<string, string> ShareGptRoles = new(StringComparer.Ordinal)
    {
        ["human"] = ChatTurn.UserRole, ["gpt"] = ChatTurn.AssistantRole, ["system"] = ChatTurn.SystemRole,
    };

    /// <summary>
    /// The formats whose required keys <paramref name="record"/> has (usually one; none when it fits no format). Extra keys
    /// are allowed: a record with <c>messages</c> and a <c>prompt</c> string (UltraChat) is a conversation.
    /// </summary>
    public static List<ChatDataFormat> Matches(JsonElement record)
    {
        var found = new List<ChatDataFormat>(1);
        if (Has(record, MessagesKey) || Has(record, ConversationsKey)) found.Add(ChatDataFormat.Messages);
        if (Has(record, PromptKey) && Has(record, CompletionKey)) found.Add(ChatDataFormat.PromptCompletion);
        if (Has(record, InstructionKey) && Has(record, OutputKey)) found.Add(ChatDataFormat.Alpaca);
        return found;
    }

    /// <summary>Reads <paramref name="record"/> (a JSON object) as <paramref name="format"/>.</summary>
    public static ChatExample ToExample(JsonElement record, ChatDataFormat format, int lineNumber) => format switch
    {
        ChatDataFormat.Messages => FromMessages(record, lineNumber),
        ChatDataFormat.PromptCompletion => FromPromptCompletion(record, lineNumber),
        ChatDataFormat.Alpaca => FromAlpaca(record, lineNumber),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "Auto is resolved before records are read."),
    };

    static ChatExample FromMessages(JsonElement record, int lineNumber)
    {
        bool shareGpt = !record.TryGetProperty(MessagesKey, out var list);
        if (shareGpt && !record.TryGetProperty(ConversationsKey, out list))
            throw Bad($"has no {Q(MessagesKey)} (or {Q(ConversationsKey)})");
        string name = Q(shareGpt ? ConversationsKey : MessagesKey);
        if (list.ValueKind != JsonValueKind.Array) throw Bad($"{name} must be an array, not {Kind(list)}");
        var turns = ReadTurns(list, name, shareGpt, strict: true);
        var last = turns.LastOrDefault(t => t.IsAssistant)
                   ?? throw Bad($"{name} has no assistant turn (nothing to learn)");
        return new ChatExample(lineNumber, turns, "", last.Content);
    }

    static ChatExample FromPromptCompletion(JsonElement record, int lineNumber)
    {
        string prompt = RequiredString(record, PromptKey, "");
        string completion = RequiredString(record, CompletionKey, "");
        if (string.IsNullOrWhiteSpace(completion)) throw Bad($"{Q(CompletionKey)} is empty");
        return new ChatExample(lineNumber, Pair(prompt, completion), prompt, completion);
    }

    static ChatExample FromAlpaca(JsonElement record, int lineNumber)
    {
        string instruction = RequiredString(record, InstructionKey, "");
        string? input = null;
        if (record.TryGetProperty(InputKey, out var inputValue) && inputValue.ValueKind != JsonValueKind.Null)
            input = inputValue.ValueKind == JsonValueKind.String
                ? inputValue.GetString()
                : throw Bad($"{Q(InputKey)} must be a string, not {Kind(inputValue)}");
        string output = RequiredString(record, OutputKey, "");
        if (string.IsNullOrWhiteSpace(output)) throw Bad($"{Q(OutputKey)} is empty");
        return new ChatExample(lineNumber, Pair(AlpacaPrompt.UserTurn(instruction, input), output),
            AlpacaPrompt.Build(instruction, input), output);
    }

    /// <summary>
    /// Reads an array of turns: <c>{"role", "content"}</c> objects, or ShareGPT <c>{"from", "value"}</c> ones when
    /// <paramref name="shareGpt"/> (mapped to user / assistant / system). <paramref name="strict"/> (training data) also
    /// rejects unknown roles and empty assistant turns. <paramref name="name"/> names the array in messages.
    /// </summary>
    public static List<ChatTurn> ReadTurns(JsonElement list, string name, bool shareGpt, bool strict)
    {
        string roleKey = shareGpt ? "from" : "role", contentKey = shareGpt ? "value" : "content";
        var turns = new List<ChatTurn>(list.GetArrayLength());
        foreach (var item in list.EnumerateArray())
        {
            string at = $"{name}[{turns.Count}]";
            if (item.ValueKind != JsonValueKind.Object) throw Bad($"{at} must be an object, not {Kind(item)}");
            string role = RequiredString(item, roleKey, at);
            string content = RequiredString(item, contentKey, at);
            if (role.Length == 0) throw Bad($"{at} has an empty {Q(roleKey)}");
            if (shareGpt)
                role = ShareGptRoles.TryGetValue(role, out var mapped) ? mapped
                    : throw Bad($"{at} has unknown {Q(roleKey)} {Q(role)} (expected human, gpt or system)");
            if (strict && !KnownRoles.Contains(role))
                throw Bad($"{at} has unknown {Q(roleKey)} {Q(role)} (expected {string.Join(", ", KnownRoles)})");
            if (strict && role == ChatTurn.AssistantRole && string.IsNullOrWhiteSpace(content))
                throw Bad($"{at} is an assistant turn with an empty {Q(contentKey)}");
            turns.Add(new ChatTurn(role, content));
        }
        return turns;
    }

    static ChatTurn[] Pair(string user, string assistant) =>
        [new(ChatTurn.UserRole, user), new(ChatTurn.AssistantRole, assistant)];

    static string RequiredString(JsonElement obj, string key, string at)
    {
        string owner = at.Length == 0 ? "" : at + " ";
        if (!obj.TryGetProperty(key, out var value)) throw Bad($"{owner}has no {Q(key)}");
        if (value.ValueKind != JsonValueKind.String) throw Bad($"{at}{(at.Length == 0 ? "" : ".")}{Q(key)} must be a string, not {Kind(value)}");
        return value.GetString()!;
    }

    static bool Has(JsonElement obj, string key) => obj.TryGetProperty(key, out _);

    /// <summary>A key or value as the message shows it: in double quotes.</summary>
    public static string Q(string key) => "\"" + key + "\"";

    /// <summary>The kind of a JSON value in words ("an array", "a number", "null", ...).</summary>
    public static string Kind(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };

    static InvalidDataException Bad(string what) => new(what);
}
