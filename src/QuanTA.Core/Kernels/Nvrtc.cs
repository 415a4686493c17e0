using System.Runtime.InteropServices;
using System.Text;
using QuanTA.Core.Runtime;

namespace QuanTA.Core.Kernels;

/// <summary>
/// NVRTC, CUDA's runtime compiler: CUDA C source in, CUBIN (or PTX) out. Found the way <c>Distributed/CudaRuntime.cs</c>
/// finds libcudart: next to the libtorch in use (a PyTorch install's <c>site-packages/nvidia/cu13/lib</c> or
/// <c>nvidia/cuda_nvrtc/lib</c>), then a CUDA toolkit's <c>/usr/local/cuda/lib64</c>, then the system loader's
/// <c>libnvrtc.so.13</c> / <c>libnvrtc.so.12</c>.
/// </summary>
internal static unsafe class Nvrtc
{
    static readonly object Gate = new();
    static bool _tried;
    static string? _failure;
    static delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    static delegate* unmanaged<IntPtr, int, byte**, int> _compileProgram;
    static delegate* unmanaged<IntPtr*, int> _destroyProgram;
    static delegate* unmanaged<IntPtr, nuint*, int> _getProgramLogSize;
    static delegate* unmanaged<IntPtr, byte*, int> _getProgramLog;
    static delegate* unmanaged<IntPtr, nuint*, int> _getCubinSize;
    static delegate* unmanaged<IntPtr, byte*, int> _getCubin;
    static delegate* unmanaged<IntPtr, nuint*, int> _getPtxSize;
    static delegate* unmanaged<IntPtr, byte*, int> _getPtx;
    static delegate* unmanaged<int, IntPtr> _getErrorString;
    static delegate* unmanaged<int*, int*, int> _version;
    static delegate* unmanaged<int*, int> _getNumSupportedArchs;
    static delegate* unmanaged<int*, int> _getSupportedArchs;

    /// <summary>The file NVRTC was loaded from (after a successful <see cref="TryBind"/>).</summary>
    public static string? LoadedFrom { get; private set; }

    /// <summary>NVRTC's version, e.g. (13, 0).</summary>
    public static (int Major, int Minor) Version { get; private set; }

    /// <summary>The places searched, in order; names without a slash go to the system loader.</summary>
    public static IReadOnlyList<string> Candidates(string? libTorchDirectory)
    {
        var list = new List<string>();
        if (!string.IsNullOrWhiteSpace(libTorchDirectory))
            foreach (var sub in new[] { "cu13/lib", "cuda_nvrtc/lib", "cu12/lib" })
                foreach (var n in new[] { "libnvrtc.so.13", "libnvrtc.so.12" })
                    list.Add(Path.GetFullPath(Path.Combine(libTorchDirectory, "..", "..", "nvidia", sub, n)));
        var toolkits = new List<string> { "/usr/local/cuda/lib64" };
        if (Directory.Exists("/usr/local"))                                          // versioned toolkits, newest first
            toolkits.AddRange(Directory.GetDirectories("/usr/local", "cuda-*").OrderByDescending(d => d, StringComparer.Ordinal).Select(d => Path.Combine(d, "lib64")));
        foreach (var dir in toolkits)
            foreach (var n in new[] { "libnvrtc.so.13", "libnvrtc.so.12" }) list.Add(Path.Combine(dir, n));
        list.Add("libnvrtc.so.13");
        list.Add("libnvrtc.so.12");
        return list;
    }

    /// <summary>Binds NVRTC once per process; null on success, else why not (every place tried).</summary>
    public static string? TryBind()
    {
        lock (Gate)
        {
            if (_tried) return _failure;
            _tried = true;
            var tried = new List<string>();
            foreach (var c in Candidates(TorchRuntime.LibTorchDirectory ?? Environment.GetEnvironmentVariable(TorchRuntime.LibTorchDirEnv)))
            {
                if (c.Contains('/') && !File.Exists(c)) { tried.Add($"{c} (no such file)"); continue; }
                if (c.Contains('/'))                                                 // NVRTC dlopens its builtins by name: load the
                    foreach (var b in Directory.GetFiles(Path.GetDirectoryName(c)!, "libnvrtc-builtins.so*"))   // neighbour first
                        NativeLibrary.TryLoad(b, out _);
                if (!NativeLibrary.TryLoad(c, out var h)) { tried.Add($"{c} (not loadable)"); continue; }
                try { BindExports(h); }
                catch (EntryPointNotFoundException e) { tried.Add($"{c} ({e.Message})"); continue; }
                LoadedFrom = c;
                int major, minor;
                _version(&major, &minor);
                Version = (major, minor);
                return null;
            }
            return _failure = "NVRTC (libnvrtc) was not found; tried: " + string.Join("; ", tried) +
                              $". A CUDA PyTorch install ships it (nvidia-cuda-nvrtc); point {TorchRuntime.LibTorchDirEnv} at that install's torch/lib";
        }
    }

    static void BindExports(IntPtr h)
    {
        IntPtr F(string name) => NativeLibrary.TryGetExport(h, name, out var p) ? p : throw new EntryPointNotFoundException($"no export '{name}'");
        _createProgram = (delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int>)F("nvrtcCreateProgram");
        _compileProgram = (delegate* unmanaged<IntPtr, int, byte**, int>)F("nvrtcCompileProgram");
        _destroyProgram = (delegate* unmanaged<IntPtr*, int>)F("nvrtcDestroyProgram");
        _getProgramLogSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetProgramLogSize");
        _getProgramLog = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetProgramLog");
        _getCubinSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetCUBINSize");
        _getCubin = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetCUBIN");
        _getPtxSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetPTXSize");
        _getPtx = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetPTX");
        _getErrorString = (delegate* unmanaged<int, IntPtr>)F("nvrtcGetErrorString");
        _version = (delegate* unmanaged<int*, int*, int>)F("nvrtcVersion");
        _getNumSupportedArchs = (delegate* unmanaged<int*, int>)F("nvrtcGetNumSupportedArchs");
        _getSupportedArchs = (delegate* unmanaged<int*, int>)F("nvrtcGetSupportedArchs");
    }

    static void Check(int result, string call)
    {
        if (result != 0) throw new InvalidOperationException($"{call} failed: {Marshal.PtrToStringAnsi(_getErrorString(result))} (nvrtcResult {result}).");
    }

    /// <summary>The real architectures this NVRTC can emit CUBIN for (e.g. 75, 80, 86, 89, 90, …).</summary>
    public static int[] SupportedArchitectures()
    {
        int n; Check(_getNumSupportedArchs(&n), "nvrtcGetNumSupportedArchs");
        var archs = new int[n];
        fixed (int* p = archs) Check(_getSupportedArchs(p), "nvrtcGetSupportedArchs");
        return archs;
    }

    /// <summary>
    /// Compiles <paramref name="source"/> for compute capability <paramref name="arch"/> (e.g. 90): a CUBIN for
    /// <c>sm_{arch}</c> when this NVRTC knows that architecture, else PTX for the newest one it knows (the driver finishes
    /// the compile for a newer GPU). Throws with NVRTC's log when the source does not compile.
    /// </summary>
    public static (byte[] Image, string Target) Compile(string source, string name, int arch)
    {
        var archs = SupportedArchitectures();
        if (archs.Length == 0 || arch < archs.Min())
            throw new NotSupportedException($"NVRTC {Version.Major}.{Version.Minor} cannot compile for compute capability {arch / 10}.{arch % 10} (it supports {string.Join(", ", archs)}).");
        bool cubin = archs.Contains(arch);
        var target = cubin ? $"sm_{arch}" : $"compute_{archs.Where(a => a <= arch).Max()}";
        var options = new[] { $"--gpu-architecture={target}", "--std=c++17" };
        IntPtr prog;
        var src = Encoding.UTF8.GetBytes(source + "\0");
        var nm = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* s = src) fixed (byte* n = nm) Check(_createProgram(&prog, s, n, 0, null, null), "nvrtcCreateProgram");
        try
        {
            var optBytes = options.Select(o => Encoding.ASCII.GetBytes(o + "\0")).ToArray();
            var handles = optBytes.Select(b => GCHandle.Alloc(b, GCHandleType.Pinned)).ToArray();
            int rc;
            try
            {
                var ptrs = stackalloc byte*[options.Length];
                for (int i = 0; i < options.Length; i++) ptrs[i] = (byte*)handles[i].AddrOfPinnedObject();
                rc = _compileProgram(prog, options.Length, ptrs);
            }
            finally { foreach (var hd in handles) hd.Free(); }
            if (rc != 0)
                throw new InvalidOperationException($"NVRTC could not compile {name} for {target}: {Marshal.PtrToStringAnsi(_getErrorString(rc))}\n{Log(prog)}");
            nuint size;
            Check(cubin ? _getCubinSize(prog, &size) : _getPtxSize(prog, &size), "nvrtcGet" + (cubin ? "CUBIN" : "PTX") + "Size");
            var image = new byte[(int)size];
            fixed (byte* p = image) Check(cubin ? _getCubin(prog, p) : _getPtx(prog, p), "nvrtcGet" + (cubin ? "CUBIN" : "PTX"));
            return (image, target);
        }
        finally { _destroyProgram(&prog); }
    }

    static string Log(IntPtr prog)
    {
        nuint size;
        if (_getProgramLogSize(prog, &size) != 0 || size <= 1) return "(no compiler log)";
        var buf = new byte[(int)size];
        fixed (byte* p = buf) _getProgramLog(prog, p);
        return Encoding.UTF8.GetString(buf, 0, buf.Length - 1);
    }
}
