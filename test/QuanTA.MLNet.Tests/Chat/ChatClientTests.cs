using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.ML.Data;
using QuanTA.Core.Generation;
using QuanTA.MLNet.Chat;

namespace QuanTA.MLNet.Tests.Chat;

/// <summary>QuanTAChatClient over the fine-tuned toy chat model: responses, streaming, options, usage, sources, concurrency.</summary>
public class ChatClientTests(ChatFixture f) : IClassFixture<ChatFixture>
{
    static List<ChatMessage> Ask(string word) => [new(ChatRole.System, ChatFixture.System), new(ChatRole.User, word)];

    [Fact]
    public async Task AnswersLikeTheTransformerAndStreamsTheSameText()
    {
        using var client = new QuanTAChatClient(f.Model);
        foreach (var (word, kind) in ChatFixture.Pairs)
        {
            var response = await client.GetResponseAsync(Ask(word), new ChatOptions { MaxOutputTokens = 8 });
            Assert.Equal(kind, response.Text.Trim());
            Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
            Assert.Equal(ChatFinishReason.Stop, response.FinishReason);                 // the answer ended with eos
            var pieces = new List<string>();
            await foreach (var u in client.GetStreamingResponseAsync(Ask(word), new ChatOptions { MaxOutputTokens = 8 })) pieces.Add(u.Text);
            Assert.Equal(response.Text, string.Concat(pieces));
            Assert.True(pieces.Count(p => p.Length > 0) >= 1);
        }
    }

    [Fact]
    public async Task UsageCountsThePromptAndTheAnswer()
    {
        using var client = new QuanTAChatClient(f.Model);
        var messages = Ask("oak");
        var response = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 4 });
        var model = f.Model.Model;
        var prompt = client.RenderPrompt(messages);
        Assert.Equal("<|endoftext|>Name the kind.\nQ: oak\nA:", prompt);
        Assert.Equal(model.Tokenizer.Encode(prompt, addSpecialTokens: false).Length, response.Usage!.InputTokenCount);
        var answerTokens = model.Tokenizer.Encode(response.Text, addSpecialTokens: false).Length;
        Assert.Equal(answerTokens + 1, response.Usage.OutputTokenCount);                 // + the eos that ended it
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task MaxOutputTokensStopSequencesAndSamplingOptionsApply()
    {
        using var client = new QuanTAChatClient(f.Model);
        var one = await client.GetResponseAsync(Ask("car"), new ChatOptions { MaxOutputTokens = 1 });
        Assert.Equal(ChatFinishReason.Length, one.FinishReason);
        Assert.Equal(1, one.Usage!.OutputTokenCount);
        var full = (await client.GetResponseAsync(Ask("car"), new ChatOptions { MaxOutputTokens = 4 })).Text;
        var cut = await client.GetResponseAsync(Ask("car"), new ChatOptions { MaxOutputTokens = 4, StopSequences = [full.Trim()[2..]] });
        Assert.Equal(full[..full.IndexOf(full.Trim()[2..], StringComparison.Ordinal)], cut.Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        // Sampling with a seed is reproducible.
        var sampled = new ChatOptions { MaxOutputTokens = 4, Temperature = 1.5f, TopK = 50, Seed = 7 };
        Assert.Equal((await client.GetResponseAsync(Ask("car"), sampled)).Text, (await client.GetResponseAsync(Ask("car"), sampled)).Text);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Ask("car"), new ChatOptions { TopP = 1.5f }));
    }

    [Fact]
    public async Task CancellationStopsAStreamMidway()
    {
        // The untuned base model rambles (its random head seldom picks eos): cancel after the first piece of a long answer.
        using var client = QuanTAChatClient.FromModelFolder(ToyData.Fixture("llama-tiny"), options: new QuanTAChatClientOptions { ChatTemplate = ChatFixture.Template });
        using var cts = new CancellationTokenSource();
        int pieces = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in client.GetStreamingResponseAsync(Ask("rose"), new ChatOptions { MaxOutputTokens = 200 }, cts.Token))
                if (u.Text.Length > 0 && ++pieces == 1) cts.Cancel();
            Assert.Fail($"the stream ended after {pieces} pieces, before it could be cancelled");
        });
        // The model is free again afterwards.
        var again = await client.GetResponseAsync(Ask("rose"), new ChatOptions { MaxOutputTokens = 3 });
        Assert.Equal(ChatFinishReason.Length, again.FinishReason);
    }

    [Fact]
    public async Task ConcurrentRequestsGetTheSameAnswersAsSequentialOnes()
    {
        using var client = new QuanTAChatClient(f.Model);
        var words = ChatFixture.Pairs.Select(p => p.Word).Concat(ChatFixture.Pairs.Select(p => p.Word)).ToList();
        var sequential = new List<string>();
        foreach (var w in words) sequential.Add((await client.GetResponseAsync(Ask(w), new ChatOptions { MaxOutputTokens = 4 })).Text);
        var parallel = await Task.WhenAll(words.Select(w => Task.Run(() => client.GetResponseAsync(Ask(w), new ChatOptions { MaxOutputTokens = 4 }))));
        Assert.Equal(sequential, parallel.Select(r => r.Text));
    }

    [Theory]
    [InlineData("tpu")]
    [InlineData("cpu:1")]
    [InlineData("cuda:x")]
    public void ASavedModelWithABadDeviceIsRefusedNamingTheOption(string device)
    {
        var e = Assert.Throws<ArgumentException>(() => QuanTAChatClient.FromSavedModel(f.Zip, options: new QuanTAChatClientOptions { Device = device }));
        Assert.Equal($"QuanTAChatClientOptions.Device '{device}' is not cpu, cuda or cuda:N. (Parameter 'options')", e.Message);
    }

    [Fact]
    public async Task SavedModelAndModelFolderSourcesWork()
    {
        using var direct = new QuanTAChatClient(f.Model);
        using var fromZip = QuanTAChatClient.FromSavedModel(f.Zip);
        var expected = (await direct.GetResponseAsync(Ask("rose"), new ChatOptions { MaxOutputTokens = 4 })).Text;
        Assert.Equal(expected, (await fromZip.GetResponseAsync(Ask("rose"), new ChatOptions { MaxOutputTokens = 4 })).Text);
        Assert.Equal(Path.GetFileNameWithoutExtension(f.Zip), fromZip.GetService<ChatClientMetadata>()!.DefaultModelId);
        Assert.Same(fromZip, fromZip.GetService<QuanTAChatClient>());
        Assert.NotNull(fromZip.GetService<QuanTAFineTuneTransformer>());

        // The base folder without an adapter answers as the untuned model does through TextGenerator on the same prompt.
        using var untuned = QuanTAChatClient.FromModelFolder(ToyData.Fixture("llama-tiny"), options: new QuanTAChatClientOptions { ChatTemplate = ChatFixture.Template });
        var text = (await untuned.GetResponseAsync(Ask("rose"), new ChatOptions { MaxOutputTokens = 5 })).Text;
        var tok = QuanTA.Core.Tokenization.HfTokenizer.FromPretrained(ToyData.Fixture("llama-tiny"));
        using var lm = QuanTA.Core.Models.CausalLM.FromPretrained(ToyData.Fixture("llama-tiny"));
        var ids = tok.Encode(untuned.RenderPrompt(Ask("rose")), addSpecialTokens: false).Select(i => (long)i).ToArray();
        var reference = new TextGenerator(lm, new Codec(tok)).GenerateIds([ids], new GenerationOptions { MaxNewTokens = 5, EosTokenIds = tok.EosIds })[0];
        Assert.Equal(tok.Decode(reference.Select(i => (int)i)), text);
    }

    [Fact]
    public async Task WorksInsideTheMicrosoftExtensionsAIPipeline()
    {
        var services = new ServiceCollection().AddLogging().AddDistributedMemoryCache();
        services.AddChatClient(_ => new QuanTAChatClient(f.Model)).UseDistributedCache().UseLogging();
        await using var provider = services.BuildServiceProvider();
        var chat = provider.GetRequiredService<IChatClient>();
        var first = await chat.GetResponseAsync(Ask("cat"), new ChatOptions { MaxOutputTokens = 4 });
        var second = await chat.GetResponseAsync(Ask("cat"), new ChatOptions { MaxOutputTokens = 4 });
        Assert.Equal("animal", first.Text.Trim());
        Assert.Equal(first.Text, second.Text);
        Assert.Equal(QuanTAChatClient.ProviderName, chat.GetService<ChatClientMetadata>()!.ProviderName);
    }

    [Fact]
    public async Task DisposingAfterAnAbandonedStreamWaitsForTheGenerationAndRefusesNewRequests()
    {
        var client = QuanTAChatClient.FromModelFolder(ToyData.Fixture("llama-tiny"), options: new QuanTAChatClientOptions { ChatTemplate = ChatFixture.Template });
        await foreach (var u in client.GetStreamingResponseAsync(Ask("rose"), new ChatOptions { MaxOutputTokens = 200 }))
            if (u.Text.Length > 0) break;                                               // stop reading mid-answer
        client.Dispose();                                                               // frees the model: nothing may still run on it
        await Assert.ThrowsAsync<ObjectDisposedException>(() => client.GetResponseAsync(Ask("rose")));
    }

    [Fact]
    public async Task TemperatureZeroIsGreedyEvenWithTopP()
    {
        using var client = new QuanTAChatClient(f.Model);
        var greedy = (await client.GetResponseAsync(Ask("oak"), new ChatOptions { MaxOutputTokens = 6 })).Text;
        for (int seed = 0; seed < 3; seed++)
            Assert.Equal(greedy, (await client.GetResponseAsync(Ask("oak"), new ChatOptions { MaxOutputTokens = 6, Temperature = 0, TopP = 1, Seed = seed })).Text);
    }

    [Fact]
    public async Task StreamGenerationMayBeConsumedAcrossAwaits()
    {
        // The caller resumes on other threads between pieces; the model's lock lives on the generation's own thread.
        var pieces = new List<string>();
        foreach (var p in f.Model.StreamGeneration("<|endoftext|>Q: oak\nA:", new GenerationOptions { MaxNewTokens = 6 }))
        {
            pieces.Add(p);
            await Task.Delay(1);
        }
        Assert.NotEmpty(pieces);
        Assert.NotEmpty(f.Model.Transform(f.Train).GetColumn<string>("GeneratedText").Take(1));   // the lock was released
    }

    [Fact]
    public void BadRequestsAreRefusedClearly()
    {
        using var client = new QuanTAChatClient(f.Model);
        Assert.Throws<ArgumentException>(() => client.RenderPrompt([]));
        var e = Assert.Throws<NotSupportedException>(() => client.RenderPrompt([new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1 }, "image/png")])]));
        Assert.Contains("text only", e.Message);
        Assert.Throws<ArgumentException>(() => new QuanTAChatClient(f.Model, new QuanTAChatClientOptions { DefaultMaxOutputTokens = 0 }));
    }

    sealed class Codec(QuanTA.Core.Tokenization.HfTokenizer tok) : ITextCodec
    {
        public IReadOnlyList<int> Encode(string text) => tok.Encode(text, addSpecialTokens: true);
        public string Decode(IReadOnlyList<int> ids) => tok.Decode(ids, skipSpecialTokens: true);
    }
}
