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
/// Concurrency: requests may arrive concurrently, and each is passed straight to the client, which decides whether to
/// run them in parallel, queue them, or reject them. The server adds no lock; a client that is not thread-safe must
/// serialize its own calls. A client disconnect cancels the request's <see cref="CancellationToken"/>
/// (<see cref="HttpContext.RequestAborted"/>), which the client should observe to stop generating.
/// </remarks>
public static class OpenAIChatEndpoints
{
    /// <summary>Maps the chat completion, model list and health endpoints onto <paramref name="app"/>.</summary>
    /// <param name="app">The route builder (a <see cref="WebApplication"/> or a route group).</param>
    /// <param name="client">The chat client every completion request is passed to.</param>
    /// <param name="options">Model id, authentication and limits; validated here.</param>
    /// <returns><paramref name="app"/>, for chaining.</returns>
    public static IEndpointRouteBuilder MapOpenAIChatCompletions(
        this IEndpointRouteBuilder app, IChatClient client, OpenAIServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();

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
