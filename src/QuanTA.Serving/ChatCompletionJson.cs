using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.AI;

namespace QuanTA.Serving;

/// <summary>Writes the OpenAI response documents: <c>chat.completion</c>, <c>chat.completion.chunk</c>, <c>list</c>.</summary>
internal sealed class ChatCompletionJson(string id, long created, string model)
{
    /// <summary>A new response identity: <c>chatcmpl-…</c> id and the current Unix time.</summary>
    public static ChatCompletionJson Create(string model) =>
        new($"chatcmpl-{Guid.NewGuid():N}", DateTimeOffset.UtcNow.ToUnixTimeSeconds(), model);

    /// <summary>The non-streaming <c>chat.completion</c> document.</summary>
    public byte[] Completion(string text, ChatFinishReason? finishReason, UsageDetails? usage) => Write(w =>
    {
        Header(w, "chat.completion");
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("message");
        w.WriteString("role", "assistant");
        w.WriteString("content", text);
        w.WriteEndObject();
        w.WriteNull("logprobs");
        w.WriteString("finish_reason", FinishReason(finishReason));
        w.WriteEndObject();
        w.WriteEndArray();
        Usage(w, usage);
    });

    /// <summary>
    /// A <c>chat.completion.chunk</c> with one choice whose delta holds <paramref name="role"/> and/or
    /// <paramref name="content"/> (either may be null), and <c>finish_reason</c> when <paramref name="finished"/>.
    /// With <paramref name="usageField"/> the chunk carries <c>"usage": null</c>, as OpenAI does under include_usage.
    /// </summary>
    public byte[] Chunk(string? role, string? content, bool finished, ChatFinishReason? finishReason, bool usageField) => Write(w =>
    {
        Header(w, "chat.completion.chunk");
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("delta");
        if (role is not null) w.WriteString("role", role);
        if (content is not null) w.WriteString("content", content);
        w.WriteEndObject();
        w.WriteNull("logprobs");
        if (finished) w.WriteString("finish_reason", FinishReason(finishReason));
        else w.WriteNull("finish_reason");
        w.WriteEndObject();
        w.WriteEndArray();
        if (usageField) w.WriteNull("usage");
    });

    /// <summary>The last chunk under <c>stream_options.include_usage</c>: no choices, the usage of the whole request.</summary>
    public byte[] UsageChunk(UsageDetails? usage) => Write(w =>
    {
        Header(w, "chat.completion.chunk");
        w.WriteStartArray("choices");
        w.WriteEndArray();
        Usage(w, usage);
    });

    /// <summary>The <c>GET /v1/models</c> document: a list holding the one served model.</summary>
    public static byte[] ModelList(string model, long created) => Write(w =>
    {
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        w.WriteStartObject();
        w.WriteString("id", model);
        w.WriteString("object", "model");
        w.WriteNumber("created", created);
        w.WriteString("owned_by", "quanta");
        w.WriteEndObject();
        w.WriteEndArray();
    });

    /// <summary>
    /// OpenAI's finish reasons. Anything the client does not report, or reports outside OpenAI's set, reads as
    /// <c>stop</c> (OpenAI clients reject unknown values).
    /// </summary>
    internal static string FinishReason(ChatFinishReason? reason) =>
        reason == ChatFinishReason.Length ? "length"
        : reason == ChatFinishReason.ContentFilter ? "content_filter"
        : reason == ChatFinishReason.ToolCalls ? "tool_calls"
        : "stop";

    private void Header(Utf8JsonWriter w, string kind)
    {
        w.WriteString("id", id);
        w.WriteString("object", kind);
        w.WriteNumber("created", created);
        w.WriteString("model", model);
        w.WriteNull("system_fingerprint");
    }

    /// <summary>Usage counts; a count the client did not report is written as 0, a missing total as the sum.</summary>
    private static void Usage(Utf8JsonWriter w, UsageDetails? usage)
    {
        long prompt = usage?.InputTokenCount ?? 0, completion = usage?.OutputTokenCount ?? 0;
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", prompt);
        w.WriteNumber("completion_tokens", completion);
        w.WriteNumber("total_tokens", usage?.TotalTokenCount ?? prompt + completion);
        w.WriteEndObject();
    }

    private static byte[] Write(Action<Utf8JsonWriter> body)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }
}
