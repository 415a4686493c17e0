using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Distributed;

/// <summary>
/// Data-parallel gradient averaging: after <c>loss.backward()</c> and before clipping and the optimizer step, copies the
/// trainable parameters' gradients into flat fp32 buffers (one per bucket of at most <see cref="BucketElements"/>
/// elements), all-reduces each buffer as a mean over ranks, and copies the result back into the gradients. Frozen
/// parameters (requires_grad false, e.g. the backbone) are never touched or communicated.
/// With equal per-rank batch sizes and a per-rank mean loss, the averaged gradient equals the gradient of the mean loss
/// over the union of the ranks' batches — the same update as one process with the whole batch.
/// </summary>
public sealed class DistributedGradientSync : IDisposable
{
    readonly ICommunicator _comm;
    readonly Parameter[] _params;
    readonly List<(int First, int Count, Tensor Buffer)> _buckets = new();
    readonly long[] _offsets;

    /// <summary>Default bucket size: 25 M fp32 elements (100 MB), like PyTorch DDP's 25 MB order of magnitude but fewer calls.</summary>
    public const long DefaultBucketElements = 25_000_000;

    /// <summary>Elements per flat buffer (a parameter larger than this gets a bucket of its own).</summary>
    public long BucketElements { get; }
    /// <summary>Total trainable elements synchronized per step.</summary>
    public long TotalElements { get; }
    /// <summary>Number of flat buffers (= all-reduce calls per step).</summary>
    public int BucketCount => _buckets.Count;

    /// <summary>
    /// Prepares buffers for <paramref name="parameters"/> (only those with requires_grad are kept, in the given order, which
    /// must be the same on every rank). Checks over the communicator that every rank has the same number of trainable
    /// elements, so a configuration mismatch is an error here instead of a hang or a silent mix-up later.
    /// </summary>
    public DistributedGradientSync(IEnumerable<Parameter> parameters, ICommunicator communicator, long bucketElements = DefaultBucketElements)
    {
        if (bucketElements < 1) throw new ArgumentOutOfRangeException(nameof(bucketElements), "bucketElements must be ≥ 1.");
        _comm = communicator;
        BucketElements = bucketElements;
        _params = parameters.Where(p => p.requires_grad).ToArray();
        if (_params.Length == 0) throw new ArgumentException("No trainable parameters (requires_grad) to synchronize: attach an adapter first.");
        foreach (var p in _params)
            if (p.device_type != communicator.Device.type || (p.device_type == DeviceType.CUDA && p.device_index != communicator.Device.index))
                throw new ArgumentException($"A trainable parameter lives on {p.device} but the communicator works on {communicator.Device}: move the model first.");
        _offsets = new long[_params.Length];
        TotalElements = _params.Sum(p => p.numel());
        communicator.EnsureSameOnAllRanks(TotalElements, "the number of trainable elements");
        communicator.EnsureSameOnAllRanks(_params.Length, "the number of trainable parameter tensors");

        int first = 0; long size = 0;
        for (int i = 0; i < _params.Length; i++)
        {
            long n = _params[i].numel();
            if (size > 0 && size + n > bucketElements) { AddBucket(first, i - first, size); first = i; size = 0; }
            _offsets[i] = size; size += n;
        }
        AddBucket(first, _params.Length - first, size);
    }

    void AddBucket(int first, int count, long size)
        => _buckets.Add((first, count, zeros(size, dtype: ScalarType.Float32, device: _comm.Device).DetachFromDisposeScope()));

    /// <summary>
    /// Averages the gradients over ranks in place. A parameter without a gradient on this rank counts as a zero gradient
    /// and receives the average (so every rank's optimizer sees the same gradients). Call on every rank, every step.
    /// </summary>
    public void Synchronize()
    {
        if (_comm.WorldSize == 1) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var (first, count, buffer) in _buckets)
        {
            for (int i = first; i < first + count; i++)             // pack: buffer[off : off+n] = grad.flatten()
            {
                var p = _params[i]; var slice = buffer.narrow(0, _offsets[i], p.numel());
                if (p.grad is { } g) slice.copy_(g.reshape(-1));
                else slice.zero_();
            }
            _comm.AllReduceAverage(buffer);                          // buffer = mean over ranks
            for (int i = first; i < first + count; i++)             // unpack into the gradients
            {
                var p = _params[i]; var avg = buffer.narrow(0, _offsets[i], p.numel()).view(p.shape);
                if (p.grad is { } g) g.copy_(avg);
                else p.grad = avg.to_type(p.dtype).clone().DetachFromDisposeScope();
            }
        }
    }

    /// <summary>Makes every rank's trainable parameters equal to rank 0's (call once before training, after initialization).</summary>
    public void BroadcastParameters(int root = 0)
    {
        if (_comm.WorldSize == 1) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var p in _params)
        {
            var flat = p.detach().to_type(ScalarType.Float32).contiguous().clone();
            _comm.Broadcast(flat, root);
            p.copy_(flat.view(p.shape));
        }
    }

    /// <summary>Frees the flat buffers.</summary>
    public void Dispose() { foreach (var b in _buckets) b.Buffer.Dispose(); _buckets.Clear(); }
}
