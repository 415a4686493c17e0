using System.Text.Json;
using QuanTA.Core.Chat;
using QuanTA.Core.Tokenization;
using QuanTA.Core.Tests.Tokenization;

namespace QuanTA.Core.Tests.Chat;

/// <summary>
/// Token-level parity with transformers: for every case of test/fixtures/chat-templates/token-references.json (made by
/// tools/chat/make_chat_references.py on a host with transformers), HfTokenizer's ids for ChatTemplate's rendering
/// equal <c>tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=...)</c>.
/// </summary>
public class ChatTokenParityTests
{
    [Fact]
    public void RenderedAndEncodedConversationsMatchApplyChatTemplate()
    {
        string path = ChatReferences.PathOf("token-references.json");
        Assert.True(File.Exists(path),
            $"{path} is missing. Generate it on a host where transformers is importable: " +
            "`python3 tools/chat/make_chat_references.py --out $OUT` from the repository root, then copy $OUT/token-references.json " +
            "to test/fixtures/chat-templates/.");
        var root = ChatReferences.Load("token-references.json")!.Value;
        var cases = root.GetProperty("cases").EnumerateArray().ToList();
        Assert.NotEmpty(cases);

        var failures = new List<string>();
        var tokenizers = new Dictionary<string, (HfTokenizer, ChatTemplate)>();
        foreach (var c in cases)
        {
            string folder = c.GetProperty("folder").GetString()!;
            if (!tokenizers.TryGetValue(folder, out var pair))
            {
                string dir = Path.Combine(FixtureFolder.Dir(ChatReferences.Folder), folder);
                tokenizers[folder] = pair = (HfTokenizer.FromPretrained(dir), ChatTemplate.FromModelFolder(dir));
            }
            var (tokenizer, template) = pair;
            var messages = ChatReferences.Messages(c.GetProperty("messages"));
            bool agp = c.GetProperty("add_generation_prompt").GetBoolean();
            string id = $"{folder}|{c.GetProperty("conversation").GetString()}|agp={agp}";
            string text = template.Render(messages, agp);
            if (text != c.GetProperty("text").GetString()) failures.Add($"{id}: rendered text differs from apply_chat_template(tokenize=False)");
            int[] expected = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            int[] actual = tokenizer.Encode(text, addSpecialTokens: false);
            if (!expected.SequenceEqual(actual))
                failures.Add($"{id}: ids differ\n  expected [{string.Join(", ", expected)}]\n  actual   [{string.Join(", ", actual)}]");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    /// <summary>
    /// Without transformers: the chat folders' tokenizers turn each control token the template writes into its one
    /// added-token id (so the LLaMA-3 header tokens added to tok-llama3-chat are used) and decode back to the text.
    /// </summary>
    [Theory]
    [InlineData("tok-llama3-chat", "llama3|system-multi-turn", new[] { "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>" })]
    [InlineData("tok-qwen2-chat", "qwen2|system-multi-turn", new[] { "<|im_start|>", "<|im_end|>" })]
    [InlineData("tok-llama2-chat", "llama2|system-multi-turn", new[] { "<s>", "</s>" })]
    [InlineData("tok-mistral-chat", "mistral|multi-turn", new[] { "<s>", "</s>" })]
    public void ControlTokensOfTheRenderedConversationEncodeAsSingleIds(string folder, string conversation, string[] controlTokens)
    {
        string dir = Path.Combine(FixtureFolder.Dir(ChatReferences.Folder), folder);
        var tokenizer = HfTokenizer.FromPretrained(dir);
        var template = ChatTemplate.FromModelFolder(dir);
        string text = template.Render(ChatReferences.Get(conversation + "|agp=True").Messages, addGenerationPrompt: true);
        int[] ids = tokenizer.Encode(text, addSpecialTokens: false);
        foreach (var token in controlTokens)
        {
            int id = tokenizer.TokenToId(token) ?? throw new Xunit.Sdk.XunitException($"{folder} has no id for {token}");
            int inText = (text.Length - text.Replace(token, "", StringComparison.Ordinal).Length) / token.Length;
            Assert.True(inText > 0, $"{token} does not occur in the rendering");
            Assert.Equal(inText, ids.Count(i => i == id));
        }
        Assert.Equal(text, tokenizer.Decode(ids, skipSpecialTokens: false));
    }
}
