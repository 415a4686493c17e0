using System.Text;
using QuanTA.Core.Chat;

namespace QuanTA.Core.Tests.Chat;

/// <summary>ChatDataFile: the three JSONL layouts, format detection, and errors that name the file, line and key.</summary>
public sealed class ChatDataFileTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("quanta-chatdata-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Writes the lines to data.jsonl in a fresh folder and returns its path.</summary>
    string Write(params string[] lines) => WriteText(string.Join("\n", lines) + "\n");

    string WriteText(string text, bool bom = false, string name = "data.jsonl")
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text, new UTF8Encoding(bom));
        return path;
    }

    static void AssertTurns(IReadOnlyList<ChatTurn> actual, params (string Role, string Content)[] expected) =>
        Assert.Equal(expected.Select(t => new ChatTurn(t.Role, t.Content)), actual);

    [Fact]
    public void MessagesMultiTurnWithSystem()
    {
        var set = ChatDataFile.Read(Write(
            """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}""",
            """{"messages": [{"role": "user", "content": "Ünïcode \"quoted\"\nline"}, {"role": "assistant", "content": "ok"}], "id": 7}"""));

        Assert.Equal(ChatDataFormat.Messages, set.Format);
        Assert.Equal(2, set.Examples.Count);
        var first = set.Examples[0];
        Assert.Equal(1, first.LineNumber);
        AssertTurns(first.Messages, ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), ("user", "2+2?"), ("assistant", "4"));
        Assert.Equal("", first.Prompt);
        Assert.Equal("4", first.Completion);   // the last assistant turn
        AssertTurns(set.Examples[1].Messages, ("user", "Ünïcode \"quoted\"\nline"), ("assistant", "ok"));
        Assert.Equal(2, set.Examples[1].LineNumber);
    }

    [Fact]
    public void LastAssistantTurnIsTheCompletionEvenWhenAUserTurnFollows()
    {
        var set = ChatDataFile.Read(Write(
            """{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}"""));
        Assert.Equal("b", set.Examples[0].Completion);
        Assert.Equal(3, set.Examples[0].Messages.Count);
    }

    [Fact]
    public void ShareGptConversationsMapToChatRoles()
    {
        var set = ChatDataFile.Read(Write(
            """{"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]}"""));
        Assert.Equal(ChatDataFormat.Messages, set.Format);
        AssertTurns(set.Examples[0].Messages, ("system", "S"), ("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2"));
        Assert.Equal("A2", set.Examples[0].Completion);
    }

    [Fact]
    public void PromptCompletion()
    {
        var set = ChatDataFile.Read(Write("""{"prompt": "The sky is", "completion": " blue."}""", """{"completion": "x", "prompt": ""}"""));
        Assert.Equal(ChatDataFormat.PromptCompletion, set.Format);
        var e = set.Examples[0];
        Assert.Equal(("The sky is", " blue."), (e.Prompt, e.Completion));
        AssertTurns(e.Messages, ("user", "The sky is"), ("assistant", " blue."));
        Assert.Equal(("", "x"), (set.Examples[1].Prompt, set.Examples[1].Completion));
    }

    [Fact]
    public void AlpacaWithAndWithoutInput()
    {
        var set = ChatDataFile.Read(Write(
            """{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "answer": "5"}""",
            """{"instruction": "Name a colour.", "output": "Red"}""",
            """{"instruction": "Name a colour.", "input": "", "output": "Red"}""",
            """{"instruction": "Name a colour.", "input": null, "output": "Red"}"""));

        Assert.Equal(ChatDataFormat.Alpaca, set.Format);
        var withInput = set.Examples[0];
        Assert.Equal(AlpacaPrompt.Build("Add the numbers.", "2 and 3"), withInput.Prompt);
        Assert.Equal("5", withInput.Completion);
        AssertTurns(withInput.Messages, ("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5"));

        foreach (var noInput in set.Examples.Skip(1))
        {
            Assert.Equal(AlpacaPrompt.Build("Name a colour.", null), noInput.Prompt);
            AssertTurns(noInput.Messages, ("user", "Name a colour."), ("assistant", "Red"));
        }
        Assert.Contains("### Input:", withInput.Prompt);
        Assert.DoesNotContain("### Input:", set.Examples[1].Prompt);
    }

    [Fact]
    public void AlpacaPromptIsLlmAdaptersGeneratePromptWithoutTheOutput()
    {
        // generate_prompt in LLM-Adapters' finetune.py (commit 281b7a78), transcribed line by line: the f-string keeps its
        // 16-space source indentation, also on the blank lines; "request. " / "request.  " end the first line.
        const string I = "                ";
        string withInput = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request. \n" +
                           "\n" +
                           I + "### Instruction:\n" + I + "{instruction}\n" + I + "\n" +
                           I + "### Input:\n" + I + "{input}\n" + I + "\n" +
                           I + "### Response:\n" + I + "{output}";
        string noInput = "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n" +
                         "\n" +
                         I + "### Instruction:\n" + I + "{instruction}\n" + I + "\n" +
                         I + "### Response:\n" + I + "{output}";

        Assert.Equal(withInput.Replace("{instruction}", "Solve").Replace("{input}", "1+1").Replace("{output}", ""),
            AlpacaPrompt.Build("Solve", "1+1"));
        Assert.Equal(noInput.Replace("{instruction}", "Solve").Replace("{output}", ""), AlpacaPrompt.Build("Solve", ""));
    }

    [Theory]
    [InlineData(ChatDataFormat.Messages, """{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}""")]
    [InlineData(ChatDataFormat.Messages, """{"prompt": "first user turn", "prompt_id": "x", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}""")]
    [InlineData(ChatDataFormat.PromptCompletion, """{"prompt": "q", "completion": "a"}""")]
    [InlineData(ChatDataFormat.Alpaca, """{"instruction": "q", "output": "a"}""")]
    public void DetectsTheFormatAndAcceptsItWhenGiven(ChatDataFormat expected, string line)
    {
        string path = Write(line, line);
        Assert.Equal(expected, ChatDataFile.Read(path).Format);
        Assert.Equal(expected, ChatDataFile.Read(path, expected).Format);
        Assert.Equal(2, ChatDataFile.Read(path, expected).Examples.Count);
    }

    [Fact]
    public void ExplicitFormatThatDisagreesWithALineIsAnError()
    {
        string path = Write("""{"instruction": "q", "output": "a"}""");
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path, ChatDataFormat.Messages));
        Assert.Contains($"{path} line 1 is Alpaca but the format given is Messages", ex.Message);

        var ex2 = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path, ChatDataFormat.PromptCompletion));
        Assert.Contains("line 1 is Alpaca", ex2.Message);
    }

    [Fact]
    public void BlankLinesAreSkippedAndLinesKeepTheirFileNumbers()
    {
        string path = WriteText("\n  \n{\"prompt\": \"a\", \"completion\": \"b\"}\r\n\r\n\t\n{\"prompt\": \"c\", \"completion\": \"d\"}\n\n");
        var set = ChatDataFile.Read(path);
        Assert.Equal([3, 6], set.Examples.Select(e => e.LineNumber));
        Assert.Equal(["b", "d"], set.Examples.Select(e => e.Completion));
    }

    [Fact]
    public void Utf8ByteOrderMarkIsAccepted()
    {
        string path = WriteText("{\"prompt\": \"é\", \"completion\": \"ß\"}\n", bom: true);
        Assert.Equal(0xEF, File.ReadAllBytes(path)[0]);
        var e = ChatDataFile.Read(path).Examples.Single();
        Assert.Equal(("é", "ß"), (e.Prompt, e.Completion));

        var fromText = ChatDataFile.Parse(new StringReader("\uFEFF{\"prompt\": \"é\", \"completion\": \"ß\"}"), "mem");
        Assert.Equal("ß", fromText.Examples.Single().Completion);
        Assert.Equal("mem", fromText.Source);
    }

    [Fact]
    public void AJsonArrayFileIsReadWithTheLinesWhereItsObjectsStart()
    {
        // commonsense_170k.json / math_10k.json are indented JSON arrays, not JSONL.
        string path = WriteText("[\n  {\n    \"instruction\": \"q1\",\n    \"output\": \"a1\"\n  },\n  {\"instruction\": \"q2\", \"input\": \"i\", \"output\": \"a2\"}\n]\n",
            name: "math_10k.json");
        var set = ChatDataFile.Read(path);
        Assert.Equal(ChatDataFormat.Alpaca, set.Format);
        Assert.Equal([2, 6], set.Examples.Select(e => e.LineNumber));
        Assert.Equal(AlpacaPrompt.Build("q2", "i"), set.Examples[1].Prompt);

        string bad = WriteText("[\n{\"instruction\": \"q\", \"output\": \"a\"},\n\n{\"instruction\": \"q\", \"output\": 5}\n]", name: "bad.json");
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(bad));
        Assert.Contains($"{bad} line 4: \"output\" must be a string", ex.Message);

        string broken = WriteText("[\n{\"instruction\": \"q\", \"output\": \"a\"},\n{\"instruction\": \n", name: "broken.json");
        var ex2 = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(broken));
        Assert.Contains($"{broken} line ", ex2.Message);
        Assert.Contains("not valid JSON", ex2.Message);
    }

    [Fact]
    public void InvalidUtf8IsAnErrorNamingTheFile()
    {
        string path = Path.Combine(_dir, "latin1.jsonl");
        File.WriteAllBytes(path, [.. "{\"prompt\": \""u8, 0xE9, .. "\", \"completion\": \"x\"}\n"u8]);
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path));
        Assert.Contains(path, ex.Message);
        Assert.Contains("UTF-8", ex.Message);
    }

    [Theory]
    [InlineData("")]
    [InlineData("\n\n   \n")]
    [InlineData("[]")]
    public void NoExamplesIsAnError(string text)
    {
        string path = WriteText(text);
        var ex = Assert.Throws<InvalidDataException>(() => ChatDataFile.Read(path));
        Assert.Contains($"{path}: no examples", ex.Message);
    }
}
