using System.Text.Json;
using QuanTA.Core.Chat;
using QuanTA.Core.Chat.Templates;
using QuanTA.Core.Tests.Tokenization;

namespace QuanTA.Core.Tests.Chat;

/// <summary>
/// Reads test/fixtures/chat-templates/references.json (and token-references.json), written by
/// tools/chat/make_chat_references.py with Jinja2 rendering exactly as transformers does.
/// </summary>
internal static class ChatReferences
{
    public const string Folder = "chat-templates";

    static readonly Lazy<JsonElement> Root = new(() => Load("references.json")!.Value);

    public static string PathOf(string file) => Path.Combine(FixtureFolder.Dir(Folder), file);

    public static JsonElement? Load(string file)
    {
        string path = PathOf(file);
        if (!File.Exists(path)) return null;
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.Clone();
    }

    /// <summary>A conversation case: template × conversation × add_generation_prompt, with the expected text or error.</summary>
    public sealed record Case(string Template, string Conversation, bool AddGenerationPrompt, ChatTurn[] Messages, string? Expected,
        string? ErrorType, string? Error)
    {
        public string Id => $"{Template}|{Conversation}|agp={AddGenerationPrompt}";
    }

    /// <summary>A template of references.json: its file (relative to the repository root) and special tokens.</summary>
    public sealed record TemplateInfo(string Name, string File, string? BosToken, string? EosToken)
    {
        /// <summary>The template text: the embedded built-in for BuiltIn files, else the fixture copy under extra/.</summary>
        public string Text => File.Contains("/BuiltIn/", StringComparison.Ordinal)
            ? ChatTemplates.GetText(Path.GetFileNameWithoutExtension(File))
            : System.IO.File.ReadAllText(PathOf(Path.Combine("extra", Path.GetFileName(File))));
    }

    public static IReadOnlyDictionary<string, TemplateInfo> Templates =>
        Root.Value.GetProperty("templates").EnumerateObject().ToDictionary(p => p.Name, p => new TemplateInfo(p.Name,
            p.Value.GetProperty("file").GetString()!, OptString(p.Value, "bos_token"), OptString(p.Value, "eos_token")));

    public static IEnumerable<Case> Cases => Root.Value.GetProperty("cases").EnumerateArray().Select(c => new Case(
        c.GetProperty("template").GetString()!, c.GetProperty("conversation").GetString()!, c.GetProperty("add_generation_prompt").GetBoolean(),
        Messages(c.GetProperty("messages")), OptString(c, "expected"), OptString(c, "error_type"), OptString(c, "error")));

    public static Case Get(string id) => Cases.Single(c => c.Id == id);

    /// <summary>An evaluator case: a small template, its variables (JSON) and Jinja2's output or error.</summary>
    public sealed record EngineCase(string Name, string Template, JsonElement Variables, string? Expected, string? ErrorType, string? Error);

    public static IEnumerable<EngineCase> EngineCases => Root.Value.GetProperty("engine_cases").EnumerateArray().Select(c => new EngineCase(
        c.GetProperty("name").GetString()!, c.GetProperty("template").GetString()!, c.GetProperty("variables"),
        OptString(c, "expected"), OptString(c, "error_type"), OptString(c, "error")));

    public static ChatTurn[] Messages(JsonElement array) =>
        array.EnumerateArray().Select(m => new ChatTurn(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToArray();

    static string? OptString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    /// <summary>JSON as the evaluator's values (what json.load gives Python): objects → dict, arrays → list, ints → long.</summary>
    public static object? ToValue(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().Aggregate(new JinjaDict(), (d, p) => { d.Set(p.Name, ToValue(p.Value)); return d; }),
        JsonValueKind.Array => e.EnumerateArray().Select(ToValue).ToList(),
        JsonValueKind.String => e.GetString(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null => null,
        JsonValueKind.Number => e.GetRawText().IndexOfAny(['.', 'e', 'E']) >= 0 ? (object)e.GetDouble() : e.GetInt64(),
        _ => throw new InvalidDataException($"unexpected JSON {e.ValueKind}"),
    };

    public static Dictionary<string, object?> Variables(JsonElement e) =>
        e.EnumerateObject().ToDictionary(p => p.Name, p => ToValue(p.Value));

    /// <summary>A clock at the reference's fixed strftime_now time (2024-07-26 09:05:03 local).</summary>
    public sealed class FixedClock(DateTime local) : TimeProvider
    {
        public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
        public override DateTimeOffset GetUtcNow() => new(DateTime.SpecifyKind(local, DateTimeKind.Utc));
    }

    public static FixedClock ReferenceClock =>
        new(DateTime.Parse(Root.Value.GetProperty("strftime_now").GetString()!, System.Globalization.CultureInfo.InvariantCulture));
}
