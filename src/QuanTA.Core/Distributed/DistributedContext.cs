using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Distributed;

/// <summary>
/// Everything a training entry point needs to run data-parallel, in one object: the process group (from the launcher's
/// environment), the rendezvous store, the communicator (NCCL on CUDA, identity for one process), this rank's device,
/// sharding and the rank-0 writer rule. One process → no store, no NCCL, nothing changes.
/// <code>
/// using var dist = DistributedContext.Initialize();                  // reads RANK, WORLD_SIZE, … (or single process)
/// model.to(dist.Device);
/// using var sync = dist.CreateGradientSync(model.parameters());
/// sync.BroadcastParameters();
/// foreach (var rows in dist.Shard(rowCount, seed).Batches(perRankBatch)) {
///     loss.backward(); sync.Synchronize(); clip; optimizer.step();
///     var meanLoss = dist.Communicator.AverageScalar(loss.item&lt;float&gt;());
/// }
/// dist.WriteOnRankZero(() => AdapterFile.Save(model, path), "saving the adapter");
/// </code>
/// </summary>
public sealed class DistributedContext : IDisposable
{
    DistributedContext(ProcessGroupOptions group, TcpStore? store, ICommunicator comm)
    {
        Group = group; Store = store; Communicator = comm;
    }

    /// <summary>This process's place in the job.</summary>
    public ProcessGroupOptions Group { get; }
    /// <summary>The rendezvous store (null for one process).</summary>
    public TcpStore? Store { get; }
    /// <summary>The collectives.</summary>
    public ICommunicator Communicator { get; }
    /// <summary>The device this rank trains on (cuda:LOCAL_RANK for NCCL).</summary>
    public Device Device => Communicator.Device;
    /// <summary>This rank.</summary>
    public int Rank => Group.Rank;
    /// <summary>Number of ranks.</summary>
    public int WorldSize => Group.WorldSize;
    /// <summary>True on the one rank that writes checkpoints, models and logs.</summary>
    public bool IsWriter => Rank == 0;

    /// <summary>
    /// Joins the job described by <paramref name="group"/> (default: <see cref="ProcessGroupOptions.FromEnvironment"/>).
    /// One process: a <see cref="SingleProcessCommunicator"/> on <paramref name="singleProcessDevice"/> (default CPU).
    /// Several: CUDA is required (NCCL is the transport), the store is joined and an <see cref="NcclCommunicator"/> is
    /// created on cuda:LOCAL_RANK.
    /// </summary>
    public static DistributedContext Initialize(ProcessGroupOptions? group = null, Device? singleProcessDevice = null, NcclOptions? nccl = null)
    {
        group = (group ?? ProcessGroupOptions.FromEnvironment()).Validate();
        if (!group.IsDistributed)
            return new DistributedContext(group, null, new SingleProcessCommunicator(singleProcessDevice ?? CPU));
        TorchRuntime.Initialize();
        if (!TorchRuntime.CudaAvailable)
            throw new InvalidOperationException(
                $"{group}: data-parallel training over several processes runs on CUDA GPUs through NCCL, but this libtorch has no usable CUDA. " +
                $"Set {TorchRuntime.LibTorchDirEnv} to a CUDA libtorch (e.g. a PyTorch install's torch/lib), or run one process (unset {ProcessGroupOptions.WorldSizeEnv}).");
        int visible = torch.cuda.device_count();
        if (group.LocalRank >= visible)
            throw new InvalidOperationException($"{group}: LOCAL_RANK {group.LocalRank} has no GPU (this host shows {visible}). Start at most {visible} ranks per host (--nproc-per-node).");
        var store = TcpStore.Connect(group);
        try { return new DistributedContext(group, store, NcclCommunicator.Create(group, store, group.LocalRank, nccl)); }
        catch { store.Dispose(); throw; }
    }

    /// <summary>A context over an existing communicator (tests, or an in-process simulation).</summary>
    public static DistributedContext FromCommunicator(ICommunicator comm)
        => new(new ProcessGroupOptions { Rank = comm.Rank, WorldSize = comm.WorldSize, LocalRank = comm.Rank }, null, comm);

    /// <summary>This rank's rows of a data set of <paramref name="rowCount"/> rows (see <see cref="ShardedBatches"/>).</summary>
    public ShardedBatches Shard(int rowCount, int? shuffleSeed = null, UnevenRows uneven = UnevenRows.Drop)
        => new(rowCount, Rank, WorldSize, shuffleSeed, uneven);

    /// <summary>Gradient averaging for the trainable ones among <paramref name="parameters"/>.</summary>
    public DistributedGradientSync CreateGradientSync(IEnumerable<Parameter> parameters, long bucketElements = DistributedGradientSync.DefaultBucketElements)
        => new(parameters, Communicator, bucketElements);

    /// <summary>Runs <paramref name="write"/> on rank 0 only; every rank returns once it is done (see <see cref="RankZero.Run"/>).</summary>
    public void WriteOnRankZero(Action write, string what = "writing files") => RankZero.Run(Communicator, write, what);

    /// <summary>Waits for every rank (store barrier when there is a store, so a dead rank is named; else a collective barrier).</summary>
    public void Barrier(string name = "barrier")
    {
        if (Store is not null) Store.Barrier(name); else Communicator.Barrier();
    }

    /// <summary>Meets the other ranks one last time (so rank 0's store outlives every use), then releases NCCL and the store.</summary>
    public void Dispose()
    {
        try { if (Store is not null) Store.Barrier("shutdown"); }
        finally { Communicator.Dispose(); Store?.Dispose(); }
    }
}
