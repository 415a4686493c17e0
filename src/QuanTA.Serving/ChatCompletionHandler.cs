using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;

namespace QuanTA.Serving;

/// <summary>Serves <c>POST /v1/chat/completions</c>: authorization, body limit, parsing, then a plain or streamed answer.</summary>
internal sealed class ChatCompletionHandler(IChatClient client, OpenAIServerOptions options, ILogger logger)
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();
    private readonly byte[]? _expectedAuthorization =
        options.ApiKey is null ? null : Encoding.UTF8.GetBytes("Bearer " + options.ApiKey);

    /// <summary>True when no key is configured or the request carries <c>Authorization: Bearer &lt;key&gt;</c>.</summary>
    public bool Authorize(HttpContext context)
    {
        if (_expectedAuthorization is null) return true;
        var given = Encoding.UTF8.GetBytes(context.Request.Headers.Authorization.ToString());
        return CryptographicOperations.FixedTimeEquals(given, _expectedAuthorization);
    }

    public async Task HandleAsync(HttpContext context)
    {
        if (!Authorize(context)) { await OpenAIError.Unauthorized().WriteAsync(context); return; }

        ChatCompletionRequest request;
        try
        {
            request = ChatCompletionRequest.Parse(await ReadBodyAsync(context), options);
        }
        catch (OpenAIRequestException e)
        {
            await e.Error.WriteAsync(context);
            return;
        }
        catch (BadHttpRequestException e)
        {
            // Kestrel's own checks, e.g. its body size limit (set from ours) tripping inside a chunked body.
            var error = e.StatusCode == StatusCodes.Status413PayloadTooLarge
                ? OpenAIError.TooLarge(options.MaxRequestBytes)
                : new OpenAIError(e.StatusCode, e.Message, "invalid_request_error");
            await error.WriteAsync(context);
            return;
        }

        var json = ChatCompletionJson.Create(options.ModelId);
        try
        {
            if (request.Stream) await StreamAsync(context, request, json);
            else await CompleteAsync(context, request, json);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away: generation was cancelled and there is nobody left to answer.
        }
    }

    /// <summary>Reads the body, refusing more than <see cref="OpenAIServerOptions.MaxRequestBytes"/> with 413.</summary>
    private async Task<ReadOnlyMemory<byte>> ReadBodyAsync(HttpContext context)
    {
        long limit = options.MaxRequestBytes;
        if (context.Request.ContentLength > limit) throw new OpenAIRequestException(OpenAIError.TooLarge(limit));
        // Align the server's own limit (Kestrel: 30 MB) with ours; either check may trip first, both answer 413.
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } sizeFeature)
            sizeFeature.MaxRequestBodySize = limit + 1;

        using var body = new MemoryStream();
        var buffer = new byte[16 * 1024];
        int read;
        while ((read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted)) > 0)
        {
            if (body.Length + read > limit) throw new OpenAIRequestException(OpenAIError.TooLarge(limit));
            body.Write(buffer, 0, read);
        }
        return body.GetBuffer().AsMemory(0, (int)body.Length);
    }

    private async Task CompleteAsync(HttpContext context, ChatCompletionRequest request, ChatCompletionJson json)
    {
        var ct = context.RequestAborted;
        ChatResponse response;
        try
        {
            response = await client.GetResponseAsync(request.Messages, request.Options, ct);
        }
        catch (Exception e) when (!(e is OperationCanceledException && ct.IsCancellationRequested))
        {
            logger.LogError(e, "Chat completion failed.");
            await Failure(e).WriteAsync(context);
            return;
        }
        context.Response.ContentType = "application/json";
        await context.Response.Body.WriteAsync(json.Completion(response.Text, response.FinishReason, response.Usage), ct);
    }

    private async Task StreamAsync(HttpContext context, ChatCompletionRequest request, ChatCompletionJson json)
    {
        var ct = context.RequestAborted;
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();

        bool usageField = request.IncludeUsage;
        ChatFinishReason? finishReason = null;
        UsageDetails? usage = null;
        await WriteEventAsync(context, json.Chunk("assistant", "", false, null, usageField));
        try
        {
            await foreach (var update in client.GetStreamingResponseAsync(request.Messages, request.Options, ct).WithCancellation(ct))
            {
                finishReason = update.FinishReason ?? finishReason;
                foreach (var content in update.Contents)
                {
                    if (content is UsageContent u) (usage ??= new UsageDetails()).Add(u.Details);
                }
                if (update.Text is { Length: > 0 } text)
                    await WriteEventAsync(context, json.Chunk(null, text, false, null, usageField));
            }
        }
        catch (Exception e) when (!(e is OperationCanceledException && ct.IsCancellationRequested))
        {
            // Headers are gone already: report the failure as an error event and end the stream without [DONE].
            logger.LogError(e, "Streaming chat completion failed.");
            await WriteEventAsync(context, Failure(e).ToJson());
            return;
        }
        await WriteEventAsync(context, json.Chunk(null, null, true, finishReason, usageField));
        if (request.IncludeUsage) await WriteEventAsync(context, json.UsageChunk(usage));
        await context.Response.Body.WriteAsync(Done, ct);
        await context.Response.Body.FlushAsync(ct);
    }

    /// <summary>Writes one <c>data: {json}</c> server-sent event and flushes it to the client.</summary>
    private static async Task WriteEventAsync(HttpContext context, byte[] payload)
    {
        var body = context.Response.Body;
        var ct = context.RequestAborted;
        await body.WriteAsync(DataPrefix, ct);
        await body.WriteAsync(payload, ct);
        await body.WriteAsync(EventEnd, ct);
        await body.FlushAsync(ct);
    }

    /// <summary>The 500 error for a client exception; its message is passed on (the server is local by default).</summary>
    private static OpenAIError Failure(Exception e) =>
        OpenAIError.Server($"The model failed to generate a response: {e.GetType().Name}: {e.Message}");
}
