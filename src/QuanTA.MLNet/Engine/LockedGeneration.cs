using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace QuanTA.MLNet.Engine;

/// <summary>
/// Streams a generation that must hold a model's lock from start to end, to a caller that may await (and resume on any
/// thread) between pieces. The generation runs on its own thread, which takes the lock (giving up while waiting if the
/// request is cancelled), produces pieces into a small bounded channel (a slow reader pauses decoding rather than
/// buffering without limit) and releases the lock when done. TorchSharp's grad mode and dispose scopes are per thread,
/// so every forward pass happens on that one thread. When the reader stops early, cancels, or fails, the generation is
/// cancelled and awaited before the enumeration ends, so the model is never freed under a running forward pass.
/// </summary>
internal static class LockedGeneration
{
    /// <summary>Pieces a slow reader may fall behind before decoding waits for it.</summary>
    public const int BufferedPieces = 8;

    /// <summary>Runs <paramref name="produce"/> under <paramref name="gate"/> and streams its pieces; <paramref name="onDone"/>
    /// runs under the lock after the last piece; <paramref name="disposed"/> is checked once the lock is held.</summary>
    public static async IAsyncEnumerable<string> RunAsync(object gate, Func<CancellationToken, IEnumerable<string>> produce,
        Action? onDone, Func<bool> disposed, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var token = stop.Token;
        var channel = Channel.CreateBounded<string>(new BoundedChannelOptions(BufferedPieces)
        {
            SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait,
        });
        var worker = Task.Factory.StartNew(() =>
        {
            Exception? error = null;
            bool locked = false;
            try
            {
                while (!Monitor.TryEnter(gate, 50)) token.ThrowIfCancellationRequested();   // queued behind another request
                locked = true;
                if (disposed()) throw new ObjectDisposedException("The model was disposed before this request ran.");
                token.ThrowIfCancellationRequested();
                foreach (var piece in produce(token))
                    while (!channel.Writer.TryWrite(piece)) channel.Writer.WaitToWriteAsync(token).AsTask().GetAwaiter().GetResult();
                onDone?.Invoke();
            }
            catch (Exception e) { error = e; }
            finally { if (locked) Monitor.Exit(gate); }
            channel.Writer.TryComplete();
            return error;
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

        try
        {
            await foreach (var piece in channel.Reader.ReadAllAsync(token).ConfigureAwait(false))
                yield return piece;
        }
        finally
        {
            if (!worker.IsCompleted)
            {
                stop.Cancel();
                await worker.ConfigureAwait(false);       // never leave a forward pass running behind the caller's back
            }
        }
        if (await worker.ConfigureAwait(false) is { } failure)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
    }
}
