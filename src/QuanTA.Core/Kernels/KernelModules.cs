using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using QuanTA.Core.Runtime;

namespace QuanTA.Core.Kernels;

/// <summary>
/// The CUDA C sources of the kernels (embedded resources from <c>Kernels/Sources/*.cu</c>), each compiled by NVRTC at
/// first use with the shared prelude (<c>Kernels/Sources/prelude.cuh</c>: the 16-bit type and the F32/BF16/F16
/// conversions) prepended (<see cref="CompiledSource"/>), and cached per GPU architecture: in memory for the process,
/// and on disk under the user's cache folder (<c>$XDG_CACHE_HOME/quanta/kernels</c> or <c>~/.cache/quanta/kernels</c>;
/// <see cref="CacheDirEnv"/> overrides it, <c>off</c> disables it), written atomically and keyed by a hash of the
/// compiled text (prelude included), the compile target and the NVRTC version. Each device's primary context loads a
/// module once.
/// </summary>
internal static class KernelModules
{
    /// <summary>Environment variable naming the on-disk kernel cache folder, or <c>off</c> for none.</summary>
    public const string CacheDirEnv = "QUANTA_KERNEL_CACHE";
    const string ResourcePrefix = "QuanTA.Core.Kernels.Sources.";
    /// <summary>The embedded prelude prepended to every kernel source (not a kernel source itself).</summary>
    public const string PreludeFile = "prelude.cuh";

    static readonly object Gate = new();
    static readonly Dictionary<(string File, int Arch), (byte[] Image, string Target)> Images = [];
    static readonly Dictionary<(string File, int Device), LoadedModule> Modules = [];

    /// <summary>The names of the embedded kernel sources (e.g. <c>rmsnorm.cu</c>): the <c>.cu</c> files, not the prelude.</summary>
    public static IEnumerable<string> SourceNames => typeof(KernelModules).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal)).Select(n => n[ResourcePrefix.Length..])
        .Where(n => n.EndsWith(".cu", StringComparison.Ordinal));

    /// <summary>
    /// The text NVRTC compiles for the kernel source <paramref name="file"/>: the prelude (<see cref="PreludeFile"/>), then
    /// a <c>#line 1 "file"</c> directive (so that NVRTC's messages give the file's own line numbers), then the file.
    /// </summary>
    /// <exception cref="FileNotFoundException">the file or the prelude is not embedded.</exception>
    public static string CompiledSource(string file)
    {
        var prelude = Source(PreludeFile);
        var sb = new StringBuilder(prelude);
        if (prelude.Length > 0 && prelude[^1] != '\n') sb.Append('\n');
        sb.Append("#line 1 \"").Append(file).Append("\"\n");
        sb.Append(Source(file));
        return sb.ToString();
    }

    /// <summary>The CUDA C text of the embedded file <paramref name="file"/> as it is in the repo (without the prelude).</summary>
    /// <exception cref="FileNotFoundException">no such embedded source (the build did not embed Kernels/Sources/<paramref name="file"/>).</exception>
    public static string Source(string file)
    {
        using var s = typeof(KernelModules).Assembly.GetManifestResourceStream(ResourcePrefix + file)
            ?? throw new FileNotFoundException($"The kernel source '{file}' is not embedded in QuanTA.Core (expected Kernels/Sources/{file} as an EmbeddedResource).");
        using var r = new StreamReader(s, Encoding.UTF8);
        return r.ReadToEnd();
    }

    /// <summary>The module of <paramref name="file"/> loaded on CUDA device <paramref name="ordinal"/>, compiling it on first use.</summary>
    public static LoadedModule Load(string file, int ordinal)
    {
        lock (Gate)
        {
            if (Modules.TryGetValue((file, ordinal), out var m)) return m;
            var (major, minor) = CudaDriver.ComputeCapability(ordinal);
            int arch = major * 10 + minor;
            using var context = CudaDriver.Enter(ordinal);
            var (image, target, fromDisk) = Image(file, arch);
            IntPtr handle;
            try { handle = CudaDriver.LoadModule(image); }
            catch (InvalidOperationException) when (fromDisk)
            {
                Images.Remove((file, arch));                          // a stale or damaged cache entry: compile afresh
                (image, target, _) = Image(file, arch, skipDisk: true);
                handle = CudaDriver.LoadModule(image);
            }
            return Modules[(file, ordinal)] = new LoadedModule(file, ordinal, target, handle);
        }
    }

    static (byte[] Image, string Target, bool FromDisk) Image(string file, int arch, bool skipDisk = false)
    {
        if (Images.TryGetValue((file, arch), out var hit)) return (hit.Image, hit.Target, false);
        var source = CompiledSource(file);                              // the full text compiled, so the hash covers the prelude
        var dir = CacheDirectory();
        string key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(
            $"{source}\n{arch}\n{Nvrtc.Version.Major}.{Nvrtc.Version.Minor}\n{Nvrtc.LoadedFrom}"))).ToLowerInvariant()[..16];
        string? cached = dir == null ? null : Path.Combine(dir, $"{Path.GetFileNameWithoutExtension(file)}-{arch}-{key}.bin");
        if (!skipDisk && cached != null && File.Exists(cached))
        {
            try
            {
                var bytes = File.ReadAllBytes(cached);
                var target = File.ReadAllText(cached + ".target").Trim();
                Images[(file, arch)] = (bytes, target);
                return (bytes, target, true);
            }
            catch (IOException) { }                                   // unreadable: compile instead
        }
        var compiled = Nvrtc.Compile(source, file, arch);
        Images[(file, arch)] = compiled;
        if (cached != null)
        {
            try
            {
                Directory.CreateDirectory(dir!);
                AtomicFile.WriteAllText(cached + ".target", compiled.Target);
                AtomicFile.WriteAllBytes(cached, compiled.Image);     // written last: its presence means both are complete
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }   // a cache is optional
        }
        return (compiled.Image, compiled.Target, false);
    }

    /// <summary>The on-disk cache folder, or null when disabled.</summary>
    public static string? CacheDirectory(Func<string, string?>? getEnv = null)
    {
        getEnv ??= Environment.GetEnvironmentVariable;
        var explicitDir = getEnv(CacheDirEnv);
        if (string.Equals(explicitDir, "off", StringComparison.OrdinalIgnoreCase)) return null;
        if (!string.IsNullOrWhiteSpace(explicitDir)) return explicitDir;
        var xdg = getEnv("XDG_CACHE_HOME");
        var root = !string.IsNullOrWhiteSpace(xdg) ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return string.IsNullOrWhiteSpace(root) ? null : Path.Combine(root, "quanta", "kernels");
    }
}

/// <summary>A compiled kernel module loaded into one device's primary context, with its kernels looked up once.</summary>
internal sealed class LoadedModule(string file, int device, string target, IntPtr handle)
{
    readonly Dictionary<string, IntPtr> _functions = [];

    /// <summary>The source file it was compiled from.</summary>
    public string File { get; } = file;
    /// <summary>The CUDA device ordinal it is loaded on.</summary>
    public int Device { get; } = device;
    /// <summary>What NVRTC compiled for: <c>sm_90</c> (CUBIN) or <c>compute_90</c> (PTX the driver finished).</summary>
    public string Target { get; } = target;

    /// <summary>The kernel <paramref name="name"/> (an extern "C" <c>__global__</c> function of the source).</summary>
    public IntPtr Function(string name)
    {
        lock (_functions)
        {
            if (!_functions.TryGetValue(name, out var f)) _functions[name] = f = CudaDriver.GetFunction(handle, name);
            return f;
        }
    }
}
