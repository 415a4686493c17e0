using System.Text.Json;
using Microsoft.ML;
using QuanTA.Core.Chat;

namespace QuanTA.MLNet.Tests.Chat;

/// <summary>Toy conversations and one chat model fine-tuned on them, shared by the chat tests.</summary>
public sealed class ChatFixture : IDisposable
{
    /// <summary>A small template in the style of the embedded model's: the answer follows "A:" and ends with eos.</summary>
    public const string Template =
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\\n' }}" +
        "{% elif m['role'] == 'user' %}{{ 'Q: ' + m['content'] + '\\n' }}{% else %}{{ 'A: ' + m['content'] + eos_token }}{% endif %}" +
        "{% endfor %}{% if add_generation_prompt %}{{ 'A:' }}{% endif %}";

    public const string System = "Name the kind.";
    public static readonly (string Word, string Kind)[] Pairs = [("cat", "animal"), ("rose", "flower"), ("oak", "tree"), ("car", "vehicle")];

    public readonly MLContext Ml = new(seed: 3);
    public readonly string Jsonl = TempPath(".jsonl");
    public readonly string Zip = TempPath(".zip");
    public readonly IDataView Train;
    public readonly QuanTAFineTuneTransformer Model;

    public ChatFixture()
    {
        File.WriteAllLines(Jsonl, Conversations(32).Select(c => JsonSerializer.Serialize(new
        {
            messages = c.Select(t => new { role = t.Role, content = t.Content }),
        })));
        Train = Ml.Data.LoadFromChatJsonl(Jsonl);
        Model = Ml.Transforms.QuanTAFineTune(Options()).Fit(Train);
        Ml.Model.Save(Model, Train.Schema, Zip);
    }

    public static QuanTAFineTuneOptions Options() => new()
    {
        Task = QuanTATask.TextGeneration,
        BaseModelPath = ToyData.Fixture("llama-tiny"),
        MessagesColumnName = ChatColumns.Messages,
        ChatTemplate = Template,
        AxisLayout = [8, 4, 4],
        TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"],
        Epochs = 8, BatchSize = 8, LearningRate = 1e-2, MaxSequenceLength = 64, MaxNewTokens = 4,
    };

    /// <summary>Conversation i: system prompt, then two questions with their answers (two assistant turns to learn).</summary>
    public static List<List<ChatTurn>> Conversations(int count) => Enumerable.Range(0, count).Select(i =>
    {
        var (w1, k1) = Pairs[i % Pairs.Length];
        var (w2, k2) = Pairs[(i + 1 + i / Pairs.Length) % Pairs.Length];
        return new List<ChatTurn>
        {
            new("system", System), new("user", w1), new("assistant", k1), new("user", w2), new("assistant", k2),
        };
    }).ToList();

    static string TempPath(string ext) => Path.Combine(Path.GetTempPath(), $"quanta-chat-{Guid.NewGuid():N}{ext}");

    public void Dispose()
    {
        Model.Dispose();
        File.Delete(Jsonl);
        File.Delete(Zip);
    }
}
