using System.Text;
using QuanTA.Core.Chat;
using QuanTA.Tests.Robustness;

namespace QuanTA.Core.Tests.Robustness;

/// <summary>Chat / instruction JSON Lines files damaged at random: read, or an error naming the file (and line).</summary>
public class ChatDataFaultTests
{
    const string Messages = """
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}

        {"messages": [{"role": "user", "content": "Name a color"}, {"role": "assistant", "content": "Blue", "weight": 1}]}
        """;
    const string PromptCompletion = """
        {"prompt": "The capital of France is", "completion": " Paris."}
        {"prompt": "1, 2, 3,", "completion": " 4"}
        """;
    const string Alpaca = """
        [{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
         {"instruction": "Say hi.", "input": "", "output": "Hi!"}]
        """;

    [Theory]
    [InlineData("messages.jsonl", Messages)]
    [InlineData("prompt-completion.jsonl", PromptCompletion)]
    [InlineData("alpaca.json", Alpaca)]
    public void DamagedChatDataGivesAClearError(string fileName, string content)
    {
        var original = Encoding.UTF8.GetBytes(content);
        Assert.NotEmpty(ChatDataFile.Parse(new StringReader(content), fileName).Examples);   // the undamaged file reads
        var dir = Path.Combine(Path.GetTempPath(), "quanta-chat-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, fileName);
        try
        {
            ReaderProperty.Check(FaultGen.ForJson, fault =>
            {
                var bytes = fault.Apply(original);
                File.WriteAllBytes(path, bytes);
                return (fileName, bytes.Length, () => ChatDataFile.Read(path));
            }, iter: 200);
        }
        finally { Directory.Delete(dir, true); }
    }
}
