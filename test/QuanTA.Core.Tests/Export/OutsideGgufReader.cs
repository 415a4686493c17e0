using System.Diagnostics;
using System.Text.Json.Nodes;

namespace QuanTA.Core.Tests.Export;

/// <summary>
/// Runs <c>test/gguf-reader/read-gguf.mjs</c>: Hugging Face's <c>@huggingface/gguf</c> (an npm package we did not write)
/// parses a GGUF file and prints metadata (with value types) and tensor infos as JSON. Installs the package from the npm
/// registry into <c>test/gguf-reader/node_modules</c> on first use when <c>scripts/test.sh</c> has not already done so.
/// node and npm must be on PATH; without them the tests fail with a message saying so (they are not skipped).
/// </summary>
internal static class OutsideGgufReader
{
    static readonly object InstallLock = new();
    static bool _installed;

    /// <summary>The repository's <c>test/gguf-reader</c> folder, found upward from the test binaries.</summary>
    public static string ReaderDir
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "test", "gguf-reader");
                if (File.Exists(Path.Combine(candidate, "read-gguf.mjs"))) return candidate;
            }
            throw new DirectoryNotFoundException($"test/gguf-reader/read-gguf.mjs not found above {AppContext.BaseDirectory}.");
        }
    }

    /// <summary>Parses <paramref name="ggufPath"/> with the outside reader.</summary>
    public static JsonObject Read(string ggufPath)
    {
        EnsureInstalled();
        var (code, stdout, stderr) = Run("node", ReaderDir, "read-gguf.mjs", ggufPath);
        Assert.True(code == 0, $"@huggingface/gguf could not read '{ggufPath}' (exit {code}): {stderr}");
        return (JsonObject)JsonNode.Parse(stdout)!;
    }

    static void EnsureInstalled()
    {
        lock (InstallLock)
        {
            if (_installed) return;
            var dir = ReaderDir;
            if (!File.Exists(Path.Combine(dir, "node_modules", "@huggingface", "gguf", "package.json")))
            {
                var (code, _, stderr) = Run("npm", dir, "install", "--no-audit", "--no-fund", "--no-package-lock", "--silent");
                Assert.True(code == 0, $"'npm install' in {dir} failed (exit {code}); the GGUF tests need the npm registry once: {stderr}");
            }
            _installed = true;
        }
    }

    static (int Code, string Stdout, string Stderr) Run(string exe, string workDir, params string[] args)
    {
        var psi = new ProcessStartInfo(exe) { WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"'{exe}' is not on PATH ({e.Message}). The GGUF export tests need node and npm (node 18 or later).", e);
        }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(120_000)) { p.Kill(entireProcessTree: true); throw new TimeoutException($"'{exe} {string.Join(' ', args)}' ran over 120 s."); }
            return (p.ExitCode, stdout.Result, stderr.Result);
        }
    }
}
