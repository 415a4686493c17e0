using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Distributed;

/// <summary>
/// Rank-0-only side effects (checkpoints, the saved model, result files). <see cref="Run"/> runs the action on rank 0
/// alone, then every rank waits until it is done; if it failed on rank 0, every other rank throws too (no rank proceeds
/// believing a file exists that was never written).
/// </summary>
public static class RankZero
{
    /// <summary>True on rank 0 (the one rank that writes).</summary>
    public static bool IsWriter(ICommunicator comm) => comm.Rank == 0;

    /// <summary>
    /// Runs <paramref name="write"/> on rank 0 only, then synchronizes all ranks (a broadcast of rank 0's success flag,
    /// which doubles as a barrier). On rank 0 a failure is rethrown after the others have been told; on other ranks an
    /// <see cref="InvalidOperationException"/> names <paramref name="what"/>.
    /// </summary>
    public static void Run(ICommunicator comm, Action write, string what = "writing files")
    {
        Exception? error = null;
        if (comm.Rank == 0)
        {
            try { write(); }
            catch (Exception e) { error = e; }
        }
        using (var scope = NewDisposeScope())
        {
            var ok = tensor(new[] { error is null ? 1f : 0f }, device: comm.Device);
            comm.Broadcast(ok, root: 0);
            if (comm.Rank != 0 && ok.cpu().item<float>() != 1f)
                throw new InvalidOperationException($"Rank {comm.Rank}: rank 0 failed while {what}; see rank 0's log.");
        }
        if (error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
    }
}
