using System.Text.Encodings.Web;
using System.Text.Json;

namespace QuanTA.Core.Chat;

/// <summary>
/// A conversation as one JSON string, <c>[{"role":"user","content":"..."},...]</c>: how a conversation travels in a single
/// text column (ML.NET data views have no list-of-records type).
/// </summary>
public static class ChatJson
{
    static readonly JsonWriterOptions WriterOptions = new()
    {
        Indented = false,
        // Keeps non-ASCII text readable (no \uXXXX); the string is data, never embedded in HTML.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>The turns as a compact JSON array of <c>{"role", "content"}</c> objects.</summary>
    /// <param name="turns">The conversation; no turn, role or content may be null.</param>
    public static string Serialize(IReadOnlyList<ChatTurn> turns)
    {
        ArgumentNullException.ThrowIfNull(turns);
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, WriterOptions))
        {
            w.WriteStartArray();
            for (int i = 0; i < turns.Count; i++)
            {
                var t = turns[i] ?? throw new ArgumentException($"Turn {i} is null.", nameof(turns));
                if (t.Role is null || t.Content is null)
                    throw new ArgumentException($"Turn {i} has a null {(t.Role is null ? "role" : "content")}.", nameof(turns));
                w.WriteStartObject();
                w.WriteString("role", t.Role);
                w.WriteString("content", t.Content);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>
    /// Reads a conversation written by <see cref="Serialize"/> (or any JSON array of <c>{"role", "content"}</c> objects with
    /// string values; other keys are ignored). Throws <see cref="InvalidDataException"/> naming the turn and key at fault.
    /// </summary>
    /// <param name="json">The JSON text.</param>
    public static IReadOnlyList<ChatTurn> Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Conversation JSON is not valid JSON {ChatDataFile.Describe(e)}.", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException(
                    $"Conversation JSON must be an array of {{\"role\", \"content\"}} objects, not {ChatRecords.Kind(root)}.");
            try { return ChatRecords.ReadTurns(root, "", shareGpt: false, strict: false); }
            catch (InvalidDataException e) { throw new InvalidDataException($"Conversation JSON: {e.Message}.", e); }
        }
    }
}
