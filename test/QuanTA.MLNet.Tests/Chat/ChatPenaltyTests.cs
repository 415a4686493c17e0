using Microsoft.Extensions.AI;
using QuanTA.MLNet.Chat;

namespace QuanTA.MLNet.Tests.Chat;

/// <summary>QuanTAChatClient honours ChatOptions.FrequencyPenalty / PresencePenalty and AdditionalProperties["repetition_penalty"].</summary>
public class ChatPenaltyTests
{
    [Fact]
    public void ChatOptionsMapToGenerationOptions()
    {
        var plain = QuanTAChatClient.ToGenerationOptions(new ChatOptions(), 16);
        Assert.Equal((1.0, 0.0, 0.0), (plain.RepetitionPenalty, plain.FrequencyPenalty, plain.PresencePenalty));
        Assert.False(plain.HasPenalties);

        var o = new ChatOptions
        {
            FrequencyPenalty = 0.5f, PresencePenalty = -1.25f,
            AdditionalProperties = new() { [QuanTAChatClient.RepetitionPenaltyKey] = 1.3 },
        };
        var g = QuanTAChatClient.ToGenerationOptions(o, 16);
        Assert.Equal(0.5, g.FrequencyPenalty);
        Assert.Equal(-1.25, g.PresencePenalty);
        Assert.Equal(1.3, g.RepetitionPenalty);
        Assert.True(g.Greedy);                                             // penalties do not turn sampling on

        // The value may come as any number type, a JSON number (a JSON-deserialized dictionary) or a numeric string.
        foreach (object value in new object[] { 1.5f, 2, 1.5m, System.Text.Json.JsonDocument.Parse("1.5").RootElement, "1.5" })
        {
            var r = QuanTAChatClient.ToGenerationOptions(new ChatOptions { AdditionalProperties = new() { ["repetition_penalty"] = value } }, 16);
            Assert.Equal(value is int ? 2.0 : 1.5, r.RepetitionPenalty);
        }
    }

    [Theory]
    [InlineData("FrequencyPenalty")]
    [InlineData("PresencePenalty")]
    [InlineData("repetition_penalty")]
    [InlineData("repetition_penalty_type")]
    public void BadPenaltiesAreRefusedNamingTheChatOption(string which)
    {
        var o = which switch
        {
            "FrequencyPenalty" => new ChatOptions { FrequencyPenalty = 3f },
            "PresencePenalty" => new ChatOptions { PresencePenalty = -2.5f },
            "repetition_penalty" => new ChatOptions { AdditionalProperties = new() { ["repetition_penalty"] = 0.0 } },
            _ => new ChatOptions { AdditionalProperties = new() { ["repetition_penalty"] = "strong" } },
        };
        var e = Assert.Throws<ArgumentException>(() => QuanTAChatClient.ToGenerationOptions(o, 16));
        var expected = which.StartsWith("repetition", StringComparison.Ordinal) ? "ChatOptions.AdditionalProperties[\"repetition_penalty\"]" : "ChatOptions." + which;
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public async Task PenaltiesChangeWhatTheUntunedModelSays()
    {
        // The untuned base model rambles and loops; every penalty, passed through ChatOptions, changes its greedy answer.
        using var client = QuanTAChatClient.FromModelFolder(ToyData.Fixture("llama-tiny"), options: new QuanTAChatClientOptions { ChatTemplate = ChatFixture.Template });
        List<ChatMessage> ask = [new(ChatRole.User, "rose")];
        async Task<string> Answer(ChatOptions o) => (await client.GetResponseAsync(ask, o)).Text;
        var plain = await Answer(new ChatOptions { MaxOutputTokens = 24 });
        Assert.Equal(plain, await Answer(new ChatOptions { MaxOutputTokens = 24 }));     // greedy: deterministic
        Assert.NotEqual(plain, await Answer(new ChatOptions { MaxOutputTokens = 24, FrequencyPenalty = 1.5f }));
        Assert.NotEqual(plain, await Answer(new ChatOptions { MaxOutputTokens = 24, PresencePenalty = 1.5f }));
        Assert.NotEqual(plain, await Answer(new ChatOptions { MaxOutputTokens = 24, AdditionalProperties = new() { ["repetition_penalty"] = 1.5 } }));
    }
}
