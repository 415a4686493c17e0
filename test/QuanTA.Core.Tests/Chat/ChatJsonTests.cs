using System.Text.Json;
using QuanTA.Core.Chat;

namespace QuanTA.Core.Tests.Chat;

/// <summary>ChatJson: a conversation in one string and back.</summary>
public class ChatJsonTests
{
    static readonly ChatTurn[] Turns =
    [
        new("system", "Answer in \"quotes\".\nTwo lines, a tab\t, a backslash \\ and <html> & ünïcödé 漢字 🙂"),
        new("user", ""),
        new("assistant", "ok"),
    ];

    [Fact]
    public void RoundTrips()
    {
        Assert.Equal(Turns, ChatJson.Parse(ChatJson.Serialize(Turns)));
        Assert.Empty(ChatJson.Parse(ChatJson.Serialize([])));
    }

    [Fact]
    public void SerializeWritesACompactArrayOfRoleAndContent()
    {
        string json = ChatJson.Serialize(Turns);
        Assert.DoesNotContain('\n', json);                       // compact: one line even with newlines in the content
        Assert.Contains("漢字", json);                            // readable, not \u escapes
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(JsonValueKind.Array, doc.RootElement.ValueKind);
        Assert.All(doc.RootElement.EnumerateArray(),
            o => Assert.Equal(["role", "content"], o.EnumerateObject().Select(p => p.Name)));
        Assert.Equal(Turns.Select(t => t.Content), doc.RootElement.EnumerateArray().Select(o => o.GetProperty("content").GetString()));
    }

    [Fact]
    public void SerializeRejectsNulls()
    {
        Assert.Throws<ArgumentNullException>(() => ChatJson.Serialize(null!));
        Assert.Throws<ArgumentException>(() => ChatJson.Serialize([new ChatTurn("user", null!)]));
    }

    [Theory]
    [InlineData("[{\"role\": \"user\"", "not valid JSON")]
    [InlineData("{\"role\": \"user\", \"content\": \"x\"}", "must be an array", "not an object")]
    [InlineData("[{\"role\": \"user\", \"content\": \"x\"}, {\"content\": \"y\"}]", "Conversation JSON: [1] has no \"role\"")]
    [InlineData("[{\"role\": \"user\", \"content\": 3}]", "Conversation JSON: [0].\"content\" must be a string, not a number")]
    [InlineData("[{\"role\": \"\", \"content\": \"x\"}]", "Conversation JSON: [0] has an empty \"role\"")]
    [InlineData("[\"x\"]", "Conversation JSON: [0] must be an object")]
    public void ParseErrorsNameTheTurnAndKey(string json, params string[] pieces)
    {
        var ex = Assert.Throws<InvalidDataException>(() => ChatJson.Parse(json));
        Assert.StartsWith("Conversation JSON", ex.Message);
        foreach (string piece in pieces) Assert.Contains(piece, ex.Message);
    }

    [Fact]
    public void ParseKeepsRolesTheTemplateMayKnow()
    {
        // Not training data: a column may carry a prompt-only conversation or a tool turn.
        var turns = ChatJson.Parse("""[{"role": "user", "content": "q"}, {"role": "tool", "content": "{}", "name": "calc"}]""");
        Assert.Equal([new ChatTurn("user", "q"), new ChatTurn("tool", "{}")], turns);
    }
}
