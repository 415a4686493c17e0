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
}
