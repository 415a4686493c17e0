using System.ClientModel;
using Microsoft.Extensions.AI;

namespace QuanTA.Serving.Tests;

/// <summary>The official OpenAI .NET client (through Microsoft.Extensions.AI.OpenAI) against the server.</summary>
public sealed class OpenAIClientTests
{
    private static readonly ChatMessage[] Conversation =
    [
        new(ChatRole.System, "You are a mirror."),
        new(ChatRole.User, "first question"),
        new(ChatRole.Assistant, "noitseuq tsrif"),
        new(ChatRole.User, "the quick brown fox jumps"),
    ];

    [Fact]
    public async Task NonStreamingTextEqualsTheClientsOwnAnswer()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);
        var expected = await fake.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 512 });

        var response = await server.OpenAIChatClient().GetResponseAsync(Conversation);

        Assert.Equal("spmuj xof nworb kciuq eht", expected.Text);
        Assert.Equal(expected.Text, response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal(ServerHarness.Model, response.ModelId);
        Assert.StartsWith("chatcmpl-", response.ResponseId);
        Assert.Equal(4, fake.LastMessages!.Count);
        Assert.Equal([ChatRole.System, ChatRole.User, ChatRole.Assistant, ChatRole.User], fake.LastMessages.Select(m => m.Role));
        Assert.Equal(512, fake.LastOptions!.MaxOutputTokens); // OpenAIServerOptions.DefaultMaxTokens
    }

    [Fact]
    public async Task StreamedPiecesConcatenateToTheSameText()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);
        var expected = await fake.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 512 });

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in server.OpenAIChatClient().GetStreamingResponseAsync(Conversation))
            updates.Add(update);

        Assert.Equal(expected.Text, string.Concat(updates.Select(u => u.Text)));
        Assert.True(updates.Count(u => u.Text.Length > 0) == 5, "one update per word");
        var response = updates.ToChatResponse();
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        // The OpenAI client asks for stream_options.include_usage, so the usage chunk arrives.
        Assert.Equal(expected.Usage!.InputTokenCount, response.Usage?.InputTokenCount);
        Assert.Equal(5, response.Usage?.OutputTokenCount);
    }

    [Fact]
    public async Task OptionsArriveAtTheClient()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);
        var options = new ChatOptions { MaxOutputTokens = 3, Temperature = 0.25f, TopP = 0.5f, StopSequences = ["zz", "yy"], Seed = 1234 };

        var response = await server.OpenAIChatClient().GetResponseAsync("one two three four five", options);

        var got = fake.LastOptions!;
        Assert.Equal(3, got.MaxOutputTokens);
        Assert.Equal(0.25f, got.Temperature);
        Assert.Equal(0.5f, got.TopP);
        Assert.Equal(["zz", "yy"], got.StopSequences);
        Assert.Equal(1234, got.Seed);
        Assert.Equal(ServerHarness.Model, got.ModelId);
        Assert.Equal("evif ruof eerht", response.Text);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
    }

    [Fact]
    public async Task StopSequenceAndLengthLimitWhileStreaming()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);
        var client = server.OpenAIChatClient();

        var stopped = await client.GetStreamingResponseAsync("cc bb aa", new ChatOptions { StopSequences = ["bb"] }).ToChatResponseAsync();
        var limited = await client.GetStreamingResponseAsync("cc bb aa", new ChatOptions { MaxOutputTokens = 1 }).ToChatResponseAsync();

        Assert.Equal("aa ", stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);
        Assert.Equal("aa", limited.Text);
        Assert.Equal(ChatFinishReason.Length, limited.FinishReason);
    }

    [Fact]
    public async Task UsageIsReported()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake);

        var response = await server.OpenAIChatClient().GetResponseAsync(Conversation);

        Assert.Equal(13, response.Usage?.InputTokenCount);   // 4 + 2 + 2 + 5 words
        Assert.Equal(5, response.Usage?.OutputTokenCount);
        Assert.Equal(18, response.Usage?.TotalTokenCount);
    }

    [Fact]
    public async Task ApiKeyIsRequiredAndAccepted()
    {
        var fake = new EchoChatClient();
        await using var server = await ServerHarness.StartAsync(fake, o => o.ApiKey = "sk-secret");

        var ok = await server.OpenAIChatClient("sk-secret").GetResponseAsync("hello there");
        var wrong = await Assert.ThrowsAsync<ClientResultException>(() => server.OpenAIChatClient("sk-wrong").GetResponseAsync("hi"));
        var wrongStream = await Assert.ThrowsAsync<ClientResultException>(
            () => server.OpenAIChatClient("sk-wrong").GetStreamingResponseAsync("hi").ToChatResponseAsync());

        Assert.Equal("ereht olleh", ok.Text);
        Assert.Equal(401, wrong.Status);
        Assert.Equal(401, wrongStream.Status);
        await ServerHarness.AssertErrorAsync(await server.PostChatAsync("""{"messages":[{"role":"user","content":"hi"}]}"""), 401, code: "invalid_api_key");
        await ServerHarness.AssertErrorAsync(await server.Http.GetAsync("v1/models"), 401, code: "invalid_api_key");
        Assert.Equal(200, (int)(await server.Http.GetAsync("health")).StatusCode);
    }

    [Fact]
    public async Task UnknownModelIsRejectedByTheClientToo()
    {
        await using var server = await ServerHarness.StartAsync(new EchoChatClient());

        var e = await Assert.ThrowsAsync<ClientResultException>(() => server.OpenAIChatClient(model: "gpt-4o").GetResponseAsync("hi"));

        Assert.Equal(404, e.Status);
        Assert.Contains("gpt-4o", e.Message);
    }
}
