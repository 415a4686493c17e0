using System.Collections.Concurrent;
using QuanTA.Core.Distributed;

namespace QuanTA.Core.Tests.Distributed;

/// <summary>The watchdog of queued collectives (non-blocking NCCL mode), with fake stream markers the test completes.</summary>
public class CollectiveWatchdogTests
{
    sealed class FakeMarkers : IStreamMarkers
    {
        long _next;
        public readonly ConcurrentDictionary<IntPtr, bool> Done = new();
        public readonly ConcurrentBag<IntPtr> Destroyed = [];
        public int BoundThreads;
        public void BindThread() => Interlocked.Increment(ref BoundThreads);
        public IntPtr Record() { var m = (IntPtr)Interlocked.Increment(ref _next); Done[m] = false; return m; }
        public bool IsDone(IntPtr marker) => Done[marker];
        public void Destroy(IntPtr marker) => Destroyed.Add(marker);
        public void CompleteAll() { foreach (var k in Done.Keys) Done[k] = true; }
    }

    static bool WaitUntil(Func<bool> condition, int ms = 5000)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!condition()) { if (sw.ElapsedMilliseconds > ms) return false; Thread.Sleep(2); }
        return true;
    }

    [Fact]
    public void FinishedCollectivesAreForgottenAndNothingFires()
    {
        var markers = new FakeMarkers();
        var failures = new ConcurrentBag<string>();
        using var dog = new CollectiveWatchdog(markers, () => null, failures.Add, TimeSpan.FromSeconds(5), "Rank 1 of 2 (cuda:1)");
        dog.Track("all-reduce"); dog.Track("all-reduce");
        Assert.Equal(2, dog.Pending);
        markers.CompleteAll();
        dog.WaitAll();                                                   // returns once both are seen finished
        Assert.Equal(0, dog.Pending);
        Assert.True(WaitUntil(() => markers.Destroyed.Count == 2));
        Assert.Empty(failures);
        Assert.Null(dog.Failure);
        Assert.Equal(1, markers.BoundThreads);                           // the CUDA device is selected on the watchdog thread
    }

    [Fact]
    public void ACollectiveThatNeverFinishesFiresOnceNamingRankCollectiveAndTimeout()
    {
        var markers = new FakeMarkers();
        var failures = new ConcurrentBag<string>();
        using var dog = new CollectiveWatchdog(markers, () => null, failures.Add, TimeSpan.FromMilliseconds(200), "Rank 1 of 2 (cuda:1)");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        dog.Track("all-reduce");
        Assert.True(WaitUntil(() => !failures.IsEmpty));
        Assert.InRange(sw.ElapsedMilliseconds, 190, 4000);               // not before the timeout, and not much after
        var message = Assert.Single(failures);
        Assert.Contains("Rank 1 of 2 (cuda:1)", message);
        Assert.Contains("all-reduce", message);
        Assert.Contains("0.2 s", message);
        Assert.Contains("died", message);
        Assert.Equal(message, dog.Failure);
        var e = Assert.Throws<TimeoutException>(() => dog.Track("broadcast"));   // nothing more is queued after a failure
        Assert.Equal(message, e.Message);
        Assert.Throws<TimeoutException>(() => dog.WaitAll());
        Thread.Sleep(50);
        Assert.Single(failures);                                          // fired once
    }

    [Fact]
    public void AnAsynchronousNcclErrorFiresWithoutWaitingForTheTimeout()
    {
        var markers = new FakeMarkers();
        var failures = new ConcurrentBag<string>();
        string? error = null;
        using var dog = new CollectiveWatchdog(markers, () => error, failures.Add, TimeSpan.FromMinutes(5), "Rank 0 of 2 (cuda:0)");
        dog.Track("all-reduce");
        Thread.Sleep(30);
        Assert.Empty(failures);
        error = "NCCL reported an asynchronous error: remote process exited (a peer rank probably died).";
        Assert.True(WaitUntil(() => !failures.IsEmpty, 2000));
        Assert.Equal($"Rank 0 of 2 (cuda:0): {error}", Assert.Single(failures));
    }

    [Fact]
    public void WaitAllIsBoundedWhenTheWatchdogCannotFire()
    {
        var markers = new FakeMarkers();
        using var dog = new CollectiveWatchdog(markers, () => null, _ => { }, TimeSpan.FromMilliseconds(100), "Rank 0 of 2 (cuda:0)");
        dog.Track("all-reduce");
        var e = Assert.Throws<TimeoutException>(() => dog.WaitAll());
        Assert.Contains("all-reduce", e.Message);
    }
}
