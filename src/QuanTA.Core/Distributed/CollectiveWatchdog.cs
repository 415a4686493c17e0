using System.Collections.Concurrent;
using System.Diagnostics;

namespace QuanTA.Core.Distributed;

/// <summary>Completion markers on the device stream: CUDA events in production, fakes in tests.</summary>
internal interface IStreamMarkers
{
    /// <summary>Makes the calling (watchdog) thread able to query markers (selects the CUDA device).</summary>
    void BindThread();
    /// <summary>Records a marker after the work queued so far (called on the thread that queued the collective).</summary>
    IntPtr Record();
    /// <summary>True when the work before the marker has finished on the device.</summary>
    bool IsDone(IntPtr marker);
    /// <summary>Frees a marker.</summary>
    void Destroy(IntPtr marker);
}

/// <summary>
/// The watchdog of queued (non-blocking) collectives, as in PyTorch's ProcessGroupNCCL: the training thread queues a
/// collective and goes on; this thread follows a marker recorded right after each one and, when a collective has not
/// finished within the timeout or NCCL reports an asynchronous error (a peer died), calls <c>onFailure</c> with a message
/// naming the rank, the collective and the wait. In production that handler prints the message and ends the process
/// (exit code <see cref="ExitCode"/>), because the training thread may be blocked in a device synchronization that would
/// never return and a step may already have used the broken collective's output: no later checkpoint is written from it,
/// and the launcher reports the rank. Earlier checkpoints are intact (they are written atomically).
/// </summary>
internal sealed class CollectiveWatchdog : IDisposable
{
    /// <summary>Process exit code after a collective timed out or failed in non-blocking mode.</summary>
    public const int ExitCode = 71;

    /// <summary>How often the thread looks at the oldest pending collective (timeouts are seconds; PyTorch polls every 100 ms or more).</summary>
    public static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(10);

    readonly IStreamMarkers _markers;
    readonly Func<string?> _asyncError;
    readonly Action<string> _onFailure;
    readonly TimeSpan _timeout;
    readonly string _who;
    readonly ConcurrentQueue<(IntPtr Marker, long Start, string What)> _pending = new();
    readonly Thread _thread;
    volatile bool _stop;

    /// <param name="markers">Stream markers (CUDA events).</param>
    /// <param name="asyncError">Polled every few milliseconds: an asynchronous communicator error message, or null.</param>
    /// <param name="onFailure">Called once, on the watchdog thread, with the failure message.</param>
    /// <param name="timeout">Longest a queued collective may take.</param>
    /// <param name="who">Names this rank in messages, e.g. "Rank 1 (cuda:1)".</param>
    public CollectiveWatchdog(IStreamMarkers markers, Func<string?> asyncError, Action<string> onFailure, TimeSpan timeout, string who)
    {
        _markers = markers; _asyncError = asyncError; _onFailure = onFailure; _timeout = timeout; _who = who;
        _thread = new Thread(Loop) { IsBackground = true, Name = "QuanTA NCCL watchdog" };
        _thread.Start();
    }

    /// <summary>The failure message once the watchdog fired, else null.</summary>
    public string? Failure { get; private set; }

    /// <summary>Number of collectives queued and not yet seen finished.</summary>
    public int Pending => _pending.Count;

    /// <summary>Follows the collective just queued on the stream (call right after queuing it, on the same thread).</summary>
    public void Track(string what)
    {
        if (Failure is { } f) throw new TimeoutException(f);
        _pending.Enqueue((_markers.Record(), Stopwatch.GetTimestamp(), what));
    }

    /// <summary>Waits until every tracked collective has finished, bounded by the timeout (throws <see cref="TimeoutException"/>).</summary>
    public void WaitAll()
    {
        var sw = Stopwatch.StartNew();
        var spin = new SpinWait();
        while (!_pending.IsEmpty)
        {
            if (Failure is { } f) throw new TimeoutException(f);
            if (sw.Elapsed > _timeout + TimeSpan.FromSeconds(1)) throw new TimeoutException($"{_who}: collectives still pending after {sw.Elapsed.TotalSeconds:0.#} s.");
            if (sw.ElapsedMilliseconds > 50) Thread.Sleep(1); else spin.SpinOnce(sleep1Threshold: -1);
        }
        if (Failure is { } g) throw new TimeoutException(g);
    }

    void Loop()
    {
        try { _markers.BindThread(); }
        catch (Exception e) { Fail($"{_who}: the NCCL watchdog could not start: {e.Message}"); return; }
        long polls = 0;
        while (!_stop)
        {
            while (_pending.TryPeek(out var p))
            {
                if (_markers.IsDone(p.Marker)) { _pending.TryDequeue(out _); _markers.Destroy(p.Marker); continue; }
                var waited = Stopwatch.GetElapsedTime(p.Start);
                if (waited > _timeout)
                {
                    Fail($"{_who}: NCCL {p.What} did not finish within {_timeout.TotalSeconds:0.#} s (queued {waited.TotalSeconds:0.#} s ago) — " +
                         "another rank has probably died or stopped calling collectives.");
                    return;
                }
                break;
            }
            if (++polls % 8 == 0 && _asyncError() is { } err) { Fail($"{_who}: {err}"); return; }
            Thread.Sleep(PollInterval);
        }
    }

    void Fail(string message)
    {
        Failure = message;
        _onFailure(message);
    }

    /// <summary>Stops the thread and frees the markers still held.</summary>
    public void Dispose()
    {
        _stop = true;
        if (Thread.CurrentThread != _thread) _thread.Join();
        while (_pending.TryDequeue(out var p)) _markers.Destroy(p.Marker);
    }
}
