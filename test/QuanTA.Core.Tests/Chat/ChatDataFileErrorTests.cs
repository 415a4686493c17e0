using QuanTA.Core.Chat;

namespace QuanTA.Core.Tests.Chat;

/// <summary>Every bad input of ChatDataFile is an InvalidDataException naming the file, the 1-based line and the key.</summary>
public sealed class ChatDataFileErrorTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("quanta-chatdata-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    const string Conversation = """{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}""";
    const string PromptCompletion = """{"prompt": "q", "completion": "a"}""";
    const string Alpaca = """{"instruction": "q", "input": "", "output": "a"}""";

    /// <summary>(good line repeated before the bad one, the bad line, the pieces the message must contain).</summary>
    public static TheoryData<string, string, string[]> BadLines => new()
    {
        { PromptCompletion, """{"prompt": "q", "completion": "a",}""", ["not valid JSON"] },
        { PromptCompletion, """{"prompt": "q", "completion": 5}""", ["\"completion\" must be a string, not a number"] },
        { PromptCompletion, """{"prompt": null, "completion": "a"}""", ["\"prompt\" must be a string, not null"] },
        { PromptCompletion, """{"prompt": "q", "completion": "  "}""", ["\"completion\" is empty"] },
        { PromptCompletion, """{"prompt": "q"}""", ["has no \"completion\""] },
        { PromptCompletion, """["q", "a"]""", ["expected a JSON object, not an array"] },
        { Conversation, """{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"content": "x"}]}""",
            ["\"messages\"[2] has no \"role\""] },
        { Conversation, """{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}""", ["\"messages\"[0] has no \"content\""] },
        { Conversation, """{"messages": [{"role": "user", "content": ["part"]}, {"role": "assistant", "content": "a"}]}""",
            ["\"messages\"[0].\"content\" must be a string, not an array"] },
        { Conversation, """{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}""",
            ["\"messages\"[1] has unknown \"role\" \"bot\"", "assistant"] },
        { Conversation, """{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}""",
            ["\"messages\"[1] is an assistant turn with an empty \"content\""] },
        { Conversation, """{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}""",
            ["\"messages\" has no assistant turn"] },
        { Conversation, """{"messages": []}""", ["\"messages\" has no assistant turn"] },
        { Conversation, """{"messages": "hello"}""", ["\"messages\" must be an array, not a string"] },
        { Conversation, """{"messages": ["hello"]}""", ["\"messages\"[0] must be an object, not a string"] },
        { Conversation, """{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}""",
            ["\"conversations\"[1] has unknown \"from\" \"bot\"", "human, gpt or system"] },
        { Conversation, """{"conversations": [{"role": "user", "content": "q"}]}""", ["\"conversations\"[0] has no \"from\""] },
        { Conversation, """{"text": "q"}""", ["has no \"messages\""] },
        { Alpaca, """{"instruction": "q", "input": 3, "output": "a"}""", ["\"input\" must be a string, not a number"] },
        { Alpaca, """{"instruction": "q", "output": ""}""", ["\"output\" is empty"] },
        { Alpaca, """{"instruction": true, "output": "a"}""", ["\"instruction\" must be a string, not a boolean"] },
    };

    [Theory]
    [MemberData(nameof(BadLines))]
    public void BadLineIsNamedWithFileLineAndKey(string good, string bad, string[] pieces)
    {
        // Two good lines and a blank one come first, so the bad record is on file line 4.
        string path = Write(good, "", good, bad, good);
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path));
        Assert.StartsWith($"{path} line 4: ", ex.Message);
        foreach (string piece in pieces) Assert.Contains(piece, ex.Message);
    }

    [Fact]
    public void InvalidJsonOnTheFirstLineSaysWhere()
    {
        string path = Write("""{"prompt": "q" "completion": "a"}""");
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path));
        Assert.StartsWith($"{path} line 1: not valid JSON at byte 16 (", ex.Message);
        Assert.IsType<System.Text.Json.JsonException>(ex.InnerException, exactMatch: false);
    }

    [Fact]
    public void MixedFormatsNameTheLineTheFormatWasDetectedFrom()
    {
        string path = Write("", Conversation, Conversation, Alpaca);
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path));
        Assert.Equal($"{path} line 4 is Alpaca but the file is Messages (detected from line 2; pass --format to choose).", ex.Message);

        var ex2 = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(Write(Alpaca, PromptCompletion)));
        Assert.Contains("line 2 is PromptCompletion but the file is Alpaca (detected from line 1", ex2.Message);
    }

    [Fact]
    public void UnknownKeysOnTheFirstLineListTheKeysFoundAndExpected()
    {
        string path = Write("""{"text": "q", "label": 1}""");
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path));
        Assert.StartsWith($"{path} line 1: cannot tell the format", ex.Message);
        Assert.Contains("\"text\", \"label\"", ex.Message);
        Assert.Contains("\"messages\"", ex.Message);
        Assert.Contains("\"instruction\" + \"output\"", ex.Message);
    }

    [Fact]
    public void ARecordThatFitsTwoFormatsNeedsTheFormatGiven()
    {
        string both = """{"prompt": "q", "completion": "a", "instruction": "q", "output": "a"}""";
        string path = Write(both);
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path));
        Assert.Contains($"{path} line 1: fits both PromptCompletion and Alpaca", ex.Message);
        Assert.Equal("a", ChatDataFile.Read(path, ChatDataFormat.Alpaca).Examples.Single().Completion);
    }

    [Fact]
    public void ParseNamesTheSourceItWasGiven()
    {
        var ex = Assert.Throws<InvalidDataException>(() =>
            ChatDataFile.Parse(new StringReader(PromptCompletion + "\n{\"prompt\": \"q\", \"completion\": 1}"), "train-set"));
        Assert.StartsWith("train-set line 2: \"completion\" must be a string", ex.Message);
    }

    string Write(params string[] lines)
    {
        string path = Path.Combine(_dir, $"data{Directory.GetFiles(_dir).Length}.jsonl");
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }
}
