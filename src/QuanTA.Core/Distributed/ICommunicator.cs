using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Distributed;

/// <summary>
/// Collective operations among the ranks of a data-parallel job. Every rank must call the same collectives in the same
/// order with tensors of the same shape and dtype (as with NCCL and <c>torch.distributed</c>). All operations are in place
/// and bounded by the group's timeout: a rank that does not arrive makes the others fail with an error naming it.
/// Implementations: <see cref="NcclCommunicator"/> (GPUs, the real NCCL library), <see cref="InProcessCommunicator"/>
/// (ranks as threads of one process, for tests), <see cref="SingleProcessCommunicator"/> (world of one).
/// </summary>
public interface ICommunicator : IDisposable
{
    /// <summary>This rank, 0 ≤ Rank &lt; WorldSize.</summary>
    int Rank { get; }
    /// <summary>Number of ranks.</summary>
    int WorldSize { get; }
    /// <summary>The device tensors passed to collectives must live on (CUDA device of this rank, or CPU).</summary>
    Device Device { get; }
    /// <summary>Replaces <paramref name="tensor"/> (contiguous, on <see cref="Device"/>) by the element-wise sum over ranks.</summary>
    void AllReduceSum(Tensor tensor);
    /// <summary>Replaces <paramref name="tensor"/> by the element-wise mean over ranks (floating-point dtypes only).</summary>
    void AllReduceAverage(Tensor tensor);
    /// <summary>Copies rank <paramref name="root"/>'s <paramref name="tensor"/> into every other rank's tensor.</summary>
    void Broadcast(Tensor tensor, int root = 0);
    /// <summary>Returns once every rank has called it.</summary>
    void Barrier();
}

/// <summary>Helpers on top of <see cref="ICommunicator"/>.</summary>
public static class CommunicatorExtensions
{
    /// <summary>Mean of a scalar (a loss, a metric) over ranks, for logging. Every rank must call it.</summary>
    public static double AverageScalar(this ICommunicator comm, double value)
    {
        if (comm.WorldSize == 1) return value;
        using var scope = NewDisposeScope();
        var t = tensor(new[] { value }, dtype: ScalarType.Float64, device: comm.Device);
        comm.AllReduceAverage(t);
        return t.cpu().item<double>();
    }

    /// <summary>
    /// One all-reduce for a step's log line: the mean of <paramref name="value"/> (e.g. the loss) and the sum of
    /// <paramref name="count"/> (e.g. tokens) over ranks. Every rank must call it.
    /// </summary>
    public static (double Mean, long Sum) MeanAndSum(this ICommunicator comm, double value, long count)
    {
        if (comm.WorldSize == 1) return (value, count);
        using var scope = NewDisposeScope();
        var t = tensor(new[] { value, count }, dtype: ScalarType.Float64, device: comm.Device);   // (2,): counts < 2^53 are exact
        comm.AllReduceSum(t);
        var r = t.cpu().data<double>().ToArray();
        return (r[0] / comm.WorldSize, (long)Math.Round(r[1]));
    }

    /// <summary>Sum of a count (tokens, examples) over ranks. Every rank must call it.</summary>
    public static long SumCount(this ICommunicator comm, long value)
    {
        if (comm.WorldSize == 1) return value;
        using var scope = NewDisposeScope();
        var t = tensor(new[] { (double)value }, dtype: ScalarType.Float64, device: comm.Device);
        comm.AllReduceSum(t);
        return (long)Math.Round(t.cpu().item<double>());
    }

    /// <summary>
    /// Checks that every rank passes the same <paramref name="value"/> (e.g. the number of trainable parameters), so that a
    /// mismatch is a clear error on every rank instead of a wrong or hung collective: rank 0's value is broadcast, each
    /// rank compares, and the mismatch count is summed so that all ranks fail together.
    /// </summary>
    public static void EnsureSameOnAllRanks(this ICommunicator comm, long value, string what)
    {
        if (comm.WorldSize == 1) return;
        using var scope = NewDisposeScope();
        var root = tensor(new[] { (double)value }, dtype: ScalarType.Float64, device: comm.Device);
        comm.Broadcast(root, 0);
        var rootValue = (long)root.cpu().item<double>();
        var mismatches = tensor(new[] { rootValue == value ? 0.0 : 1.0 }, dtype: ScalarType.Float64, device: comm.Device);
        comm.AllReduceSum(mismatches);
        var n = (int)mismatches.cpu().item<double>();
        if (n > 0)
            throw new InvalidOperationException($"Rank {comm.Rank}: {what} differs between ranks (rank 0: {rootValue}, this rank: {value}; {n} rank(s) differ from rank 0). Every rank must build the same model and adapter configuration.");
    }
}

/// <summary>The communicator of a one-process job: every collective is the identity.</summary>
public sealed class SingleProcessCommunicator : ICommunicator
{
    /// <summary>Creates it for tensors on <paramref name="device"/> (default CPU).</summary>
    public SingleProcessCommunicator(Device? device = null) => Device = device ?? CPU;
    /// <inheritdoc/>
    public int Rank => 0;
    /// <inheritdoc/>
    public int WorldSize => 1;
    /// <inheritdoc/>
    public Device Device { get; }
    /// <inheritdoc/>
    public void AllReduceSum(Tensor tensor) { }
    /// <inheritdoc/>
    public void AllReduceAverage(Tensor tensor) { }
    /// <inheritdoc/>
    public void Broadcast(Tensor tensor, int root = 0)
    {
        if (root != 0) throw new ArgumentOutOfRangeException(nameof(root), $"Broadcast root {root} does not exist in a world of 1.");
    }
    /// <inheritdoc/>
    public void Barrier() { }
    /// <inheritdoc/>
    public void Dispose() { }
}
