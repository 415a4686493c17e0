using System.Diagnostics;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Distributed;

/// <summary>
/// <see cref="ICommunicator"/> over the real NCCL library: one process per GPU, collectives run by NCCL directly on the
/// tensors' device memory.
/// </summary>
/// <remarks>
/// <para><b>Stream ordering.</b> Collectives are queued on the CUDA legacy default stream (stream handle 0), the stream
/// libtorch queues TorchSharp's kernels on unless a different stream is made current (TorchSharp exposes none). So a
/// collective starts after the kernels that produced its input and the kernels queued after it see its result; no
/// extra synchronization is needed for correctness.</para>
/// <para><b>Bounded waits.</b> With <see cref="NcclOptions.BlockingWait"/> (off by default) each collective returns only once it has
/// finished on the GPU, polling <c>ncclCommGetAsyncError</c> meanwhile; when it exceeds the timeout (a peer died or never
/// called it) the communicator is aborted (<c>ncclCommAbort</c>) and a <see cref="TimeoutException"/> is thrown instead of
/// hanging. Without it (the default), collectives are only queued (the host runs ahead of the GPU, as PyTorch's DDP does) and a
/// <see cref="CollectiveWatchdog"/> thread follows each one through a CUDA event: on a timeout or an asynchronous NCCL error
/// it prints which collective on which rank failed and ends the process (exit code 71), PyTorch's async error handling.</para>
/// <para><b>NVLink multicast.</b> <c>NCCL_NVLS_ENABLE=0</c> is set in this process's native environment before NCCL starts
/// (NVLS stays off; see <see cref="NcclOptions.DisableNvls"/>).</para>
/// </remarks>
public sealed unsafe class NcclCommunicator : ICommunicator
{
    readonly NcclLibrary _nccl;
    readonly TimeSpan _timeout;
    readonly CollectiveWatchdog? _watchdog;   // non-blocking mode only
    IntPtr _comm;

    NcclCommunicator(NcclLibrary nccl, IntPtr comm, int rank, int worldSize, int cudaDevice, NcclOptions options, TimeSpan timeout)
    {
        _nccl = nccl; _comm = comm; Rank = rank; WorldSize = worldSize; CudaDevice = cudaDevice; _timeout = timeout;
        Device = torch.device(DeviceType.CUDA, cudaDevice);
        if (!options.BlockingWait)
            _watchdog = new CollectiveWatchdog(new CudaEventMarkers(cudaDevice), AsyncErrorMessage,
                options.OnWatchdogFailure ?? EndProcess, timeout, $"Rank {rank} of {worldSize} (cuda:{cudaDevice})");
    }

    /// <summary>ncclCommGetAsyncError as a message, or null (polled by the watchdog thread; NCCL allows that).</summary>
    string? AsyncErrorMessage()
    {
        var comm = _comm;
        if (comm == IntPtr.Zero) return null;
        int err;
        if (_nccl.CommGetAsyncError(comm, &err) != 0 || err == 0 || err == 7 /* ncclInProgress */) return null;
        return $"NCCL reported an asynchronous error: {_nccl.ErrorString(err)} (a peer rank probably died).";
    }

    static void EndProcess(string message)
    {
        Console.Error.WriteLine($"{message} Ending this process (exit code {CollectiveWatchdog.ExitCode}): a queued step may have used the " +
            "broken collective's result, so nothing after the last checkpoint is kept; resume from that checkpoint.");
        Console.Error.Flush();
        // _exit, not Environment.Exit: exit handlers of native libraries (the CUDA caching allocator's teardown) would wait
        // for the stuck NCCL kernel forever (seen on 2 × H100: the launcher had to kill the rank). PyTorch aborts likewise.
        _exit(CollectiveWatchdog.ExitCode);
    }

    [DllImport("libc", EntryPoint = "_exit")]
    static extern void _exit(int status);

    /// <inheritdoc/>
    public int Rank { get; }
    /// <inheritdoc/>
    public int WorldSize { get; }
    /// <summary>The CUDA device index this rank uses.</summary>
    public int CudaDevice { get; }
    /// <inheritdoc/>
    public Device Device { get; }
    /// <summary>The NCCL library in use (path, version).</summary>
    public NcclLibrary Library => _nccl;

    /// <summary>
    /// Creates the communicator: loads NCCL, rank 0 creates the unique id and publishes it in <paramref name="store"/>,
    /// every rank reads it, all meet at a store barrier (bounded: names missing ranks), then <c>ncclCommInitRank</c> on
    /// <paramref name="cudaDevice"/> (default: the local rank).
    /// </summary>
    public static NcclCommunicator Create(ProcessGroupOptions group, TcpStore store, int? cudaDevice = null, NcclOptions? options = null)
    {
        options ??= new NcclOptions();
        group.Validate();
        if (store.Rank != group.Rank || store.WorldSize != group.WorldSize)
            throw new ArgumentException($"The store belongs to rank {store.Rank}/{store.WorldSize} but the group says {group.Rank}/{group.WorldSize}.");
        if (options.DisableNvls) SetNativeEnvironment("NCCL_NVLS_ENABLE", "0");
        var nccl = NcclLibrary.Load(options.LibraryPath);
        int device = cudaDevice ?? group.LocalRank;
        CudaRuntime.SetDevice(device);

        NcclUniqueId id;
        const string key = "nccl/unique_id";
        if (group.Rank == 0)
        {
            NcclUniqueId created;
            nccl.Check(nccl.GetUniqueId(&created), "ncclGetUniqueId");
            id = created;
            store.Set(key, id.ToArray());
        }
        else id = NcclUniqueId.FromArray(store.Get(key));
        store.Barrier("nccl-init");   // everyone is here: ncclCommInitRank will not wait for an absent rank

        IntPtr comm;
        nccl.Check(nccl.CommInitRank(&comm, group.WorldSize, id, group.Rank), $"ncclCommInitRank(rank {group.Rank} of {group.WorldSize}, cuda:{device})");
        return new NcclCommunicator(nccl, comm, group.Rank, group.WorldSize, device, options, group.Timeout);
    }

    /// <inheritdoc/>
    public void AllReduceSum(Tensor tensor) => AllReduce(tensor, RedOp.Sum);

    /// <inheritdoc/>
    public void AllReduceAverage(Tensor tensor)
    {
        if (!tensor.is_floating_point()) throw new ArgumentException($"AllReduceAverage needs a floating-point tensor (got {tensor.dtype}).");
        AllReduce(tensor, RedOp.Avg);
    }

    void AllReduce(Tensor tensor, RedOp op)
    {
        var (ptr, count, dtype) = Describe(tensor);
        CudaRuntime.SetDevice(CudaDevice);
        _nccl.Check(_nccl.AllReduce(ptr, ptr, (nuint)count, dtype, (int)op, _comm, IntPtr.Zero), $"ncclAllReduce({count} × {tensor.dtype})");
        Complete("all-reduce");
    }

    /// <inheritdoc/>
    public void Broadcast(Tensor tensor, int root = 0)
    {
        if (root < 0 || root >= WorldSize) throw new ArgumentOutOfRangeException(nameof(root), $"Broadcast root {root} is not a rank of a world of {WorldSize}.");
        var (ptr, count, dtype) = Describe(tensor);
        CudaRuntime.SetDevice(CudaDevice);
        _nccl.Check(_nccl.Broadcast(ptr, ptr, (nuint)count, dtype, root, _comm, IntPtr.Zero), $"ncclBroadcast({count} × {tensor.dtype}, root {root})");
        Complete("broadcast");
    }

    /// <summary>A barrier as a one-element all-reduce (what <c>torch.distributed.barrier</c> does on NCCL).</summary>
    public void Barrier()
    {
        using var scope = NewDisposeScope();
        var t = ones(1, dtype: ScalarType.Float32, device: Device);
        AllReduceSum(t);
        _watchdog?.WaitAll();   // non-blocking mode: bounded wait for everything queued
    }

    (IntPtr Ptr, long Count, int Dtype) Describe(Tensor t)
    {
        ObjectDisposedException.ThrowIf(_comm == IntPtr.Zero, this);
        if (t.device_type != DeviceType.CUDA || t.device_index != CudaDevice)
            throw new ArgumentException($"Rank {Rank}: NCCL collectives need a tensor on cuda:{CudaDevice} (got {t.device}).");
        if (!t.is_contiguous()) throw new ArgumentException("NCCL collectives need a contiguous tensor (call .contiguous() on a flat buffer).");
        var dtype = t.dtype switch
        {
            ScalarType.Float32 => 7, ScalarType.Float64 => 8, ScalarType.BFloat16 => 9, ScalarType.Float16 => 6,
            ScalarType.Int32 => 2, ScalarType.Int64 => 4, ScalarType.Byte => 1, ScalarType.Int8 => 0,
            _ => throw new ArgumentException($"NCCL has no data type for {t.dtype}."),
        };
        return (DataPointer(t), t.numel(), dtype);
    }

    /// <summary>
    /// Address of a tensor's first element in its device's memory: the storage's base pointer (TorchSharp's
    /// <c>Storage.data_ptr()</c>) plus <c>storage_offset × element size</c>. Works for CPU and CUDA tensors.
    /// </summary>
    public static IntPtr DataPointer(Tensor t)
    {
        using var scope = NewDisposeScope();   // storage<T>() makes an alias tensor; it is disposed here
        IntPtr basePtr = t.dtype switch
        {
            ScalarType.Float32 => t.storage<float>().data_ptr(),
            ScalarType.Float64 => t.storage<double>().data_ptr(),
            ScalarType.Int32 => t.storage<int>().data_ptr(),
            ScalarType.Int64 => t.storage<long>().data_ptr(),
            ScalarType.Byte => t.storage<byte>().data_ptr(),
            // bf16/fp16/… have no Storage<T> in TorchSharp: ask LibTorchSharp's THSStorage_data_ptr directly.
            _ => StorageDataPtr(t),
        };
        return basePtr + checked((nint)(t.storage_offset() * t.element_size()));
    }

    static delegate* unmanaged<IntPtr, IntPtr> _thsStorageDataPtr;

    static IntPtr StorageDataPtr(Tensor t)
    {
        if (_thsStorageDataPtr == null)
        {
            if (!NativeLibrary.TryLoad("LibTorchSharp", typeof(torch).Assembly, null, out var h) &&
                !NativeLibrary.TryLoad("libLibTorchSharp.so", typeof(torch).Assembly, null, out h))
                throw new DllNotFoundException("LibTorchSharp could not be located to read a tensor's data pointer.");
            _thsStorageDataPtr = (delegate* unmanaged<IntPtr, IntPtr>)NativeLibrary.GetExport(h, "THSStorage_data_ptr");
        }
        var p = _thsStorageDataPtr(t.Handle);
        if (p == IntPtr.Zero) throw new InvalidOperationException($"A {t.dtype} tensor on {t.device} has no data pointer (empty or not materialized).");
        return p;
    }

    void Complete(string what)
    {
        if (_watchdog is not null) { _watchdog.Track(what); return; }   // the watchdog thread polls errors and completion
        var sw = Stopwatch.StartNew();
        var spin = new SpinWait();
        while (!CudaRuntime.StreamDone(IntPtr.Zero))
        {
            CheckAsync(what);
            if (sw.Elapsed > _timeout)
            {
                _nccl.CommAbort(_comm); _comm = IntPtr.Zero;
                throw new TimeoutException($"Rank {Rank}: NCCL {what} did not finish within {_timeout.TotalSeconds:0.#} s — another rank has probably died or stopped calling collectives. The communicator was aborted.");
            }
            if (sw.ElapsedMilliseconds > 50) Thread.Sleep(1); else spin.SpinOnce(sleep1Threshold: -1);   // spin (no 1 ms sleeps) for the usual short waits
        }
        CheckAsync(what);
    }

    void CheckAsync(string what)
    {
        int asyncErr;
        _nccl.Check(_nccl.CommGetAsyncError(_comm, &asyncErr), "ncclCommGetAsyncError");
        if (asyncErr != 0 && asyncErr != 7 /* ncclInProgress */)
        {
            var msg = _nccl.ErrorString(asyncErr);
            _nccl.CommAbort(_comm); _comm = IntPtr.Zero;
            throw new NcclException(asyncErr, $"Rank {Rank}: NCCL {what} failed asynchronously: {msg} (a peer rank probably died). The communicator was aborted.");
        }
    }

    /// <summary>Destroys the NCCL communicator (collectives must be complete on every rank).</summary>
    public void Dispose()
    {
        if (_comm == IntPtr.Zero) return;
        _watchdog?.Dispose();
        CudaRuntime.SetDevice(CudaDevice);
        CudaRuntime.StreamSynchronize(IntPtr.Zero);
        _nccl.CommDestroy(_comm);
        _comm = IntPtr.Zero;
    }

    enum RedOp { Sum = 0, Prod = 1, Max = 2, Min = 3, Avg = 4 }

    /// <summary>
    /// Sets a variable in both .NET's and the native (libc) environment. .NET on Linux keeps its own copy, so
    /// <see cref="Environment.SetEnvironmentVariable(string, string)"/> alone is invisible to NCCL's <c>getenv</c>.
    /// </summary>
    public static void SetNativeEnvironment(string name, string value)
    {
        Environment.SetEnvironmentVariable(name, value);
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()) _ = setenv(name, value, 1);
    }

    [DllImport("libc", EntryPoint = "setenv")]
    static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
}

/// <summary>Options of <see cref="NcclCommunicator"/>.</summary>
public sealed record NcclOptions
{
    /// <summary>Explicit path of <c>libnccl.so.2</c> or its folder (first place searched; see <see cref="NcclLibrary"/>).</summary>
    public string? LibraryPath { get; init; }
    /// <summary>Variable that sets <see cref="BlockingWait"/>'s default: <c>QUANTA_NCCL_BLOCKING_WAIT=1</c> waits for each collective.</summary>
    public const string BlockingWaitEnv = "QUANTA_NCCL_BLOCKING_WAIT";

    /// <summary>
    /// True: wait for each collective to finish, bounded by the group timeout, and throw a <see cref="TimeoutException"/> if a
    /// peer does not take part. False (default, as in PyTorch's ProcessGroupNCCL; <c>QUANTA_NCCL_BLOCKING_WAIT=1</c> turns
    /// blocking on): collectives are only queued, so the host keeps queuing the optimizer step and the next forward while the
    /// GPU works (as fast or faster in every measurement: docs/distributed.md); a watchdog thread bounds the wait instead and
    /// ends the process on a timeout (see <see cref="OnWatchdogFailure"/>).
    /// </summary>
    public bool BlockingWait { get; init; } = Environment.GetEnvironmentVariable(BlockingWaitEnv) is "1" or "true" or "True";

    /// <summary>
    /// Non-blocking mode: called on the watchdog thread with the failure message (a collective timed out or NCCL reported an
    /// asynchronous error). Default: print it and end the process with exit code 71, because the training thread may be
    /// stuck in a device synchronization that never returns. Replace it only if you can end the work otherwise.
    /// </summary>
    public Action<string>? OnWatchdogFailure { get; init; }
    /// <summary>Set <c>NCCL_NVLS_ENABLE=0</c> before NCCL starts (default true: NVLink multicast stays off).</summary>
    public bool DisableNvls { get; init; } = true;
}

/// <summary>Stream markers as CUDA events on the legacy default stream (where the collectives are queued).</summary>
internal sealed class CudaEventMarkers(int device) : IStreamMarkers
{
    /// <inheritdoc/>
    public void BindThread() => CudaRuntime.SetDevice(device);
    /// <inheritdoc/>
    public IntPtr Record() => CudaRuntime.RecordEvent(IntPtr.Zero);
    /// <inheritdoc/>
    public bool IsDone(IntPtr marker) => CudaRuntime.EventDone(marker);
    /// <inheritdoc/>
    public void Destroy(IntPtr marker) => CudaRuntime.DestroyEvent(marker);
}
