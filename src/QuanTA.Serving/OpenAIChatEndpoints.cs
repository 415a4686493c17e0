using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace QuanTA.Serving;

/// <summary>
/// Maps an OpenAI-compatible chat API over any <see cref="IChatClient"/>:
/// <list type="bullet">
/// <item><c>POST /v1/chat/completions</c>: a <c>chat.completion</c> document, or with <c>"stream": true</c> server-sent
/// <c>chat.completion.chunk</c> events ending in <c>data: [DONE]</c>.</item>
/// <item><c>GET /v1/models</c>: the one served model (<see cref="OpenAIServerOptions.ModelId"/>).</item>
/// <item><c>GET /health</c>: <c>{"status": "ok"}</c>, never behind the API key.</item>
/// </list>
/// Errors use OpenAI's shape, <c>{"error": {"message", "type", "param", "code"}}</c>.
/// </summary>
/// <remarks>
/// Request mapping: <c>messages</c> (roles <c>system</c>, <c>developer</c> (read as system), <c>user</c>,
/// <c>assistant</c>; content a string or an array of <c>{"type": "text", "text"}</c> parts, joined) become
/// <see cref="ChatMessage"/>s; <c>max_completion_tokens</c> (or the older <c>max_tokens</c>) becomes
/// <see cref="ChatOptions.MaxOutputTokens"/> (default <see cref="OpenAIServerOptions.DefaultMaxTokens"/>), and
/// <c>temperature</c>, <c>top_p</c>, <c>top_k</c> (an extension), <c>stop</c>, <c>seed</c>, <c>frequency_penalty</c> and
/// <c>presence_penalty</c> map to the <see cref="ChatOptions"/> property of the same meaning; <c>repetition_penalty</c>
/// (an extension vLLM accepts too; &gt; 0) goes to <c>AdditionalProperties["repetition_penalty"]</c>. Only <c>n = 1</c> is
/// served; tools and non-text content are refused with 400; other unknown fields are ignored. The answer's
/// <c>finish_reason</c> comes from <see cref="ChatResponse.FinishReason"/> (<c>stop</c> unless the client says
/// otherwise); <c>usage</c> from the client's <see cref="UsageDetails"/> (0 for counts it does not report).
/// <para>
/// Concurrency: requests may arrive concurrently, and each is passed straight to the client, which decides whether to
/// run them in parallel, queue them, or reject them. The server adds no lock; a client that is not thread-safe must
/// serialize its own calls. A client disconnect cancels the request's <see cref="CancellationToken"/>
/// (<see cref="HttpContext.RequestAborted"/>), which the client should observe to stop generating.
/// </para>
/// </remarks>
public static class OpenAIChatEndpoints
{
    /// <summary>Maps the chat completion, model list and health endpoints onto <paramref name="app"/>.</summary>
    /// <param name="app">The route builder (a <see cref="WebApplication"/> or a route group).</param>
    /// <param name="client">The chat client every completion request is passed to.</param>
    /// <param name="options">Model id, authentication and limits; validated and read here, so later changes do not apply.</param>
    /// <returns><paramref name="app"/>, for chaining.</returns>
    public static IEndpointRouteBuilder MapOpenAIChatCompletions(
        this IEndpointRouteBuilder app, IChatClient client, OpenAIServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        options = options.Snapshot();

        var loggerFactory = options.LoggerFactory ?? app.ServiceProvider.GetService<ILoggerFactory>();
        var logger = loggerFactory?.CreateLogger(typeof(OpenAIChatEndpoints).FullName!) ?? NullLogger.Instance;
        var handler = new ChatCompletionHandler(client, options, logger);
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        byte[] models = ChatCompletionJson.ModelList(options.ModelId, created);

        app.MapPost("/v1/chat/completions", (RequestDelegate)handler.HandleAsync);
        app.MapGet("/v1/models", (RequestDelegate)(async context =>
        {
            if (!handler.Authorize(context)) { await OpenAIError.Unauthorized().WriteAsync(context); return; }
            context.Response.ContentType = "application/json";
            await context.Response.Body.WriteAsync(models, context.RequestAborted);
        }));
        app.MapGet("/health", (RequestDelegate)(context =>
        {
            context.Response.ContentType = "application/json";
            return context.Response.WriteAsync("{\"status\":\"ok\"}", context.RequestAborted);
        }));
        return app;
    }
}
