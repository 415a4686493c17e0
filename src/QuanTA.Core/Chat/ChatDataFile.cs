using System.Text;
using System.Text.Json;

namespace QuanTA.Core.Chat;

/// <summary>
/// Reads chat and instruction-tuning data: JSON Lines files (one JSON object per line) in the three layouts people have
/// (<see cref="ChatDataFormat"/>), into <see cref="ChatExample"/>s. A file holding one JSON array of such objects (how
/// LLM-Adapters ships commonsense_170k.json and math_10k.json) is read too.
/// </summary>
/// <remarks>
/// The whole file is read and checked before anything is returned, so training never starts on a half-read file. Every
/// problem is an <see cref="InvalidDataException"/> whose message starts with the file name and 1-based line, then names the
/// key at fault, e.g. <c>data.jsonl line 7: "messages"[2] has no "role"</c> (turn indexes are 0-based, as in JSON paths).
/// Blank lines are skipped; a UTF-8 byte order mark is accepted; keys other than the format's are ignored.
/// </remarks>
public static class ChatDataFile
{
    /// <summary>UTF-8 that throws on invalid bytes instead of reading them as U+FFFD.</summary>
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Reads and checks a whole file.</summary>
    /// <param name="path">A <c>.jsonl</c> file (or a <c>.json</c> file holding one array of records).</param>
    /// <param name="format">The layout; <see cref="ChatDataFormat.Auto"/> tells it from the first non-empty line's keys.</param>
    /// <returns>The format (given or detected) and the examples, in file order.</returns>
    /// <exception cref="InvalidDataException">The file does not hold the format, or has no examples.</exception>
    public static ChatDataSet Read(string path, ChatDataFormat format = ChatDataFormat.Auto)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using var reader = new StreamReader(path, StrictUtf8, detectEncodingFromByteOrderMarks: true);
        return Parse(reader, path, format);
    }

    /// <summary>Reads records from text in memory (or any reader); the same rules as <see cref="Read"/>.</summary>
    /// <param name="reader">The JSON Lines text.</param>
    /// <param name="sourceName">What error messages call the text (a file name).</param>
    /// <param name="format">The layout; <see cref="ChatDataFormat.Auto"/> tells it from the first non-empty line's keys.</param>
    public static ChatDataSet Parse(TextReader reader, string sourceName, ChatDataFormat format = ChatDataFormat.Auto)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(sourceName);
        if (!Enum.IsDefined(format)) throw new ArgumentOutOfRangeException(nameof(format), format, "Unknown chat data format.");
        var records = new RecordReader(sourceName, format);
        var examples = new List<ChatExample>();
        int lineNumber = 0;
        try
        {
            for (string? line; (line = reader.ReadLine()) is not null;)
            {
                lineNumber++;
                if (lineNumber == 1) line = line.TrimStart('\uFEFF');
                if (string.IsNullOrWhiteSpace(line)) continue;
                if (examples.Count == 0 && line.TrimStart().StartsWith('['))
                {
                    // One JSON array: keep the skipped lines as newlines so that positions stay file lines.
                    string text = new string('\n', lineNumber - 1) + line + "\n" + reader.ReadToEnd();
                    ReadArray(text, records, examples);
                    break;
                }
                using var doc = ParseLine(line, sourceName, lineNumber);
                examples.Add(records.ToExample(doc.RootElement, lineNumber));
            }
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"{sourceName}: not valid UTF-8 (after line {lineNumber}).", e);
        }
        if (examples.Count == 0)
            throw new InvalidDataException($"{sourceName}: no examples (the file is empty or has only blank lines or an empty array).");
        return new ChatDataSet(sourceName, records.Format, examples);
    }

    static JsonDocument ParseLine(string line, string sourceName, int lineNumber)
    {
        try { return JsonDocument.Parse(line); }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{sourceName} line {lineNumber}: not valid JSON {Describe(e)}.", e);
        }
    }

    /// <summary>Reads the records of a file that is one JSON array; each example's line is where its object starts.</summary>
    static void ReadArray(string text, RecordReader records, List<ChatExample> examples)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var reader = new Utf8JsonReader(utf8);
        int lineNumber = 1;
        long counted = 0;
        try
        {
            reader.Read();   // the '['
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                lineNumber += utf8.AsSpan((int)counted, (int)(reader.TokenStartIndex - counted)).Count((byte)'\n');
                counted = reader.TokenStartIndex;
                using var doc = JsonDocument.ParseValue(ref reader);
                examples.Add(records.ToExample(doc.RootElement, lineNumber));
            }
            reader.Read();   // throws on anything but whitespace after the ']'
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{records.Source} line {(e.LineNumber ?? 0) + 1}: not valid JSON {Describe(e)}.", e);
        }
    }

    /// <summary>"at byte N (the parser's message)", without the message's "LineNumber: 0 | BytePositionInLine: 5." tail.</summary>
    internal static string Describe(JsonException e)
    {
        string message = e.Message;
        int tail = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (tail >= 0) message = message[..tail];
        message = message.TrimEnd('.', ' ');
        return e.BytePositionInLine is long at ? $"at byte {at + 1} ({message})" : $"({message})";
    }

    /// <summary>Checks every record against the file's format (detecting it on the first) and converts it.</summary>
    sealed class RecordReader(string source, ChatDataFormat format)
    {
        ChatDataFormat _format = format;   // Auto until the first record is seen
        int _detectedFrom;                 // the line the format was detected from; 0 when it was given

        public string Source => source;
        public ChatDataFormat Format => _format;

        public ChatExample ToExample(JsonElement record, int lineNumber)
        {
            if (record.ValueKind != JsonValueKind.Object)
                throw Error(lineNumber, $"expected a JSON object, not {ChatRecords.Kind(record)}");
            var matches = ChatRecords.Matches(record);
            if (_format == ChatDataFormat.Auto)
            {
                if (matches.Count != 1)
                    throw Error(lineNumber, matches.Count == 0
                        ? $"cannot tell the format from the keys {Keys(record)}: expected {ChatRecords.ExpectedKeys}"
                        : $"fits both {matches[0]} and {matches[1]} (keys {Keys(record)}); pass --format to choose");
                _format = matches[0];
                _detectedFrom = lineNumber;
            }
            else if (matches.Count > 0 && !matches.Contains(_format))
            {
                string file = _detectedFrom > 0
                    ? $"the file is {_format} (detected from line {_detectedFrom}; pass --format to choose)"
                    : $"the format given is {_format}";
                throw new InvalidDataException($"{source} line {lineNumber} is {matches[0]} but {file}.");
            }
            try { return ChatRecords.ToExample(record, _format, lineNumber); }
            catch (InvalidDataException e) { throw Error(lineNumber, e.Message, e); }
        }

        InvalidDataException Error(int lineNumber, string what, Exception? inner = null) =>
            new($"{source} line {lineNumber}: {what}.", inner);

        static string Keys(JsonElement record)
        {
            var names = record.EnumerateObject().Select(p => ChatRecords.Q(p.Name)).ToList();
            return names.Count == 0 ? "(none)" : string.Join(", ", names);
        }
    }
}
