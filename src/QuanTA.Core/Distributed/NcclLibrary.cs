using System.Runtime.InteropServices;
using QuanTA.Core.Runtime;

namespace QuanTA.Core.Distributed;

/// <summary>
/// Finds and binds the real NCCL library (<c>libnccl.so.2</c>) and the CUDA runtime calls the communicator needs.
/// Search order (first hit wins):
/// <list type="number">
/// <item>an explicit path (a file, or a folder holding <c>libnccl.so.2</c>) passed by the caller;</item>
/// <item>the <c>QUANTA_NCCL_PATH</c> environment variable (file or folder);</item>
/// <item>the libtorch directory in use (<see cref="TorchRuntime.LibTorchDirectory"/>, else <c>QUANTA_LIBTORCH_DIR</c>);</item>
/// <item>the PyTorch install's nvidia-nccl wheel: <c>&lt;libtorch dir&gt;/../../nvidia/nccl/lib/libnccl.so.2</c>
///       (i.e. <c>site-packages/nvidia/nccl/lib</c>), or <c>nvidia/cu13/lib</c>, <c>nvidia/cu12/lib</c>;</item>
/// <item>the system loader's search for <c>libnccl.so.2</c>: a copy libtorch already loaded (PyTorch links NCCL), <c>LD_LIBRARY_PATH</c>, ldconfig.</item>
/// </list>
/// Absent everywhere → <see cref="DllNotFoundException"/> listing every place tried.
/// </summary>
public sealed unsafe class NcclLibrary
{
    /// <summary>Environment variable naming <c>libnccl.so.2</c> or the folder holding it.</summary>
    public const string NcclPathEnv = "QUANTA_NCCL_PATH";
    /// <summary>The NCCL library's file name (soname).</summary>
    public const string FileName = "libnccl.so.2";

    static readonly object Gate = new();
    static NcclLibrary? _loaded;

    /// <summary>Full path (or soname for the system search) of the loaded library.</summary>
    public string Path { get; }
    /// <summary>NCCL version as reported by <c>ncclGetVersion</c> (e.g. 22703 for 2.27.3).</summary>
    public int Version { get; }

    internal readonly delegate* unmanaged<NcclUniqueId*, int> GetUniqueId;
    internal readonly delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int> CommInitRank;
    internal readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> AllReduce;
    internal readonly delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int> Broadcast;
    internal readonly delegate* unmanaged<IntPtr, int> CommDestroy;
    internal readonly delegate* unmanaged<IntPtr, int> CommAbort;
    internal readonly delegate* unmanaged<IntPtr, int*, int> CommGetAsyncError;
    readonly delegate* unmanaged<int, IntPtr> _getErrorString;

    NcclLibrary(string path, IntPtr handle)
    {
        Path = path;
        IntPtr F(string name) => NativeLibrary.TryGetExport(handle, name, out var p) ? p
            : throw new EntryPointNotFoundException($"{path} has no export '{name}': is it really NCCL ≥ 2.10?");
        GetUniqueId = (delegate* unmanaged<NcclUniqueId*, int>)F("ncclGetUniqueId");
        CommInitRank = (delegate* unmanaged<IntPtr*, int, NcclUniqueId, int, int>)F("ncclCommInitRank");
        AllReduce = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)F("ncclAllReduce");
        Broadcast = (delegate* unmanaged<IntPtr, IntPtr, nuint, int, int, IntPtr, IntPtr, int>)F("ncclBroadcast");
        CommDestroy = (delegate* unmanaged<IntPtr, int>)F("ncclCommDestroy");
        CommAbort = (delegate* unmanaged<IntPtr, int>)F("ncclCommAbort");
        CommGetAsyncError = (delegate* unmanaged<IntPtr, int*, int>)F("ncclCommGetAsyncError");
        _getErrorString = (delegate* unmanaged<int, IntPtr>)F("ncclGetErrorString");
        var getVersion = (delegate* unmanaged<int*, int>)F("ncclGetVersion");
        int v; Check(getVersion(&v), "ncclGetVersion"); Version = v;
    }

    /// <summary>
    /// The places searched, in order, for the given explicit path (see the type's summary). Entries without a slash are
    /// names for the system loader. Exposed so a user (and the tests) can see exactly where NCCL is looked for.
    /// </summary>
    public static IReadOnlyList<string> Candidates(string? explicitPath = null, Func<string, string?>? getEnv = null)
    {
        getEnv ??= Environment.GetEnvironmentVariable;
        var list = new List<string>();
        void AddFileOrDir(string? p)
        {
            if (string.IsNullOrWhiteSpace(p)) return;
            list.Add(Directory.Exists(p) || p.EndsWith('/') ? System.IO.Path.Combine(p, FileName) : p);
        }
        AddFileOrDir(explicitPath);
        AddFileOrDir(getEnv(NcclPathEnv));
        var torchDir = TorchRuntime.LibTorchDirectory ?? getEnv(TorchRuntime.LibTorchDirEnv);
        if (!string.IsNullOrWhiteSpace(torchDir))
        {
            list.Add(System.IO.Path.Combine(torchDir, FileName));
            list.Add(System.IO.Path.GetFullPath(System.IO.Path.Combine(torchDir, "..", "..", "nvidia", "nccl", "lib", FileName)));
            foreach (var cu in new[] { "cu13", "cu12" })   // layouts of the per-CUDA-version NVIDIA wheels
                list.Add(System.IO.Path.GetFullPath(System.IO.Path.Combine(torchDir, "..", "..", "nvidia", cu, "lib", FileName)));
        }
        list.Add(FileName);
        return list.Distinct().ToList();
    }

    /// <summary>Loads NCCL once per process (later calls return the same library; the path of the first call wins).</summary>
    /// <exception cref="DllNotFoundException">no candidate could be loaded; the message lists each place and why it failed.</exception>
    public static NcclLibrary Load(string? explicitPath = null)
    {
        lock (Gate) return _loaded ??= LoadFirst(Candidates(explicitPath));
    }

    /// <summary>Loads the first loadable candidate, without the process-wide cache (tests bind a stand-in library this way).</summary>
    internal static NcclLibrary LoadFirst(IEnumerable<string> candidates)
    {
        var tried = new List<string>();
        foreach (var c in candidates)
        {
            bool isName = !c.Contains('/');
            if (!isName && !File.Exists(c)) { tried.Add($"{c} (no such file)"); continue; }
            try
            {
                var h = NativeLibrary.Load(c);
                return new NcclLibrary(c, h);
            }
            catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or EntryPointNotFoundException)
            {
                tried.Add($"{c} ({(isName ? "system loader search: " : "")}{e.Message.Split('\n')[0]})");
            }
        }
        throw new DllNotFoundException(
            $"NCCL ({FileName}) was not found. Tried, in order:\n  " + string.Join("\n  ", tried) +
            $"\nSet {NcclPathEnv} to the file or its folder (a CUDA PyTorch install ships it in site-packages/nvidia/nccl/lib; " +
            $"with {TorchRuntime.LibTorchDirEnv} pointing at that install's torch/lib it is found automatically), or install NCCL system-wide.");
    }

    /// <summary>NCCL's description of a result code.</summary>
    public string ErrorString(int result) => Marshal.PtrToStringAnsi(_getErrorString(result)) ?? $"ncclResult {result}";

    /// <summary>Throws <see cref="NcclException"/> for a non-success result code.</summary>
    public void Check(int result, string call)
    {
        if (result != 0) throw new NcclException(result, $"{call} failed: {ErrorString(result)} (ncclResult {result}). Set NCCL_DEBUG=INFO for NCCL's own log.");
    }
}

/// <summary>An NCCL call returned an error.</summary>
public sealed class NcclException(int result, string message) : Exception(message)
{
    /// <summary>The <c>ncclResult_t</c> code.</summary>
    public int Result { get; } = result;
}

/// <summary><c>ncclUniqueId</c>: 128 opaque bytes that rank 0 creates and every rank passes to <c>ncclCommInitRank</c>.</summary>
[StructLayout(LayoutKind.Sequential, Size = Bytes)]
public unsafe struct NcclUniqueId
{
    /// <summary>Size of the id (NCCL_UNIQUE_ID_BYTES).</summary>
    public const int Bytes = 128;
    fixed byte _internal[Bytes];

    /// <summary>The id's bytes (for the rendezvous store).</summary>
    public byte[] ToArray() { var a = new byte[Bytes]; fixed (byte* p = _internal) new ReadOnlySpan<byte>(p, Bytes).CopyTo(a); return a; }

    /// <summary>Rebuilds an id from its 128 bytes.</summary>
    public static NcclUniqueId FromArray(byte[] bytes)
    {
        if (bytes.Length != Bytes) throw new ArgumentException($"An NCCL unique id has {Bytes} bytes (got {bytes.Length}).");
        var id = new NcclUniqueId();
        bytes.CopyTo(new Span<byte>(id._internal, Bytes));
        return id;
    }
}
