using System.Text.RegularExpressions;
using QuanTA.Core.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Kernels;

/// <summary>The kernel layer's decision point, embedded sources and library search, without a GPU.</summary>
public class KernelLayerTests
{
    sealed class Probe
    {
        public int Binds;
        public readonly List<string> Log = [];
        public Dictionary<string, string?> Env = new() { [KernelAvailability.EnvironmentVariable] = "on" };
        public string? BindFailure;
        public KernelGate Gate() => new(n => Env.GetValueOrDefault(n), () => { Binds++; return BindFailure; }, Log.Add);
    }

    [Fact]
    public void CpuNeverBindsNorLogs()
    {
        var p = new Probe();
        var gate = p.Gate();
        for (int i = 0; i < 3; i++) Assert.False(gate.EnabledFor(DeviceType.CPU));
        Assert.Equal(0, p.Binds);
        Assert.Empty(p.Log);
        Assert.Null(gate.Reason);
    }

    [Fact]
    public void TheDecisionIsMadeAndLoggedOnce()
    {
        var p = new Probe();
        var gate = p.Gate();
        var answers = Enumerable.Range(0, 5).Select(_ => gate.EnabledFor(DeviceType.CUDA)).ToList();
        Assert.All(answers, Assert.True);
        Assert.Equal(1, p.Binds);
        Assert.Single(p.Log);
        Assert.Contains("kernels on", p.Log[0]);
        Assert.Contains(KernelAvailability.EnvironmentVariable, p.Log[0]);                // says how to switch them off
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("auto")]
    [InlineData("ON")]
    public void KernelsAreOnByDefaultOnCuda(string? value)
    {
        var p = new Probe { Env = { [KernelAvailability.EnvironmentVariable] = value } };
        var gate = p.Gate();
        Assert.True(gate.EnabledFor(DeviceType.CUDA));
        Assert.Equal(1, p.Binds);
        Assert.Contains($"{KernelAvailability.EnvironmentVariable}=off", Assert.Single(p.Log));   // says how to switch them off
    }

    [Fact]
    public void AnUnknownSwitchValueKeepsLibTorchAndNamesTheValues()
    {
        var p = new Probe { Env = { [KernelAvailability.EnvironmentVariable] = "maybe" } };
        var gate = p.Gate();
        Assert.False(gate.EnabledFor(DeviceType.CUDA));
        Assert.Equal(0, p.Binds);
        var line = Assert.Single(p.Log);
        Assert.Contains("QUANTA_KERNELS=maybe", line);
        Assert.Contains("on, off, auto", line);
    }

    [Fact]
    public void ABindFailureFallsBackOnceWithItsReason()
    {
        var p = new Probe { BindFailure = "NVRTC (libnvrtc) was not found" };
        var gate = p.Gate();
        Assert.False(gate.EnabledFor(DeviceType.CUDA));
        Assert.False(gate.EnabledFor(DeviceType.CUDA));
        Assert.Equal(1, p.Binds);
        Assert.Single(p.Log);
        Assert.Contains("libnvrtc", p.Log[0]);
        Assert.Contains("libtorch", p.Log[0]);
    }

    [Theory]
    [InlineData("off")]
    [InlineData("OFF")]
    [InlineData("0")]
    public void TheSwitchForcesLibTorchWithoutBinding(string value)
    {
        var p = new Probe { Env = { [KernelAvailability.EnvironmentVariable] = value } };
        var gate = p.Gate();
        Assert.False(gate.EnabledFor(DeviceType.CUDA));
        Assert.Equal(0, p.Binds);
        Assert.Contains($"{KernelAvailability.EnvironmentVariable}={value.ToLowerInvariant()}", Assert.Single(p.Log));
    }

    [Fact]
    public void AKernelThatDoesNotCompileIsReportedOnceAndFallsBack()
    {
        var p = new Probe();
        var gate = p.Gate();
        int loads = 0;
        LoadedModule Fail(string f, int d) { loads++; throw new InvalidOperationException("NVRTC could not compile rmsnorm.cu for sm_90: error: boom"); }
        Assert.Null(gate.Module("rmsnorm.cu", 0, Fail));
        Assert.Null(gate.Module("rmsnorm.cu", 0, Fail));
        Assert.Equal(1, loads);
        Assert.Contains("boom", Assert.Single(p.Log));

        var ok = new LoadedModule("rmsnorm.cu", 1, "sm_90", IntPtr.Zero);
        Assert.Same(ok, gate.Module("rmsnorm.cu", 1, (_, _) => ok));               // another device is decided separately
        Assert.Same(ok, gate.Module("rmsnorm.cu", 1, (_, _) => throw new InvalidOperationException("loaded twice")));
    }

    [Fact]
    public void TheRMSNormSourceIsEmbeddedWithEveryEntryPoint()
    {
        Assert.Contains(RMSNormKernel.SourceFile, KernelModules.SourceNames);
        var source = KernelModules.Source(RMSNormKernel.SourceFile);
        foreach (var t in new[] { "f32", "bf16", "f16" })
            foreach (var w in new[] { "f32", "bf16", "f16" })
                Assert.Contains($"QUANTA_RMSNORM({t}, {w},", source);                 // makes rmsnorm_fwd_{t}_{w} and rmsnorm_bwd_{t}_{w}
        Assert.Contains("extern \"C\" __global__ void rmsnorm_fwd_##TN##_##WN", source);
        Assert.DoesNotContain("#include", source);                                     // NVRTC gets no include paths
        var e = Assert.Throws<FileNotFoundException>(() => KernelModules.Source("missing.cu"));
        Assert.Contains("Kernels/Sources/missing.cu", e.Message);
    }

    [Fact]
    public void ASelfCheckRunsOncePerModuleAndADisagreementIsReportedOnce()
    {
        var log = new List<string>();
        int runs = 0;
        var good = new LoadedModule("good.cu", 0, "sm_90", IntPtr.Zero);
        var bad = new LoadedModule("bad.cu", 0, "sm_90", IntPtr.Zero);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(KernelSelfCheck.Passed(good, () => { runs++; return null; }, log.Add));
            Assert.False(KernelSelfCheck.Passed(bad, () => { runs++; return "bf16 self-check relative error 3.1E-01"; }, log.Add));
        }
        Assert.Equal(2, runs);                                                              // each module checked once
        var line = Assert.Single(log);
        Assert.Contains("bad.cu", line);
        Assert.Contains("3.1E-01", line);
        Assert.Contains("libtorch's path", line);
    }

    [Fact]
    public void AKernelErrorFailsTheCheckButRunningOutOfMemoryIsNotRemembered()
    {
        var log = new List<string>();
        var broken = new LoadedModule("broken.cu", 1, "sm_90", IntPtr.Zero);
        Assert.False(KernelSelfCheck.Passed(broken, () => throw new InvalidOperationException("cuLaunchKernel(x) failed: invalid argument"), log.Add));
        Assert.False(KernelSelfCheck.Passed(broken, () => null, log.Add));                 // remembered: not run again
        Assert.Contains("invalid argument", Assert.Single(log));

        var busy = new LoadedModule("busy.cu", 1, "sm_90", IntPtr.Zero);
        Assert.False(KernelSelfCheck.Passed(busy, () => throw new InvalidOperationException("CUDA out of memory. Tried to allocate 2.00 MiB"), log.Add));
        Assert.True(KernelSelfCheck.Passed(busy, () => null, log.Add));                    // checked again, and passes
        Assert.Single(log);                                                                 // an OOM is not a disagreement
    }

    [Fact]
    public void TheKernelsShareOneTypeSuffix()
    {
        Assert.Equal("f32", KernelSelfCheck.TypeSuffix(ScalarType.Float32));
        Assert.Equal("bf16", KernelSelfCheck.TypeSuffix(ScalarType.BFloat16));
        Assert.Equal("f16", KernelSelfCheck.TypeSuffix(ScalarType.Float16));
        Assert.Null(KernelSelfCheck.TypeSuffix(ScalarType.Float64));
    }

    [Fact]
    public void TheDequantizeSourceIsEmbeddedWithEveryEntryPoint()
    {
        Assert.Contains(DequantizeKernel.SourceFile, KernelModules.SourceNames);
        var source = KernelModules.Source(DequantizeKernel.SourceFile);
        foreach (var (type, name) in new[] { ("F32", "f32"), ("BF16", "bf16"), ("F16", "f16") })
            Assert.Contains($"DEQUANTIZE_ENTRY_POINTS({type}, {name})", source);       // nf4_dequantize_{name}, int8_dequantize_{name}
        Assert.Contains("extern \"C\" __global__ void nf4_dequantize_##ON", source);
        Assert.Contains("extern \"C\" __global__ void int8_dequantize_##ON", source);
        Assert.DoesNotContain("#include", source);
    }

    // The names a CUDA C text defines at file scope: structs (struct NAME, as a definition) and top-level typedefs.
    static List<string> FileScopeNames(string cuda)
    {
        var code = Regex.Replace(cuda, "//[^\n]*", "");                                 // comments may mention the names
        var structs = Regex.Matches(code, @"\bstruct\s+(?:alignas\([^)]*\)\s+)?(\w+)\s*\{").Select(m => m.Groups[1].Value);
        var typedefs = Regex.Matches(code, @"^typedef\b[^;]*?(\w+)\s*;", RegexOptions.Multiline).Select(m => m.Groups[1].Value);
        return [.. structs, .. typedefs];
    }

    static int Definitions(string cuda, string name)
    {
        var code = Regex.Replace(cuda, "//[^\n]*", "");
        return Regex.Matches(code, $@"\bstruct\s+(?:alignas\([^)]*\)\s+)?{name}\s*\{{").Count
            + Regex.Matches(code, $@"^typedef\b[^;]*?\b{name}\s*;", RegexOptions.Multiline).Count;
    }

    [Fact]
    public void EveryKernelSourceIsCompiledAfterTheOnePreludeAndDefinesNoneOfItsNames()
    {
        var prelude = KernelModules.Source(KernelModules.PreludeFile);
        Assert.DoesNotContain("#include", prelude);                                     // NVRTC gets no include paths
        var names = FileScopeNames(prelude);
        foreach (var moved in new[] { "u16", "F32", "BF16", "F16" }) Assert.Contains(moved, names);
        Assert.DoesNotContain(KernelModules.PreludeFile, KernelModules.SourceNames);  // not a kernel source of its own
        var files = KernelModules.SourceNames.Order(StringComparer.Ordinal).ToList();
        Assert.Equal(new[] { "dequantize.cu", "rmsnorm.cu", "rope.cu", "swiglu.cu" }, files);
        foreach (var file in files)
        {
            var source = KernelModules.Source(file);
            var compiled = KernelModules.CompiledSource(file);
            Assert.StartsWith(prelude, compiled);
            Assert.EndsWith(source, compiled);
            Assert.Contains($"\n#line 1 \"{file}\"\n", compiled);                   // NVRTC's messages keep the file's line numbers
            foreach (var name in names)
            {
                Assert.Equal(0, Definitions(source, name));                           // the file no longer carries its copy
                Assert.Equal(1, Definitions(compiled, name));                         // defined once in what NVRTC compiles
            }
            Assert.DoesNotMatch(@"\bstruct\s+(F32|BF16|F16)\b", source);
        }
        Assert.Throws<FileNotFoundException>(() => KernelModules.CompiledSource("missing.cu"));
    }

    [Fact]
    public void NvrtcIsLookedForNextToLibTorchFirst()
    {
        var c = Nvrtc.Candidates("/opt/py/site-packages/torch/lib");
        Assert.Equal("/opt/py/site-packages/nvidia/cu13/lib/libnvrtc.so.13", c[0]);
        Assert.Contains("/opt/py/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12", c);
        Assert.Equal(["libnvrtc.so.13", "libnvrtc.so.12"], c.TakeLast(2));
        Assert.Equal(["libnvrtc.so.13", "libnvrtc.so.12"], Nvrtc.Candidates(null).TakeLast(2));
    }

    [Fact]
    public void TheDiskCacheFolderFollowsTheEnvironment()
    {
        Assert.Null(KernelModules.CacheDirectory(n => n == KernelModules.CacheDirEnv ? "off" : null));
        Assert.Equal("/tmp/k", KernelModules.CacheDirectory(n => n == KernelModules.CacheDirEnv ? "/tmp/k" : null));
        Assert.Equal(Path.Combine("/x/cache", "quanta", "kernels"), KernelModules.CacheDirectory(n => n == "XDG_CACHE_HOME" ? "/x/cache" : null));
    }
}
