using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Chat;

namespace QuanTA.MLNet.Tests;

/// <summary>mlContext.Data.LoadFromChatJsonl: the Messages / Text / Target columns for each format.</summary>
public sealed class ChatDataTests : IDisposable
{
    static readonly MLContext Ml = new(seed: 1);
    readonly string _dir = Directory.CreateTempSubdirectory("quanta-chatdata-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string Write(params string[] lines)
    {
        string path = Path.Combine(_dir, "train.jsonl");
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    static (string[] Messages, string[] Text, string[] Target) Columns(IDataView view) =>
        (view.GetColumn<string>(ChatColumns.Messages).ToArray(), view.GetColumn<string>(ChatColumns.Text).ToArray(),
         view.GetColumn<string>(ChatColumns.Target).ToArray());

    [Fact]
    public void SchemaHasTheThreeTextColumns()
    {
        var view = Ml.Data.LoadFromChatJsonl(Write("""{"prompt": "q", "completion": "a"}"""));
        Assert.Equal([ChatColumns.Messages, ChatColumns.Text, ChatColumns.Target], view.Schema.Select(c => c.Name));
        Assert.All(view.Schema, c => Assert.IsType<TextDataViewType>(c.Type));
        Assert.Equal(("Messages", "Text", "Target"), (ChatColumns.Messages, ChatColumns.Text, ChatColumns.Target));
        Assert.Equal(ChatColumns.Text, new QuanTAFineTuneOptions().TextColumnName);          // trains with the estimator's defaults
        Assert.Equal(ChatColumns.Target, new QuanTAFineTuneOptions().TargetTextColumnName);
    }

    [Fact]
    public void ConversationsFillMessagesAndTargetAndLeaveTextEmpty()
    {
        string path = Write(
            """{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}""",
            """{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}""");
        var (messages, text, target) = Columns(Ml.Data.LoadFromChatJsonl(path));

        var expected = ChatDataFile.Read(path).Examples;
        Assert.Equal(expected.Select(e => e.Messages), messages.Select(ChatJson.Parse));
        Assert.Equal(["system", "user", "assistant", "user", "assistant"], ChatJson.Parse(messages[0]).Select(t => t.Role));
        Assert.Equal(["", ""], text);
        Assert.Equal(["A2", "Hello"], target);
    }

    [Fact]
    public void PromptCompletionFillsAllThreeColumns()
    {
        var (messages, text, target) = Columns(Ml.Data.LoadFromChatJsonl(Write(
            """{"prompt": "The sky is", "completion": " blue."}""", """{"prompt": "Grass is", "completion": " green."}""")));
        Assert.Equal(["The sky is", "Grass is"], text);
        Assert.Equal([" blue.", " green."], target);
        Assert.Equal([new ChatTurn("user", "The sky is"), new ChatTurn("assistant", " blue.")], ChatJson.Parse(messages[0]));
    }

    [Fact]
    public void AlpacaTextIsTheInstructionTemplate()
    {
        var (messages, text, target) = Columns(Ml.Data.LoadFromChatJsonl(Write(
            """{"instruction": "Add.", "input": "2 and 3", "output": "5"}""", """{"instruction": "Name a colour.", "input": "", "output": "Red"}""")));
        Assert.Equal([AlpacaPrompt.Build("Add.", "2 and 3"), AlpacaPrompt.Build("Name a colour.", "")], text);
        Assert.Equal(["5", "Red"], target);
        Assert.Equal([new ChatTurn("user", "Add.\n\n2 and 3"), new ChatTurn("assistant", "5")], ChatJson.Parse(messages[0]));
        Assert.Equal([new ChatTurn("user", "Name a colour."), new ChatTurn("assistant", "Red")], ChatJson.Parse(messages[1]));
    }

    [Fact]
    public void ViewCanBeShuffledAndCursoredTwice()
    {
        var lines = Enumerable.Range(0, 20).Select(i => $$"""{"prompt": "p{{i}}", "completion": "c{{i}}"}""").ToArray();
        var view = Ml.Data.LoadFromChatJsonl(Write(lines));
        Assert.Equal(20, view.GetRowCount());
        var shuffled = Ml.Data.ShuffleRows(view, seed: 3);
        var first = shuffled.GetColumn<string>(ChatColumns.Target).ToArray();
        Assert.Equal(Enumerable.Range(0, 20).Select(i => $"c{i}").Order(), first.Order());
        Assert.Equal(first, shuffled.GetColumn<string>(ChatColumns.Target).ToArray());
    }

    [Fact]
    public void FormatIsPassedThroughAndBadDataThrowsBeforeAnyRow()
    {
        string path = Write("""{"prompt": "q", "completion": "a"}""", """{"prompt": "q", "completion": ""}""");
        var ex = Assert.Throws<InvalidDataException>(() => Ml.Data.LoadFromChatJsonl(path));
        Assert.StartsWith($"{path} line 2: \"completion\" is empty", ex.Message);

        string alpaca = Write("""{"instruction": "q", "output": "a"}""");
        var ex2 = Assert.Throws<InvalidDataException>(() => Ml.Data.LoadFromChatJsonl(alpaca, ChatDataFormat.Messages));
        Assert.Contains($"{alpaca} line 1 is Alpaca but the format given is Messages", ex2.Message);
        Assert.Equal(["a"], Ml.Data.LoadFromChatJsonl(alpaca, ChatDataFormat.Alpaca).GetColumn<string>(ChatColumns.Target));
    }
}
