using System.Text.Json;
using QuanTA.Core.Chat;
using QuanTA.Core.Tests.Tokenization;

namespace QuanTA.Core.Tests.Chat;

/// <summary>ChatTemplate.FromModelFolder: where the template and special tokens come from, overrides, and the errors.</summary>
public class ChatTemplateFolderTests
{
    public static TheoryData<string, string, string?, string?> ChatFolders => new()
    {
        { "tok-llama3-chat", "llama3", "<|begin_of_text|>", "<|end_of_text|>" },
        { "tok-qwen2-chat", "qwen2", null, "<|im_end|>" },
        { "tok-llama2-chat", "llama2", "<s>", "</s>" },
        { "tok-mistral-chat", "mistral", "<s>", "</s>" },
    };

    static string ChatFolder(string name) => Path.Combine(FixtureFolder.Dir(ChatReferences.Folder), name);

    [Theory]
    [MemberData(nameof(ChatFolders))]
    public void ReadsTheFoldersTemplateAndSpecialTokens(string folder, string builtIn, string? bos, string? eos)
    {
        var template = ChatTemplate.FromModelFolder(ChatFolder(folder));
        Assert.Equal(ChatTemplates.GetText(builtIn), template.Text);
        Assert.Equal(bos, template.BosToken);
        Assert.Equal(eos, template.EosToken);
        // tok-llama2-chat ships chat_template.jinja, the others tokenizer_config.json's chat_template.
        Assert.Contains(folder == "tok-llama2-chat" ? "chat_template.jinja" : "tokenizer_config.json", template.Name);
        var c = ChatReferences.Get($"{builtIn}|system-multi-turn|agp=True");
        if (c.Expected is not null && bos == ChatReferences.Templates[builtIn].BosToken)
            Assert.Equal(c.Expected, template.Render(c.Messages, c.AddGenerationPrompt));
    }

    [Fact]
    public void AFolderWithoutTemplateGetsAnErrorNamingTheFixes()
    {
        string dir = FixtureFolder.Dir("tok-llama3-style");
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromModelFolder(dir));
        Assert.Contains(dir, e.Message);
        Assert.Contains("has no chat_template", e.Message);
        Assert.Contains("QuanTAFineTuneOptions.ChatTemplate", e.Message);
        Assert.Contains("--chat-template <name|file.jinja>", e.Message);
        foreach (var name in ChatTemplates.Names) Assert.Contains(name, e.Message);
    }

    [Fact]
    public void OverridesByBuiltInNameFileOrText()
    {
        string dir = FixtureFolder.Dir("tok-llama3-style");
        var byName = ChatTemplate.FromModelFolder(dir, "Llama3");
        Assert.Equal(ChatTemplates.GetText("llama3"), byName.Text);
        Assert.Equal("llama3", byName.Name);
        Assert.Equal("<|begin_of_text|>", byName.BosToken); // the folder's special tokens

        string file = Path.Combine(ChatFolder("tok-llama2-chat"), "chat_template.jinja");
        var byFile = ChatTemplate.FromModelFolder(dir, file);
        Assert.Equal(ChatTemplates.GetText("llama2"), byFile.Text);
        Assert.Equal(file, byFile.Name);

        var byText = ChatTemplate.FromModelFolder(dir, "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}");
        Assert.Equal("<|begin_of_text|>hi", byText.Render([new ChatTurn("user", "hi")], false));

        // An override also replaces a folder's own template.
        Assert.Equal(ChatTemplates.GetText("chatml"), ChatTemplate.FromModelFolder(ChatFolder("tok-llama3-chat"), "chatml").Text);
    }

    [Fact]
    public void UnknownOverridesAreReportedClearly()
    {
        string dir = FixtureFolder.Dir("tok-llama3-style");
        var unknown = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromModelFolder(dir, "llama9"));
        Assert.Contains("'llama9' is not a built-in chat template", unknown.Message);
        foreach (var name in ChatTemplates.Names) Assert.Contains(name, unknown.Message);

        var missingFile = Assert.Throws<ChatTemplateException>(() => ChatTemplate.FromModelFolder(dir, "no/such/template.jinja"));
        Assert.Contains("'no/such/template.jinja' does not exist", missingFile.Message);

        var builtIn = Assert.Throws<ChatTemplateException>(() => ChatTemplates.GetText("vicuna"));
        Assert.Contains("Built-in templates: chatml, llama2, llama3, mistral, qwen2, qwen2.5", builtIn.Message);
        Assert.Throws<DirectoryNotFoundException>(() => ChatTemplate.FromModelFolder(Path.Combine(dir, "nope")));
    }

    [Fact]
    public void NamedTemplatesInTokenizerConfigUseDefaultOrTheOverride()
    {
        using var tmp = new FixtureFolder.TempCopy("tok-llama3-style", "tokenizer.json", "tokenizer_config.json");
        var config = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(File.ReadAllText(Path.Combine(tmp.Path, "tokenizer_config.json")))!;
        var withTemplates = config.ToDictionary(kv => kv.Key, kv => (object)kv.Value);
        withTemplates["chat_template"] = new[]
        {
            new { name = "default", template = "default:{% for m in messages %}{{ m.content }}{% endfor %}" },
            new { name = "tool_use", template = "tools:{{ tools }}" },
        };
        tmp.Write("tokenizer_config.json", JsonSerializer.Serialize(withTemplates));

        var turns = new[] { new ChatTurn("user", "x") };
        Assert.Equal("default:x", ChatTemplate.FromModelFolder(tmp.Path).Render(turns, false));
        Assert.Equal("tools:None", ChatTemplate.FromModelFolder(tmp.Path, "tool_use").Render(turns, false));

        // transformers 5 saves extra named templates as additional_chat_templates/NAME.jinja.
        Directory.CreateDirectory(Path.Combine(tmp.Path, "additional_chat_templates"));
        tmp.Write(Path.Combine("additional_chat_templates", "rag.jinja"), "rag:{{ documents }}");
        Assert.Equal("rag:None", ChatTemplate.FromModelFolder(tmp.Path, "rag").Render(turns, false));

        // A chat_template.jinja file wins over tokenizer_config.json.
        tmp.Write("chat_template.jinja", "jinja file:{{ messages[0].content }}\n");
        Assert.Equal("jinja file:x", ChatTemplate.FromModelFolder(tmp.Path).Render(turns, false));
    }
}
