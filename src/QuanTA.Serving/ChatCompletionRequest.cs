using System.Text.Json;
using Microsoft.Extensions.AI;

namespace QuanTA.Serving;

/// <summary>A validated <c>POST /v1/chat/completions</c> body, mapped to Microsoft.Extensions.AI types.</summary>
internal sealed record ChatCompletionRequest(List<ChatMessage> Messages, ChatOptions Options, bool Stream, bool IncludeUsage)
{
    /// <summary>
    /// Reads and validates a request body. Throws <see cref="OpenAIRequestException"/> with a 400 (or 404 for an unknown
    /// model) that names the offending field. Unknown fields are ignored, as most OpenAI-compatible servers do.
    /// </summary>
    public static ChatCompletionRequest Parse(ReadOnlyMemory<byte> body, OpenAIServerOptions server)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(body); }
        catch (JsonException e)
        {
            throw Fail($"We could not parse the JSON body of your request: {e.Message}");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Fail("The request body must be a JSON object.");

            if (Get(root, "model") is { } model)
            {
                var id = String(model, "model");
                if (id != server.ModelId) throw new OpenAIRequestException(OpenAIError.ModelNotFound(id));
            }
            if (Get(root, "n") is { } n && Int(n, "n") != 1)
                throw Fail("Only n = 1 is supported.", "n");
            if (Get(root, "tools") is { ValueKind: JsonValueKind.Array } tools && tools.GetArrayLength() > 0)
                throw Fail("Tools are not supported by this server.", "tools");

            var options = new ChatOptions { ModelId = server.ModelId };
            options.MaxOutputTokens = MaxTokens(root, server);
            options.Temperature = Float(root, "temperature", 0, 2);
            options.TopP = Float(root, "top_p", 0, 1);
            options.FrequencyPenalty = Float(root, "frequency_penalty", -2, 2);
            options.PresencePenalty = Float(root, "presence_penalty", -2, 2);
            if (Get(root, "repetition_penalty") is { } repetition)                    // vLLM's extension: transformers' CTRL penalty
                (options.AdditionalProperties ??= [])["repetition_penalty"] = RepetitionPenalty(repetition);
            if (Get(root, "top_k") is { } topK)
                options.TopK = Positive(topK, "top_k");
            if (Get(root, "seed") is { } seed)
                options.Seed = seed.ValueKind == JsonValueKind.Number && seed.TryGetInt64(out var s) ? s
                    : throw Fail("'seed' must be an integer.", "seed");
            if (Get(root, "stop") is { } stop)
                options.StopSequences = StopSequences(stop);

            bool stream = Get(root, "stream") is { } st && Bool(st, "stream");
            bool includeUsage = false;
            if (Get(root, "stream_options") is { } so)
            {
                if (so.ValueKind != JsonValueKind.Object) throw Fail("'stream_options' must be an object.", "stream_options");
                includeUsage = Get(so, "include_usage") is { } iu && Bool(iu, "stream_options.include_usage");
            }
            return new ChatCompletionRequest(ReadMessages(root), options, stream, includeUsage);
        }
    }

    private static int? MaxTokens(JsonElement root, OpenAIServerOptions server)
    {
        // max_completion_tokens is the current name, max_tokens the deprecated one: the newer wins when both are sent.
        string field = Get(root, "max_completion_tokens") is not null ? "max_completion_tokens" : "max_tokens";
        if (Get(root, field) is not { } value) return server.DefaultMaxTokens;
        int tokens = Positive(value, field);
        if (tokens > server.MaxTokensLimit)
            throw Fail($"'{field}' is {tokens}, above this server's limit of {server.MaxTokensLimit} tokens.", field);
        return tokens;
    }

    private static List<ChatMessage> ReadMessages(JsonElement root)
    {
        if (Get(root, "messages") is not { } messages)
            throw Fail("Missing required parameter: 'messages'.", "messages", "missing_required_parameter");
        if (messages.ValueKind != JsonValueKind.Array)
            throw Fail("'messages' must be an array of message objects.", "messages");
        if (messages.GetArrayLength() == 0)
            throw Fail("'messages' must contain at least one message.", "messages");

        var result = new List<ChatMessage>();
        int i = 0;
        foreach (var m in messages.EnumerateArray())
        {
            string at = $"messages[{i++}]";
            if (m.ValueKind != JsonValueKind.Object) throw Fail($"'{at}' must be an object.", at);
            var role = Get(m, "role") is { } r ? String(r, $"{at}.role")
                : throw Fail($"Missing required parameter: '{at}.role'.", $"{at}.role", "missing_required_parameter");
            var chatRole = role switch
            {
                "system" or "developer" => ChatRole.System,
                "user" => ChatRole.User,
                "assistant" => ChatRole.Assistant,
                _ => throw Fail($"Invalid value for '{at}.role': '{role}'. Supported values are: 'system', 'developer', 'user' and 'assistant'.",
                    $"{at}.role", "invalid_value"),
            };
            var message = new ChatMessage(chatRole, Content(Get(m, "content"), $"{at}.content", chatRole));
            if (Get(m, "name") is { } name) message.AuthorName = String(name, $"{at}.name");
            result.Add(message);
        }
        return result;
    }

    private static string Content(JsonElement? content, string at, ChatRole role)
    {
        switch (content)
        {
            case { ValueKind: JsonValueKind.String } s:
                return s.GetString()!;
            case { ValueKind: JsonValueKind.Array } parts:
                var text = new System.Text.StringBuilder();
                int i = 0;
                foreach (var part in parts.EnumerateArray())
                {
                    string p = $"{at}[{i++}]";
                    if (part.ValueKind != JsonValueKind.Object) throw Fail($"'{p}' must be a content part object.", p);
                    var type = Get(part, "type") is { } t ? String(t, $"{p}.type") : null;
                    if (type != "text")
                        throw Fail($"Invalid value for '{p}.type': '{type}'. Only 'text' content parts are supported.", $"{p}.type", "invalid_value");
                    text.Append(Get(part, "text") is { } tx ? String(tx, $"{p}.text")
                        : throw Fail($"Missing required parameter: '{p}.text'.", $"{p}.text", "missing_required_parameter"));
                }
                return text.ToString();
            case null when role == ChatRole.Assistant:
                return "";
            case null:
                throw Fail($"Missing required parameter: '{at}'.", at, "missing_required_parameter");
            default:
                throw Fail($"'{at}' must be a string or an array of text content parts.", at);
        }
    }

    private static List<string> StopSequences(JsonElement stop) => stop.ValueKind switch
    {
        JsonValueKind.String => [stop.GetString()!],
        JsonValueKind.Array => stop.EnumerateArray().Select((s, i) => String(s, $"stop[{i}]")).ToList(),
        _ => throw Fail("'stop' must be a string or an array of strings.", "stop"),
    };

    /// <summary>The property's value; <see langword="null"/> when absent or JSON null (OpenAI treats both alike).</summary>
    private static JsonElement? Get(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string String(JsonElement e, string field) =>
        e.ValueKind == JsonValueKind.String ? e.GetString()! : throw Fail($"'{field}' must be a string.", field);

    private static bool Bool(JsonElement e, string field) => e.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw Fail($"'{field}' must be a boolean.", field),
    };

    private static int Int(JsonElement e, string field) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var v) ? v : throw Fail($"'{field}' must be an integer.", field);

    private static int Positive(JsonElement e, string field)
    {
        int v = Int(e, field);
        return v >= 1 ? v : throw Fail($"'{field}' must be at least 1, got {v}.", field);
    }

    private static float? Float(JsonElement root, string field, double min, double max)
    {
        if (Get(root, field) is not { } e) return null;
        if (e.ValueKind != JsonValueKind.Number) throw Fail($"'{field}' must be a number.", field);
        double v = e.GetDouble();
        return v >= min && v <= max ? (float)v : throw Fail($"'{field}' must be between {min} and {max}, got {v}.", field);
    }

    /// <summary><c>repetition_penalty</c>: a positive number (1 = off), as vLLM accepts it.</summary>
    private static double RepetitionPenalty(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Number) throw Fail("'repetition_penalty' must be a number.", "repetition_penalty");
        double v = e.GetDouble();
        return v > 0 && double.IsFinite(v) ? v
            : throw Fail($"'repetition_penalty' must be greater than 0 (1 = off, > 1 discourages repetition), got {v}.", "repetition_penalty");
    }

    private static OpenAIRequestException Fail(string message, string? param = null, string? code = null) =>
        new(OpenAIError.Invalid(message, param, code));
}
