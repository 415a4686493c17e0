using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace QuanTA.Serving;

/// <summary>
/// Starts a self-contained Kestrel server exposing <see cref="OpenAIChatEndpoints"/> over one <see cref="IChatClient"/>.
/// </summary>
/// <example>
/// <code>
/// await using var app = await OpenAIServer.StartAsync(client, new OpenAIServerOptions { ModelId = "my-model", Port = 0 });
/// Console.WriteLine($"OpenAI API at {app.GetBaseAddress()}v1");
/// await app.WaitForShutdownAsync();
/// </code>
/// </example>
public static class OpenAIServer
{
    /// <summary>
    /// Builds a minimal-API <see cref="WebApplication"/> (no configuration files, no environment variables, only Kestrel
    /// and routing) listening on <see cref="OpenAIServerOptions.Host"/>:<see cref="OpenAIServerOptions.Port"/>, maps the
    /// endpoints (other paths get an OpenAI-style 404), and starts it. The caller owns the returned application: stop it with
    /// <see cref="WebApplication.StopAsync"/> or <see cref="WebApplication.DisposeAsync"/>.
    /// </summary>
    /// <param name="client">The chat client every completion request is passed to; it is not disposed by the server.</param>
    /// <param name="options">Model id, authentication, limits and the address to listen on.</param>
    /// <param name="ct">Cancels starting (not the running server).</param>
    /// <returns>The started application; <see cref="GetBaseAddress"/> gives the address it is bound to.</returns>
    /// <exception cref="ArgumentException">An option is out of range or <see cref="OpenAIServerOptions.Host"/> is not supported.</exception>
    public static async Task<WebApplication> StartAsync(IChatClient client, OpenAIServerOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var address = ParseHost(options.Host);

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions
        {
            ApplicationName = typeof(OpenAIServer).Assembly.GetName().Name,
        });
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Listen(address, options.Port);
        });
        builder.Services.AddRoutingCore();
        if (options.LoggerFactory is { } loggerFactory) builder.Services.AddSingleton(loggerFactory);

        var app = builder.Build();
        app.MapOpenAIChatCompletions(client, options);
        app.MapFallback((RequestDelegate)(context => new OpenAIError(StatusCodes.Status404NotFound,
            $"Invalid URL ({context.Request.Method} {context.Request.Path}).", "invalid_request_error").WriteAsync(context)));
        try
        {
            await app.StartAsync(ct);
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }
        return app;
    }

    /// <summary>
    /// The address a started application is bound to, ending in a slash, e.g. <c>http://127.0.0.1:51234/</c> (with
    /// <see cref="OpenAIServerOptions.Port"/> 0, the port actually picked). OpenAI clients take
    /// <c>GetBaseAddress(app) + "v1"</c> as their endpoint.
    /// </summary>
    /// <param name="app">An application returned by <see cref="StartAsync"/>, after it started.</param>
    public static Uri GetBaseAddress(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var url = app.Urls.FirstOrDefault()
            ?? throw new InvalidOperationException("The application is not listening on any address; start it first.");
        return new Uri(url.EndsWith('/') ? url : url + "/");
    }

    /// <summary>An IP literal, <c>localhost</c> (IPv4 loopback) or <c>*</c> / <c>+</c> (every IPv4 interface).</summary>
    private static IPAddress ParseHost(string host) => host switch
    {
        _ when IPAddress.TryParse(host.Trim('[', ']'), out var ip) => ip,
        "localhost" => IPAddress.Loopback,
        "*" or "+" => IPAddress.Any,
        _ => throw new ArgumentException(
            $"Host '{host}' is not supported: use an IP address, \"localhost\" or \"*\".", nameof(OpenAIServerOptions.Host)),
    };
}
