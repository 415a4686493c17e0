namespace QuanTA.Core.Chat;

/// <summary>
/// Built-in chat templates: the models' own <c>chat_template</c> strings, copied verbatim from their
/// <c>tokenizer_config.json</c> (sources in <c>src/QuanTA.Core/Chat/Templates/BuiltIn/README.md</c>). Use one for a
/// model folder that has no template: <see cref="ChatTemplate.FromModelFolder"/> with the name as override.
/// </summary>
public static class ChatTemplates
{
    /// <summary>meta-llama/Llama-2-7b-chat-hf: <c>&lt;s&gt;[INST] &lt;&lt;SYS&gt;&gt;...[/INST] answer &lt;/s&gt;</c>; roles must alternate.</summary>
    public const string Llama2 = "llama2";

    /// <summary>meta-llama/Meta-Llama-3-8B-Instruct: <c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\n...&lt;|eot_id|&gt;</c>.</summary>
    public const string Llama3 = "llama3";

    /// <summary>mistralai/Mistral-7B-Instruct-v0.1: <c>&lt;s&gt;[INST] ... [/INST]answer&lt;/s&gt; </c>; user/assistant only, alternating.</summary>
    public const string Mistral = "mistral";

    /// <summary>Qwen/Qwen2-7B-Instruct: ChatML (<c>&lt;|im_start|&gt;role\n...&lt;|im_end|&gt;\n</c>) with a default system prompt.</summary>
    public const string Qwen2 = "qwen2";

    /// <summary>Same template as <see cref="Qwen2"/> (ChatML as Qwen2 ships it).</summary>
    public const string ChatML = "chatml";

    /// <summary>Qwen/Qwen2.5-7B-Instruct: ChatML with Qwen's default system prompt and tool calling.</summary>
    public const string Qwen25 = "qwen2.5";

    static readonly Dictionary<string, string> ResourceFiles = new(StringComparer.OrdinalIgnoreCase)
    {
        [Llama2] = "llama2.jinja",
        [Llama3] = "llama3.jinja",
        [Mistral] = "mistral.jinja",
        [Qwen2] = "qwen2.jinja",
        [ChatML] = "qwen2.jinja",
        [Qwen25] = "qwen2.5.jinja",
    };

    static readonly Dictionary<string, Lazy<string>> Texts = ResourceFiles.ToDictionary(
        kv => kv.Key, kv => new Lazy<string>(() => ReadResource(kv.Value)), StringComparer.OrdinalIgnoreCase);

    /// <summary>The built-in names (lower case), in a stable order.</summary>
    public static IReadOnlyList<string> Names { get; } = [ChatML, Llama2, Llama3, Mistral, Qwen2, Qwen25];

    /// <summary>True when <paramref name="name"/> is a built-in template name (case-insensitive).</summary>
    public static bool Contains(string name) => ResourceFiles.ContainsKey(name);

    /// <summary>The template text of a built-in; unknown names get a <see cref="ChatTemplateException"/> listing the names.</summary>
    public static string GetText(string name) =>
        TryGetText(name, out var text) ? text
            : throw new ChatTemplateException($"'{name}' is not a built-in chat template. Built-in templates: {string.Join(", ", Names)}.");

    /// <summary>The template text of a built-in, or false for an unknown name.</summary>
    public static bool TryGetText(string name, out string text)
    {
        if (Texts.TryGetValue(name, out var lazy))
        {
            text = lazy.Value;
            return true;
        }
        text = "";
        return false;
    }

    static string ReadResource(string file)
    {
        string resource = "QuanTA.Core.Chat.Templates.BuiltIn." + file;
        using var stream = typeof(ChatTemplates).Assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"Embedded chat template '{resource}' is missing from {typeof(ChatTemplates).Assembly.GetName().Name}.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
