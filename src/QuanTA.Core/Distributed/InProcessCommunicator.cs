using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Distributed;

/// <summary>
/// Ranks as threads of one process sharing memory: the reference implementation of <see cref="ICommunicator"/> used by
/// the CPU tests (the real transport is <see cref="NcclCommunicator"/>). Reductions add the ranks' tensors in rank order,
/// so every rank gets bit-identical results. A rank that does not arrive within the timeout, or that disposes its
/// communicator (ends, fails) while others wait, makes every other rank's collective throw an error naming it.
/// </summary>
public sealed class InProcessCommunicator : ICommunicator
{
    readonly Group _group;
    bool _disposed;

    InProcessCommunicator(Group group, int rank) { _group = group; Rank = rank; }

    /// <summary>Creates the <paramref name="worldSize"/> communicators of one group; hand element r to the thread of rank r.</summary>
    public static InProcessCommunicator[] CreateGroup(int worldSize, TimeSpan timeout)
    {
        if (worldSize < 1) throw new ArgumentOutOfRangeException(nameof(worldSize), $"worldSize must be ≥ 1 (got {worldSize}).");
        if (timeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(timeout), "timeout must be positive.");
        var g = new Group(worldSize, timeout);
        return Enumerable.Range(0, worldSize).Select(r => new InProcessCommunicator(g, r)).ToArray();
    }

    /// <inheritdoc/>
    public int Rank { get; }
    /// <inheritdoc/>
    public int WorldSize => _group.WorldSize;
    /// <inheritdoc/>
    public Device Device => CPU;

    /// <inheritdoc/>
    public void AllReduceSum(Tensor tensor) => AllReduce(tensor, average: false);
    /// <inheritdoc/>
    public void AllReduceAverage(Tensor tensor)
    {
        if (!tensor.is_floating_point()) throw new ArgumentException($"AllReduceAverage needs a floating-point tensor (got {tensor.dtype}).");
        AllReduce(tensor, average: true);
    }

    void AllReduce(Tensor tensor, bool average)
    {
        Check(tensor);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        Deposit(tensor);
        _group.Arrive(Rank, "all-reduce");                       // every rank's input is in Slots
        CheckSameLayout("all-reduce");                           // every rank sees the same verdict, before touching any tensor
        var sum = _group.Slots[0]!.clone();
        for (int r = 1; r < WorldSize; r++) sum.add_(_group.Slots[r]!);
        if (average) sum.div_(WorldSize);
        _group.Arrive(Rank, "all-reduce (read)");                // nobody reads the inputs any more
        tensor.copy_(sum);
        _group.Slots[Rank] = null;
    }

    /// <inheritdoc/>
    public void Broadcast(Tensor tensor, int root = 0)
    {
        Check(tensor);
        if (root < 0 || root >= WorldSize) throw new ArgumentOutOfRangeException(nameof(root), $"Broadcast root {root} is not a rank of a world of {WorldSize}.");
        using var _ = no_grad();
        Deposit(tensor);
        _group.Arrive(Rank, "broadcast");
        CheckSameLayout("broadcast");
        if (Rank != root) tensor.copy_(_group.Slots[root]!);
        _group.Arrive(Rank, "broadcast (read)");
        _group.Slots[Rank] = null;
    }

    void Deposit(Tensor t)
    {
        _group.Slots[Rank] = t;
        _group.Layouts[Rank] = $"[{string.Join(",", t.shape)}] {t.dtype}";
    }

    /// <summary>Compares the layouts recorded before the barrier (never the tensors: a failing rank may dispose its own).</summary>
    void CheckSameLayout(string what)
    {
        var layouts = _group.Layouts;
        for (int r = 1; r < WorldSize; r++)
            if (layouts[r] != layouts[0])
            {
                _group.Slots[Rank] = null;
                throw new InvalidOperationException($"Rank {Rank}: {what} of different tensors: rank 0 passed {layouts[0]}, rank {r} passed {layouts[r]}. Every rank must pass the same shape and dtype.");
            }
    }

    /// <inheritdoc/>
    public void Barrier() { ObjectDisposedException.ThrowIf(_disposed, this); _group.Arrive(Rank, "barrier"); }

    void Check(Tensor t)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (t.device_type != DeviceType.CPU) throw new ArgumentException($"InProcessCommunicator works on CPU tensors (got {t.device}).");
        if (!t.is_contiguous()) throw new ArgumentException("Collectives need a contiguous tensor.");
    }

    /// <summary>Leaves the group; other ranks still waiting in (or later entering) a collective fail with an error naming this rank.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _group.Leave(Rank);
    }

    sealed class Group(int worldSize, TimeSpan timeout)
    {
        public readonly int WorldSize = worldSize;
        public readonly Tensor?[] Slots = new Tensor?[worldSize];
        public readonly string?[] Layouts = new string?[worldSize];
        readonly object _gate = new();
        readonly bool[] _arrived = new bool[worldSize];
        readonly List<int> _left = new();
        int _count;
        long _generation;

        /// <summary>A reusable barrier with a timeout and rank bookkeeping.</summary>
        public void Arrive(int rank, string what)
        {
            lock (_gate)
            {
                ThrowIfSomeoneLeft(rank, what);
                var gen = _generation;
                _arrived[rank] = true;
                if (++_count == WorldSize)
                {
                    _count = 0; Array.Clear(_arrived); _generation++;
                    Monitor.PulseAll(_gate);
                    return;
                }
                var deadline = DateTime.UtcNow + timeout;
                while (_generation == gen)
                {
                    ThrowIfSomeoneLeft(rank, what);
                    var remaining = deadline - DateTime.UtcNow;
                    if (remaining <= TimeSpan.Zero)
                    {
                        var missing = Enumerable.Range(0, WorldSize).Where(r => !_arrived[r]).ToArray();
                        throw new TimeoutException($"Rank {rank}: {what} timed out after {timeout.TotalSeconds:0.#} s: rank(s) {string.Join(", ", missing)} did not arrive.");
                    }
                    Monitor.Wait(_gate, remaining);
                }
            }
        }

        void ThrowIfSomeoneLeft(int rank, string what)
        {
            var left = _left.Where(r => r != rank).ToArray();
            if (left.Length > 0)
                throw new InvalidOperationException($"Rank {rank}: {what} cannot complete: rank {left[0]} left the group (ended or failed)" +
                                                    (left.Length > 1 ? $"; then rank(s) {string.Join(", ", left.Skip(1))} left too." : "."));
        }

        public void Leave(int rank)
        {
            lock (_gate) { if (!_left.Contains(rank)) _left.Add(rank); Monitor.PulseAll(_gate); }
        }
    }
}
