using System.Text.Json;
using Microsoft.Extensions.AI;

namespace QuanTA.Serving.Tests;

/// <summary>The wire format, checked with a raw <see cref="HttpClient"/>.</summary>
public sealed class ProtocolTests
{
    private const string Hello = """{"model":"test-model","messages":[{"role":"user","content":"hello big world"}]""";

    [Fact]
    public async Task NonStreamingDocumentHasOpenAIsShape()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient());

        var response = await server.PostChatAsync(Hello + "}");

        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var root = doc.RootElement;
        Assert.StartsWith("chatcmpl-", root.GetProperty("id").GetString());
        Assert.Equal("chat.completion", root.GetProperty("object").GetString());
        Assert.InRange(root.GetProperty("created").GetInt64(), DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 60, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);
        Assert.Equal("test-model", root.GetProperty("model").GetString());
        var choice = Assert.Single(root.GetProperty("choices").EnumerateArray());
        Assert.Equal(0, choice.GetProperty("index").GetInt32());
        Assert.Equal("assistant", choice.GetProperty("message").GetProperty("role").GetString());
        Assert.Equal("dlrow gib olleh", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        var usage = root.GetProperty("usage");
        Assert.Equal(3, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(3, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(6, usage.GetProperty("total_tokens").GetInt32());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task StreamIsServerSentChunksEndingInDone(bool includeUsage)
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient());
        string options = includeUsage ? ""","stream_options":{"include_usage":true}""" : "";

        var response = await server.PostChatAsync(Hello + ""","stream":true,"max_tokens":2""" + options + "}");

        Assert.Equal(200, (int)response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = ParseEvents(await response.Content.ReadAsStringAsync());
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e).RootElement).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        Assert.Single(chunks.Select(c => c.GetProperty("id").GetString()).Distinct());

        var withChoices = chunks.Where(c => c.GetProperty("choices").GetArrayLength() == 1).ToList();
        var deltas = withChoices.Select(c => c.GetProperty("choices")[0].GetProperty("delta")).ToList();
        Assert.Equal("assistant", deltas[0].GetProperty("role").GetString());
        string text = string.Concat(deltas.Select(d => d.TryGetProperty("content", out var c) ? c.GetString() : ""));
        Assert.Equal("dlrow gib", text);
        var finish = withChoices.Select(c => c.GetProperty("choices")[0].GetProperty("finish_reason")).ToList();
        Assert.All(finish[..^1], f => Assert.Equal(JsonValueKind.Null, f.ValueKind));
        Assert.Equal("length", finish[^1].GetString());

        if (includeUsage)
        {
            var last = chunks[^1];
            Assert.Equal(0, last.GetProperty("choices").GetArrayLength());
            Assert.Equal(3, last.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            Assert.Equal(2, last.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal(5, last.GetProperty("usage").GetProperty("total_tokens").GetInt32());
            Assert.All(withChoices, c => Assert.Equal(JsonValueKind.Null, c.GetProperty("usage").ValueKind));
        }
        else
        {
            Assert.Equal(withChoices.Count, chunks.Count);
            Assert.All(chunks, c => Assert.False(c.TryGetProperty("usage", out _)));
        }
    }

    [Fact]
    public async Task RequestFieldsMapToChatOptionsAndMessages()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);
        const string body = """
            {"messages":[
               {"role":"developer","content":"Be brief."},
               {"role":"user","name":"ann","content":[{"type":"text","text":"ab "},{"type":"text","text":"cd"}]}],
             "max_tokens":7,"temperature":0,"top_p":1,"top_k":40,"stop":"xyz","seed":-5,"n":1,
             "frequency_penalty":0.5,"presence_penalty":-0.5,"repetition_penalty":1.25,"stream":false,"user":"ignored"}
            """;

        var response = await server.PostChatAsync(body);

        Assert.Equal(200, (int)response.StatusCode);
        var messages = fake.LastMessages!;
        Assert.Equal(ChatRole.System, messages[0].Role);
        Assert.Equal("Be brief.", messages[0].Text);
        Assert.Equal("ab cd", messages[1].Text);
        Assert.Equal("ann", messages[1].AuthorName);
        var o = fake.LastOptions!;
        Assert.Equal(7, o.MaxOutputTokens);
        Assert.Equal(0f, o.Temperature);
        Assert.Equal(1f, o.TopP);
        Assert.Equal(40, o.TopK);
        Assert.Equal(["xyz"], o.StopSequences);
        Assert.Equal(-5, o.Seed);
        Assert.Equal(0.5f, o.FrequencyPenalty);
        Assert.Equal(-0.5f, o.PresencePenalty);
        Assert.Equal(1.25, o.AdditionalProperties!["repetition_penalty"]);
        Assert.Equal("test-model", o.ModelId);
    }

    [Fact]
    public async Task MaxCompletionTokensWinsAndNoLimitMeansTheDefault()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake, o => o.DefaultMaxTokens = 64);

        await server.PostChatAsync("""{"messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_completion_tokens":9}""");
        int? both = fake.LastOptions!.MaxOutputTokens;
        await server.PostChatAsync("""{"messages":[{"role":"user","content":"x"}]}""");

        Assert.Equal(9, both);
        Assert.Equal(64, fake.LastOptions!.MaxOutputTokens);
    }

    [Fact]
    public async Task ModelsAndHealth()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient(), o => o.ApiKey = "k");

        var models = await server.Http.SendAsync(new HttpRequestMessage(HttpMethod.Get, "v1/models") { Headers = { Authorization = new("Bearer", "k") } });
        var health = await server.Http.GetAsync("health");

        Assert.Equal(200, (int)models.StatusCode);
        using var doc = JsonDocument.Parse(await models.Content.ReadAsStringAsync());
        Assert.Equal("list", doc.RootElement.GetProperty("object").GetString());
        var model = Assert.Single(doc.RootElement.GetProperty("data").EnumerateArray());
        Assert.Equal("test-model", model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());
        Assert.Equal(200, (int)health.StatusCode);
        Assert.Equal("ok", JsonDocument.Parse(await health.Content.ReadAsStringAsync()).RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public async Task ServerListensOnLoopbackWithAPickedPort()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient());

        Assert.Equal("127.0.0.1", server.BaseAddress.Host);
        Assert.NotEqual(0, server.BaseAddress.Port);
        Assert.EndsWith("/", server.BaseAddress.AbsoluteUri);
    }

    [Fact]
    public async Task LocalhostBindsLoopbackAndOtherPathsGetAnOpenAIError()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient(), o => o.Host = "localhost");

        var response = await server.Http.GetAsync("v1/nothing");

        Assert.Equal("127.0.0.1", server.BaseAddress.Host);
        var error = await ServerHarness.AssertErrorAsync(response, 404);
        Assert.Contains("/v1/nothing", error.GetProperty("message").GetString());
    }

    [Theory]
    [InlineData("example.com", 0)]
    [InlineData("127.0.0.1", -1)]
    public async Task BadHostOrPortIsRefusedAtStart(string host, int port)
    {
        var options = new OpenAIServerOptions { Host = host, Port = port };

        await Assert.ThrowsAsync<ArgumentException>(() => OpenAIServer.StartAsync(new EchoChatClient(), options));
    }

    [Fact]
    public async Task OptionsAreReadWhenMapped()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);
        server.Options.ModelId = "changed";
        server.Options.ApiKey = "late";

        var response = await server.PostChatAsync("""{"model":"test-model","messages":[{"role":"user","content":"x"}]}""");

        Assert.Equal(200, (int)response.StatusCode);
    }

    /// <summary>The payloads of the <c>data:</c> events of a server-sent event stream.</summary>
    internal static List<string> ParseEvents(string body) =>
        body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(e => Assert.IsType<string>(e.StartsWith("data: ", StringComparison.Ordinal) ? e["data: ".Length..] : null))
            .ToList();
}
