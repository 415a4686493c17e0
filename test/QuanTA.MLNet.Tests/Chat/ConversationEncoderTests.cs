using QuanTA.Core.Chat;
using QuanTA.MLNet.Engine;

namespace QuanTA.MLNet.Tests.Chat;

/// <summary>Dropping the oldest exchanges to fit the budget: the fewest that fit (as a one-at-a-time scan finds them), in
/// O(log n) encodings of an n-exchange history.</summary>
public class ConversationEncoderTests
{
    /// <summary>A tokenizer that counts its calls: one id per character (so lengths are easy to reason about).</summary>
    sealed class CountingTokenizer : ITextTokenizer
    {
        public int Calls;
        public int[] Encode(string text, bool addSpecialTokens) { Calls++; return text.Select(c => (int)c).ToArray(); }
        public string Decode(IReadOnlyList<int> ids) => new(ids.Select(i => (char)i).ToArray());
        public int PadId => 0;
        public int EosId => 3;
        public IReadOnlyList<int> EosIds => [3];
        public bool IsSpecial(int id) => id < 4;
    }

    static ChatTemplate Template() => ChatTemplate.FromString(ChatFixture.Template, "<s>", "</s>");

    static List<ChatTurn> History(int exchanges)
    {
        var turns = new List<ChatTurn> { new(ChatTurn.SystemRole, "Name the kind.") };
        for (int i = 0; i < exchanges; i++)
        {
            turns.Add(new(ChatTurn.UserRole, $"word number {i} " + new string('x', i % 7)));
            turns.Add(new(ChatTurn.AssistantRole, $"kind {i}"));
        }
        return turns;
    }

    /// <summary>The reference: drop one exchange at a time (system prompt kept, the rest starting at a user turn) until it fits.</summary>
    static (int Dropped, string Text) Scan(List<ChatTurn> turns, int budget, bool training)
    {
        var t = new List<ChatTurn>(turns);
        if (!training) while (t[^1].IsAssistant) t.RemoveAt(t.Count - 1);
        var template = Template();
        string Render() => training ? template.RenderForTraining(t).Text : template.Render(t, addGenerationPrompt: true);
        int dropped = 0;
        while (Render().Length > budget)
        {
            int first = t.FindIndex(x => x.Role != ChatTurn.SystemRole);
            int next = t.FindIndex(first + 1, x => x.Role == ChatTurn.UserRole);
            if (next < 0 || (training && !t.Skip(next).Any(x => x.IsAssistant))) break;
            t.RemoveRange(first, next - first);
            dropped++;
        }
        return (dropped, Render());
    }

    [Theory]
    [InlineData(60, 200)]
    [InlineData(60, 1000)]
    [InlineData(5, 10000)]     // fits: nothing dropped
    [InlineData(40, 40)]       // nothing fits: every droppable exchange dropped, then cut
    public void TheFewestExchangesAreDroppedWithFewEncodings(int exchanges, int budget)
    {
        var history = History(exchanges);
        foreach (bool training in new[] { true, false })
        {
            var tokenizer = new CountingTokenizer();
            var encoder = new ConversationEncoder(tokenizer, Template(), training ? budget : budget + 1);
            var row = training ? encoder.EncodeForTraining(history) : encoder.EncodePrompt(history);
            var (dropped, text) = Scan(history, budget, training);
            var expected = text.Select(c => (int)c).ToArray();
            if (expected.Length > budget) expected = expected[^budget..];
            Assert.Equal(expected, row.Ids);
            Assert.Equal(dropped > 0 || text.Length > budget, row.Truncated);
            // O(log n): a handful of encodings (plus the loss mask's two per assistant span in training), not one per exchange.
            Assert.True(tokenizer.Calls <= 3 + (int)Math.Ceiling(Math.Log2(exchanges + 1)) + (training ? 2 * (exchanges + 1) : 0),
                $"{tokenizer.Calls} encodings for {exchanges} exchanges (dropped {dropped})");
        }
    }
}
