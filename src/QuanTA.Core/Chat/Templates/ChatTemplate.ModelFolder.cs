using System.Text.Json;
using QuanTA.Core.Tokenization;

namespace QuanTA.Core.Chat;

public sealed partial class ChatTemplate
{
    const string JinjaFileName = "chat_template.jinja";

    /// <summary>
    /// The chat template of a Hugging Face model folder, with the folder's special tokens (bos/eos/unk/pad from
    /// <c>tokenizer_config.json</c> / <c>special_tokens_map.json</c>). The template is <c>chat_template.jinja</c> when
    /// present, else <c>tokenizer_config.json</c>'s <c>chat_template</c> (a string, or a list of <c>{name, template}</c> of
    /// which "default" is taken).
    /// </summary>
    /// <param name="dir">The model folder.</param>
    /// <param name="templateOverride">Instead of the folder's template: a built-in name (<see cref="ChatTemplates.Names"/>),
    /// the name of one of the folder's named templates, a path to a .jinja file, or the template text itself.</param>
    /// <exception cref="ChatTemplateException">The folder has no template (the message names the ways to supply one), or the
    /// override is neither a known name, an existing file nor template text.</exception>
    public static ChatTemplate FromModelFolder(string dir, string? templateOverride = null)
    {
        ArgumentNullException.ThrowIfNull(dir);
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"Model folder '{dir}' does not exist.");
        var config = TokenizerConfigFiles.Read(dir);
        var tokens = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in new[]
                 {
                     ("bos_token", config.BosToken), ("eos_token", config.EosToken), ("unk_token", config.UnkToken), ("pad_token", config.PadToken),
                 })
            if (value is not null) tokens[key] = value;

        var named = ReadConfigTemplates(dir);
        var (text, name) = templateOverride is not null
            ? ResolveOverride(templateOverride, dir, named)
            : FolderTemplate(dir, named) ?? throw new ChatTemplateException(NoTemplateMessage(dir));
        return new ChatTemplate(text, name, tokens, TimeProvider.System);
    }

    static (string Text, string Name)? FolderTemplate(string dir, IReadOnlyDictionary<string, string> named)
    {
        string jinja = Path.Combine(dir, JinjaFileName);
        if (File.Exists(jinja)) return (File.ReadAllText(jinja), jinja);
        if (named.TryGetValue("default", out var text)) return (text, $"tokenizer_config.json of {dir}");
        if (named.Count > 0)
            throw new ChatTemplateException(
                $"tokenizer_config.json in '{dir}' has named chat templates ({string.Join(", ", named.Keys)}) but none called 'default'; " +
                "pick one by name with the chat-template override (QuanTAFineTuneOptions.ChatTemplate / CLI --chat-template).");
        return null;
    }

    /// <summary>
    /// Named templates: tokenizer_config.json's chat_template (a string is the "default" entry, a list gives name →
    /// template) and, as transformers 5 saves extra templates, additional_chat_templates/NAME.jinja.
    /// </summary>
    static Dictionary<string, string> ReadConfigTemplates(string dir)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        string extra = Path.Combine(dir, "additional_chat_templates");
        if (Directory.Exists(extra))
            foreach (var file in Directory.EnumerateFiles(extra, "*.jinja").Order(StringComparer.Ordinal))
                result[Path.GetFileNameWithoutExtension(file)] = File.ReadAllText(file);
        string path = Path.Combine(dir, "tokenizer_config.json");
        if (!File.Exists(path)) return result;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (!doc.RootElement.TryGetProperty("chat_template", out var t)) return result;
            if (t.ValueKind == JsonValueKind.String) result["default"] = t.GetString()!;
            else if (t.ValueKind == JsonValueKind.Array)
                foreach (var entry in t.EnumerateArray())
                    if (entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String
                        && entry.TryGetProperty("template", out var tt) && tt.ValueKind == JsonValueKind.String)
                        result[n.GetString()!] = tt.GetString()!;
        }
        return result;
    }

    static (string Text, string Name) ResolveOverride(string value, string? dir, IReadOnlyDictionary<string, string> named)
    {
        if (ChatTemplates.TryGetText(value, out var builtIn)) return (builtIn, value.ToLowerInvariant());
        if (named.TryGetValue(value, out var namedText)) return (namedText, $"'{value}' of tokenizer_config.json of {dir}");
        foreach (var candidate in dir is null || Path.IsPathRooted(value) ? [value] : new[] { value, Path.Combine(dir, value) })
            if (!candidate.Contains('\n') && File.Exists(candidate))
                return (File.ReadAllText(candidate), candidate);
        if (value.Contains("{{", StringComparison.Ordinal) || value.Contains("{%", StringComparison.Ordinal)) return (value, "inline template");
        if (value.EndsWith(".jinja", StringComparison.OrdinalIgnoreCase) || value.Contains('/') || value.Contains('\\'))
            throw new ChatTemplateException($"Chat template file '{value}' does not exist" + (dir is null ? "." : $" (also looked in '{dir}')."));
        throw new ChatTemplateException(
            $"'{value}' is not a built-in chat template" + (named.Count > 0 ? $" nor one of the folder's named templates ({string.Join(", ", named.Keys)})" : "") +
            $", a .jinja file or template text. Built-in templates: {string.Join(", ", ChatTemplates.Names)}.");
    }

    static string NoTemplateMessage(string dir) =>
        $"The model in '{dir}' has no chat_template (no {JinjaFileName} and no \"chat_template\" in tokenizer_config.json), " +
        "so chat conversations cannot be rendered for it. Choose a template: set QuanTAFineTuneOptions.ChatTemplate, or pass " +
        $"--chat-template <name|file.jinja> to the CLI, with a built-in name ({string.Join(", ", ChatTemplates.Names)}) or a .jinja file.";
}
