using System.ClientModel;
using System.ClientModel.Primitives;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.AI;
using OpenAI;

namespace QuanTA.Serving.Tests;

/// <summary>A started <see cref="OpenAIServer"/> on 127.0.0.1 with a free port, plus clients pointed at it.</summary>
internal sealed class ServerHarness : IAsyncDisposable
{
    public const string Model = "test-model";

    private ServerHarness(WebApplication app, OpenAIServerOptions options)
    {
        App = app;
        Options = options;
        BaseAddress = app.GetBaseAddress();
        Http = new HttpClient { BaseAddress = BaseAddress, Timeout = TimeSpan.FromSeconds(10) };
    }

    public WebApplication App { get; }

    public OpenAIServerOptions Options { get; }

    public Uri BaseAddress { get; }

    public HttpClient Http { get; }

    public static async Task<ServerHarness> StartAsync(IChatClient client, Action<OpenAIServerOptions>? configure = null)
    {
        var options = new OpenAIServerOptions { ModelId = Model, Port = 0 };
        configure?.Invoke(options);
        return new ServerHarness(await OpenAIServer.StartAsync(client, options), options);
    }

    /// <summary>The official OpenAI .NET client, through Microsoft.Extensions.AI, aimed at this server.</summary>
    public IChatClient OpenAIChatClient(string apiKey = "no-key", string model = Model)
    {
        var clientOptions = new OpenAIClientOptions
        {
            Endpoint = new Uri(BaseAddress, "v1"),
            RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
            NetworkTimeout = TimeSpan.FromSeconds(10),
        };
        return new OpenAI.Chat.ChatClient(model, new ApiKeyCredential(apiKey), clientOptions).AsIChatClient();
    }

    public Task<HttpResponseMessage> PostChatAsync(string json, string? apiKey = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
        {
            Content = new StringContent(json, Encoding.UTF8, "application/json"),
        };
        if (apiKey is not null) request.Headers.Authorization = new("Bearer", apiKey);
        return Http.SendAsync(request);
    }

    /// <summary>Asserts the status and OpenAI's error shape; returns the <c>error</c> object.</summary>
    public static async Task<JsonElement> AssertErrorAsync(HttpResponseMessage response, int status, string? param = null, string? code = null)
    {
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var error = doc.RootElement.GetProperty("error").Clone();
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrEmpty(error.GetProperty("type").GetString()));
        Assert.Equal(param, error.GetProperty("param").GetString());
        if (code is not null) Assert.Equal(code, error.GetProperty("code").GetString());
        else Assert.True(error.TryGetProperty("code", out _));
        return error;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await App.DisposeAsync();
    }
}
