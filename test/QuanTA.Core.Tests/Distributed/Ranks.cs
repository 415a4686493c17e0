using System.Diagnostics;

namespace QuanTA.Core.Tests.Distributed;

/// <summary>Runs N "ranks" as threads and collects each one's result or exception, failing the test if any rank hangs.</summary>
static class Ranks
{
    public static (T? Value, Exception? Error)[] Run<T>(int n, Func<int, T> body, double hangLimitSeconds = 60)
    {
        var tasks = Enumerable.Range(0, n)
            .Select(r => Task.Factory.StartNew(() => body(r), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default))
            .ToArray();
        var sw = Stopwatch.StartNew();
        try { Task.WaitAll(tasks, TimeSpan.FromSeconds(hangLimitSeconds)); } catch (AggregateException) { }
        Assert.True(tasks.All(t => t.IsCompleted), $"some rank hung for more than {hangLimitSeconds} s");
        return tasks.Select(t => t.IsFaulted ? (default(T), t.Exception!.InnerException) : (t.Result, (Exception?)null)).ToArray();
    }

    public static T[] RunOk<T>(int n, Func<int, T> body)
    {
        var results = Run(n, body);
        foreach (var (_, e) in results) if (e is not null) throw new Xunit.Sdk.XunitException($"a rank failed: {e}");
        return results.Select(x => x.Value!).ToArray();
    }
}
