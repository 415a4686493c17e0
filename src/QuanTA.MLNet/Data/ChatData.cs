using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Chat;

namespace QuanTA.MLNet;

/// <summary>The text columns of a data view loaded by <see cref="ChatData.LoadFromChatJsonl"/>.</summary>
public static class ChatColumns
{
    /// <summary>The conversation as one JSON string (<see cref="ChatJson"/>): <c>[{"role":...,"content":...},...]</c>. Always filled.</summary>
    public const string Messages = "Messages";

    /// <summary>
    /// The plain prompt: the <c>prompt</c> value, or the Alpaca instruction template filled in (<see cref="AlpacaPrompt"/>).
    /// Empty for conversations, which the model's chat template renders from <see cref="Messages"/>. The name is the
    /// fine-tuning estimator's default text column.
    /// </summary>
    public const string Text = "Text";

    /// <summary>
    /// The text to learn: the completion / Alpaca output, or the last assistant turn of a conversation. The name is the
    /// fine-tuning estimator's default target column.
    /// </summary>
    public const string Target = "Target";
}

/// <summary>ML.NET entry point for chat and instruction-tuning data in JSON Lines files.</summary>
public static class ChatData
{
    /// <summary>
    /// Reads a chat / instruction JSONL file (<c>{"messages": [...]}</c> or ShareGPT <c>{"conversations": [...]}</c>,
    /// <c>{"prompt", "completion"}</c>, or Alpaca <c>{"instruction", "input", "output"}</c>; see <see cref="ChatDataFile"/>)
    /// into a data view with one row per example and three text columns:
    /// <list type="bullet">
    /// <item><description><c>Messages</c> (<see cref="ChatColumns.Messages"/>): the conversation as <see cref="ChatJson"/>;
    /// for prompt/completion and Alpaca data a user turn (the prompt; Alpaca: the instruction, plus a blank line and the input)
    /// and an assistant turn (the completion), so every format can also be trained as chat.</description></item>
    /// <item><description><c>Text</c> (<see cref="ChatColumns.Text"/>): the plain prompt (prompt, or the LLM-Adapters Alpaca
    /// template); empty for conversations.</description></item>
    /// <item><description><c>Target</c> (<see cref="ChatColumns.Target"/>): the completion, output, or last assistant
    /// turn.</description></item>
    /// </list>
    /// The whole file is read and checked first: a bad line throws <see cref="InvalidDataException"/> naming the file, the
    /// line and the key, before any row is produced. The data view is in memory and can be shuffled.
    /// </summary>
    /// <param name="data">The data catalog (<c>mlContext.Data</c>).</param>
    /// <param name="path">The JSONL file (a <c>.json</c> file holding one array of records is read too).</param>
    /// <param name="format">The layout; <see cref="ChatDataFormat.Auto"/> tells it from the first non-empty line's keys.</param>
    public static IDataView LoadFromChatJsonl(this DataOperationsCatalog data, string path, ChatDataFormat format = ChatDataFormat.Auto)
    {
        ArgumentNullException.ThrowIfNull(data);
        return data.LoadFromChatData(ChatDataFile.Read(path, format));
    }

    /// <summary>The data view of <see cref="LoadFromChatJsonl"/> over examples already read (e.g. with
    /// <see cref="ChatDataFile.Read"/>, whose result also tells the detected <see cref="ChatDataSet.Format"/>).</summary>
    public static IDataView LoadFromChatData(this DataOperationsCatalog data, ChatDataSet set)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(set);
        var rows = set.Examples.Select(e => new ChatRow
        {
            Messages = ChatJson.Serialize(e.Messages),
            Text = set.Format == ChatDataFormat.Messages ? "" : e.Prompt,
            Target = e.Completion,
        }).ToArray();
        return data.LoadFromEnumerable(rows);
    }

    /// <summary>One row of <see cref="LoadFromChatJsonl"/>'s data view.</summary>
    internal sealed class ChatRow
    {
        [ColumnName(ChatColumns.Messages)] public string Messages { get; set; } = "";
        [ColumnName(ChatColumns.Text)] public string Text { get; set; } = "";
        [ColumnName(ChatColumns.Target)] public string Target { get; set; } = "";
    }
}
