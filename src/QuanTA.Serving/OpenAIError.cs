using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace QuanTA.Serving;

/// <summary>An OpenAI-style error: <c>{"error": {"message", "type", "param", "code"}}</c> with its HTTP status.</summary>
internal sealed record OpenAIError(int Status, string Message, string Type, string? Param = null, string? Code = null)
{
    public static OpenAIError Invalid(string message, string? param = null, string? code = null) =>
        new(StatusCodes.Status400BadRequest, message, "invalid_request_error", param, code);

    public static OpenAIError Unauthorized() =>
        new(StatusCodes.Status401Unauthorized,
            "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.", "invalid_request_error", null, "invalid_api_key");

    public static OpenAIError ModelNotFound(string model) =>
        new(StatusCodes.Status404NotFound,
            $"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error", "model", "model_not_found");

    public static OpenAIError TooLarge(long limit) =>
        new(StatusCodes.Status413PayloadTooLarge,
            $"The request body is larger than this server's limit of {limit} bytes.", "invalid_request_error", null, "request_too_large");

    public static OpenAIError Server(string message) =>
        new(StatusCodes.Status500InternalServerError, message, "server_error", null, null);

    /// <summary>Writes <c>"error": {...}</c> as a property of the object <paramref name="w"/> is in.</summary>
    public void WriteErrorProperty(Utf8JsonWriter w)
    {
        w.WriteStartObject("error");
        w.WriteString("message", Message);
        w.WriteString("type", Type);
        w.WriteString("param", Param);
        w.WriteString("code", Code);
        w.WriteEndObject();
    }

    /// <summary>The full error document as UTF-8 JSON.</summary>
    public byte[] ToJson()
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            WriteErrorProperty(w);
            w.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Sends the error as the whole response (status, JSON content type, body).</summary>
    public async Task WriteAsync(HttpContext context)
    {
        context.Response.StatusCode = Status;
        if (Status == StatusCodes.Status401Unauthorized) context.Response.Headers.WWWAuthenticate = "Bearer";
        context.Response.ContentType = "application/json";
        await context.Response.Body.WriteAsync(ToJson(), context.RequestAborted);
    }
}

/// <summary>Thrown while reading a request to end it with <see cref="Error"/>.</summary>
internal sealed class OpenAIRequestException(OpenAIError error) : Exception(error.Message)
{
    public OpenAIError Error { get; } = error;
}
