using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.MLNet;

namespace QuanTA.Cli.Commands;

/// <summary>TSV/CSV loading with every column read as text, columns named from the header row; chat / instruction JSONL.</summary>
internal static class TextData
{
    /// <summary>True for the chat / instruction data files (.jsonl, or .json holding one array of records).</summary>
    public static bool IsChatFile(string path) => Path.GetExtension(path).ToLowerInvariant() is ".jsonl" or ".json";

    /// <summary>
    /// Loads <paramref name="path"/>: TSV/CSV as text columns, or JSONL chat data (generation only), setting
    /// <see cref="QuanTAFineTuneOptions.MessagesColumnName"/> for conversations (and with <paramref name="asChat"/> for every layout).
    /// </summary>
    public static IDataView Load(MLContext ml, string path, QuanTAFineTuneOptions o, string format, bool asChat)
    {
        if (!IsChatFile(path))
        {
            if (asChat) throw new ArgumentException("--as-chat applies to .jsonl chat / instruction data; for a .tsv/.csv file name its conversation column with --messages-column.");
            return Load(ml, path);
        }
        if (o.Task != QuanTATask.TextGeneration)
            throw new ArgumentException($"'{path}' is chat / instruction data: fine-tune it with --task generation.");
        var layout = format.Trim().ToLowerInvariant() switch
        {
            "auto" => QuanTA.Core.Chat.ChatDataFormat.Auto,
            "messages" => QuanTA.Core.Chat.ChatDataFormat.Messages,
            "prompt-completion" => QuanTA.Core.Chat.ChatDataFormat.PromptCompletion,
            "alpaca" => QuanTA.Core.Chat.ChatDataFormat.Alpaca,
            _ => throw new ArgumentException($"--data-format '{format}' is not auto, messages, prompt-completion or alpaca."),
        };
        var set = QuanTA.Core.Chat.ChatDataFile.Read(path, layout);
        if (set.Format == QuanTA.Core.Chat.ChatDataFormat.Messages || asChat) o.MessagesColumnName ??= ChatColumns.Messages;
        else { o.TextColumnName = ChatColumns.Text; o.TargetTextColumnName = ChatColumns.Target; }
        Console.Error.WriteLine($"{path}: {set.Examples.Count} {set.Format} examples, trained " +
            (o.MessagesColumnName is not null ? "as conversations through the chat template (loss on assistant turns)" : "as prompt + completion text (loss on the completion)"));
        return ml.Data.LoadFromChatData(set);
    }

    public static IDataView Load(MLContext ml, string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Data file '{path}' not found.");
        char sep = Path.GetExtension(path).Equals(".csv", StringComparison.OrdinalIgnoreCase) ? ',' : '\t';
        var header = File.ReadLines(path).FirstOrDefault() ?? throw new InvalidDataException($"'{path}' is empty.");
        var names = header.Split(sep).Select(n => n.Trim().Trim('"')).ToArray();
        string sepName = sep == '\t' ? "tab" : "comma";
        for (int i = 0; i < names.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(names[i]))
                throw new InvalidDataException($"'{path}' line 1 (the header) has no name for column {i + 1} of {names.Length}: the first line must " +
                    $"name every {sepName}-separated column, e.g. Text{(sep == '\t' ? "<TAB>" : ",")}Label (a header ending in a {sepName} adds an unnamed column).");
            if (Array.IndexOf(names, names[i]) < i)
                throw new InvalidDataException($"'{path}' line 1 (the header) names column '{names[i]}' twice (columns {Array.IndexOf(names, names[i]) + 1} " +
                    $"and {i + 1}): rename one so that each column can be selected by name.");
        }
        var columns = names.Select((n, i) => new TextLoader.Column(n, DataKind.String, i)).ToArray();
        return ml.Data.LoadFromTextFile(path, columns, separatorChar: sep, hasHeader: true, allowQuoting: true, trimWhitespace: false);
    }

    /// <summary>The QuanTA transformer inside a model loaded from <paramref name="path"/>; a valid ML.NET model without one
    /// is "not a QuanTA model", with the file's path and size.</summary>
    public static QuanTAFineTuneTransformer FindQuanTA(ITransformer model, string path)
    {
        if (QuanTAFineTuneTransformer.FindIn(model) is { } quanta) return quanta;
        (model as IDisposable)?.Dispose();
        throw new InvalidDataException($"The model file '{path}' ({new FileInfo(path).Length.ToString(CultureInfo.InvariantCulture)} bytes) " +
            "is not a QuanTA model: it is an ML.NET model without a QuanTA fine-tuning step. Give a model .zip written by quanta finetune.");
    }

    /// <summary>The QuanTA transformer inside a fitted or loaded model (<see cref="QuanTAFineTuneTransformer.FindIn"/>).</summary>
    public static QuanTAFineTuneTransformer FindQuanTA(ITransformer model)
        => QuanTAFineTuneTransformer.FindIn(model) ?? throw new InvalidDataException("The model has no QuanTA fine-tuning step.");
}
