using System.Text;

namespace QuanTA.Serving.Tests;

/// <summary>Bad requests, limits, client failures and client disconnects.</summary>
public sealed class ErrorTests
{
    private const string User = """[{"role":"user","content":"hi"}]""";

    [Theory]
    [InlineData("{not json", null, null)]
    [InlineData("[1,2]", null, null)]
    [InlineData("{}", "messages", "missing_required_parameter")]
    [InlineData("""{"messages":[]}""", "messages", null)]
    [InlineData("""{"messages":"hi"}""", "messages", null)]
    [InlineData("""{"messages":[{"role":"wizard","content":"x"}]}""", "messages[0].role", "invalid_value")]
    [InlineData("""{"messages":[{"content":"x"}]}""", "messages[0].role", "missing_required_parameter")]
    [InlineData("""{"messages":[{"role":"user","content":5}]}""", "messages[0].content", null)]
    [InlineData("""{"messages":[{"role":"user"}]}""", "messages[0].content", "missing_required_parameter")]
    [InlineData("""{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", "messages[0].content[0].type", "invalid_value")]
    [InlineData("""{"messages":[{"role":"tool","content":"x"}]}""", "messages[0].role", "invalid_value")]
    [InlineData("""{"messages":USER,"temperature":"hot"}""", "temperature", null)]
    [InlineData("""{"messages":USER,"temperature":3}""", "temperature", null)]
    [InlineData("""{"messages":USER,"top_p":"x"}""", "top_p", null)]
    [InlineData("""{"messages":USER,"top_k":0}""", "top_k", null)]
    [InlineData("""{"messages":USER,"frequency_penalty":3}""", "frequency_penalty", null)]
    [InlineData("""{"messages":USER,"frequency_penalty":-2.01}""", "frequency_penalty", null)]
    [InlineData("""{"messages":USER,"presence_penalty":"high"}""", "presence_penalty", null)]
    [InlineData("""{"messages":USER,"presence_penalty":2.5}""", "presence_penalty", null)]
    [InlineData("""{"messages":USER,"repetition_penalty":0}""", "repetition_penalty", null)]
    [InlineData("""{"messages":USER,"repetition_penalty":-1.2}""", "repetition_penalty", null)]
    [InlineData("""{"messages":USER,"repetition_penalty":"1.2"}""", "repetition_penalty", null)]
    [InlineData("""{"messages":USER,"max_tokens":"ten"}""", "max_tokens", null)]
    [InlineData("""{"messages":USER,"max_completion_tokens":0}""", "max_completion_tokens", null)]
    [InlineData("""{"messages":USER,"stop":5}""", "stop", null)]
    [InlineData("""{"messages":USER,"stop":["a",1]}""", "stop[1]", null)]
    [InlineData("""{"messages":USER,"seed":1.5}""", "seed", null)]
    [InlineData("""{"messages":USER,"stream":"yes"}""", "stream", null)]
    [InlineData("""{"messages":USER,"model":7}""", "model", null)]
    [InlineData("""{"messages":USER,"n":2}""", "n", null)]
    public async Task BadRequestsGet400NamingTheField(string body, string? param, string? code)
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);

        var response = await server.PostChatAsync(body.Replace("USER", User));

        var error = await ServerHarness.AssertErrorAsync(response, 400, param, code);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        if (param is not null) Assert.Contains(param, error.GetProperty("message").GetString());
        Assert.Null(fake.LastMessages);
    }

    [Fact]
    public async Task UnknownModelGets404()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient());

        var response = await server.PostChatAsync($$"""{"model":"gpt-4o","messages":{{User}}}""");

        var error = await ServerHarness.AssertErrorAsync(response, 404, "model", "model_not_found");
        Assert.Contains("gpt-4o", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task MaxTokensAboveTheLimitGets400NamingTheLimit()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient(), o => { o.MaxTokensLimit = 100; o.DefaultMaxTokens = 50; });

        var response = await server.PostChatAsync($$"""{"messages":{{User}},"max_tokens":101}""");

        var error = await ServerHarness.AssertErrorAsync(response, 400, "max_tokens");
        Assert.Contains("100", error.GetProperty("message").GetString());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task TooLargeBodiesGet413(bool knownLength)
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake, o => o.MaxRequestBytes = 1024);
        string body = $$"""{"messages":[{"role":"user","content":"{{new string('a', 4096)}}"}]}""";
        HttpContent content = knownLength
            ? new StringContent(body, Encoding.UTF8, "application/json")
            : new StreamContent(new UnknownLengthStream(Encoding.UTF8.GetBytes(body)));

        var response = await server.Http.PostAsync("v1/chat/completions", content);

        await ServerHarness.AssertErrorAsync(response, 413, code: "request_too_large");
        Assert.Null(fake.LastMessages);
        Assert.Equal(200, (int)(await server.PostChatAsync($$"""{"messages":{{User}}}""")).StatusCode);
    }

    [Fact]
    public async Task ClientFailureGets500()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient { Failure = new InvalidOperationException("model exploded") });

        var response = await server.PostChatAsync($$"""{"messages":{{User}}}""");

        var error = await ServerHarness.AssertErrorAsync(response, 500);
        Assert.Equal("server_error", error.GetProperty("type").GetString());
        Assert.Contains("model exploded", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task ClientFailureWhileStreamingSendsAnErrorEventAndCloses()
    {
        var fake = new EchoChatClient { Failure = new InvalidOperationException("model exploded"), ThrowAfterWords = 1 };
        await using var server = await ServerHarness.StartAsync(fake);

        var response = await server.PostChatAsync("""{"messages":[{"role":"user","content":"a b c"}],"stream":true}""");

        Assert.Equal(200, (int)response.StatusCode);
        var events = ProtocolTests.ParseEvents(await response.Content.ReadAsStringAsync());
        Assert.DoesNotContain("[DONE]", events);
        Assert.Contains("\"content\":\"c \"", events[1]);
        using var last = System.Text.Json.JsonDocument.Parse(events[^1]);
        var error = last.RootElement.GetProperty("error");
        Assert.Equal("server_error", error.GetProperty("type").GetString());
        Assert.Contains("model exploded", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task ClientDisconnectCancelsGeneration()
    {
        var fake = new EchoChatClient { WordDelay = TimeSpan.FromMilliseconds(20) };
        await using var server = await ServerHarness.StartAsync(fake);
        string words = string.Join(' ', Enumerable.Repeat("word", 500));   // 10 s if never cancelled
        var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions")
        {
            Content = new StringContent($$"""{"messages":[{"role":"user","content":"{{words}}"}],"stream":true,"max_tokens":1000}""",
                Encoding.UTF8, "application/json"),
        };
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var stream = await response.Content.ReadAsStreamAsync();
        var reader = new StreamReader(stream);
        int contentEvents = 0;
        while (contentEvents < 3 && await reader.ReadLineAsync() is { } line)
            if (line.Contains("\"content\":\"drow")) contentEvents++;
        Assert.Equal(3, contentEvents);
        Assert.False(fake.CancellationObserved.Task.IsCompleted);

        // Cancelling a pending read aborts the connection (plain Dispose would first drain the response for up to 2 s).
        using var cts = new CancellationTokenSource();
        var buffer = new byte[1024];
        Task<int> pending;
        while ((pending = stream.ReadAsync(buffer, cts.Token).AsTask()).IsCompleted)
            Assert.NotEqual(0, await pending);   // data already buffered: consume it until a read has to wait
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);

        await fake.CancellationObserved.Task.WaitAsync(TimeSpan.FromSeconds(5));
    }

    /// <summary>A stream that hides its length, so <see cref="HttpClient"/> sends it chunked.</summary>
    private sealed class UnknownLengthStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}
