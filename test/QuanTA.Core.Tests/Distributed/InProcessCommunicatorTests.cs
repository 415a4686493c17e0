using System.Diagnostics;
using QuanTA.Core.Distributed;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Distributed;

public class InProcessCommunicatorTests
{
    public InProcessCommunicatorTests() => TorchRuntime.Initialize();

    [Fact]
    public void AllReduceAndBroadcastGiveTheSameResultOnEveryRank()
    {
        var comms = InProcessCommunicator.CreateGroup(3, TimeSpan.FromSeconds(20));
        var results = Ranks.RunOk(3, r =>
        {
            using var c = comms[r];
            using var sum = tensor(new[] { r + 1f, 10f * r, -1f });
            c.AllReduceSum(sum);
            using var avg = tensor(new[] { r + 1f, 10f * r, -1f });
            c.AllReduceAverage(avg);
            using var b = tensor(new[] { (float)r, r * 2f });
            c.Broadcast(b, root: 2);
            c.Barrier();
            return (sum.data<float>().ToArray(), avg.data<float>().ToArray(), b.data<float>().ToArray(), c.AverageScalar(r), c.SumCount(r + 1));
        });
        foreach (var (sum, avg, b, meanRank, count) in results)
        {
            Assert.Equal(new[] { 6f, 30f, -3f }, sum);
            Assert.Equal(new[] { 2f, 10f, -1f }, avg);
            Assert.Equal(new[] { 2f, 4f }, b);
            Assert.Equal(1.0, meanRank, 12);
            Assert.Equal(6, count);
        }
    }

    [Fact]
    public void RankThatNeverArrivesIsNamed()
    {
        var comms = InProcessCommunicator.CreateGroup(3, TimeSpan.FromSeconds(1));
        var sw = Stopwatch.StartNew();
        var results = Ranks.Run(2, r => { using var t = ones(4); comms[r].AllReduceSum(t); return 0; });  // rank 2 never calls
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10));
        foreach (var (_, e) in results)
            Assert.Contains("rank(s) 2 did not arrive", Assert.IsType<TimeoutException>(e).Message);
    }

    [Fact]
    public void RankThatFailsEndsTheOthersEarly()
    {
        var comms = InProcessCommunicator.CreateGroup(3, TimeSpan.FromSeconds(60));
        var sw = Stopwatch.StartNew();
        var results = Ranks.Run(3, r =>
        {
            using var c = comms[r];                                  // a failing rank disposes (leaves) on its way out
            if (r == 1) { Thread.Sleep(100); throw new InvalidOperationException("out of memory on rank 1"); }
            using var t = ones(4); c.AllReduceSum(t); return 0;
        });
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"took {sw.Elapsed} with a 60 s timeout");
        foreach (var r in new[] { 0, 2 })
            Assert.Contains("rank 1 left the group", Assert.IsType<InvalidOperationException>(results[r].Error).Message);
    }

    [Fact]
    public void MismatchedShapesAreAnError()
    {
        var comms = InProcessCommunicator.CreateGroup(2, TimeSpan.FromSeconds(5));
        var results = Ranks.Run(2, r => { using var t = ones(3 + r); comms[r].AllReduceSum(t); return 0; });
        foreach (var (_, e) in results)
            Assert.Contains("rank 0 passed [3] Float32, rank 1 passed [4] Float32", Assert.IsType<InvalidOperationException>(e).Message);
    }

    [Fact]
    public void DataPointerAddressesTheFirstElementOfAView()
    {
        using var a = arange(10, dtype: ScalarType.Float32);
        using var view = a.narrow(0, 3, 4);                           // storage offset 3
        System.Runtime.InteropServices.Marshal.Copy(new[] { 42f }, 0, NcclCommunicator.DataPointer(view), 1);
        Assert.Equal(42f, a[3].item<float>());
        Assert.Equal(2f, a[2].item<float>());

        using var h = zeros(6, dtype: ScalarType.BFloat16);           // no typed Storage in TorchSharp: native path
        using var hv = h.narrow(0, 2, 2);
        System.Runtime.InteropServices.Marshal.WriteInt16(NcclCommunicator.DataPointer(hv), 0x3F80); // bf16 1.0
        Assert.Equal(new[] { 0f, 0f, 1f, 0f, 0f, 0f }, h.to_type(ScalarType.Float32).data<float>().ToArray());
    }
}
