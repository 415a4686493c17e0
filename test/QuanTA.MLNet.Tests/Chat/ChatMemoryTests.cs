using QuanTA.Core.Generation;
using QuanTA.MLNet.Engine;
using TorchSharp;

namespace QuanTA.MLNet.Tests.Chat;

/// <summary>
/// A long run of chat generations leaves no tensor behind: the live-tensor count of the generation's own thread (where
/// every forward runs, see LockedGeneration) is the same before and after each of 50 requests, streamed and abandoned.
/// </summary>
public class ChatMemoryTests(ChatFixture f) : IClassFixture<ChatFixture>
{
    [Fact]
    public async Task FiftyGenerationsOnTheWorkerThreadLeaveNoLiveTensors()
    {
        var model = f.Model.Model;
        var generator = model.CreateGenerator();
        var prompt = model.Chat.EncodePrompt([new("user", "oak")]).Ids.Select(i => (long)i).ToArray();
        var options = new GenerationOptions { MaxNewTokens = 24, EosTokenIds = [] };   // never stops early: 24 forwards each
        var growth = new List<long>();
        for (int request = 0; request < 50; request++)
        {
            long before = 0;
            IEnumerable<string> Produce(CancellationToken token)
            {
                before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;           // on the worker thread
                foreach (var piece in generator.Stream(prompt, options, token)) yield return piece;
            }
            var stream = LockedGeneration.RunAsync(f.Model.SyncRoot, Produce,
                () => growth.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount - before), () => false, CancellationToken.None);
            if (request % 5 == 4)
            {
                await foreach (var _ in stream) break;                                  // abandoned after the first piece
                continue;
            }
            await foreach (var _ in stream) { }
        }
        Assert.InRange(growth.Count, 40, 50);                                           // every completed one reports (an abandoned one is usually cancelled first)
        Assert.All(growth, g => Assert.Equal(0, g));
    }
}
