using CsCheck;
using QuanTA.Tests.Robustness;

namespace QuanTA.Core.Tests.Robustness;

/// <summary>A temporary copy of a fixture folder in which one file at a time is replaced by a damaged copy.</summary>
internal sealed class FaultFolder : IDisposable
{
    readonly Dictionary<string, byte[]> _originals = new(StringComparer.Ordinal);

    /// <summary>Copies <paramref name="files"/> (or every file) of <paramref name="source"/> into a new temporary folder.</summary>
    public FaultFolder(string source, params string[] files)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "quanta-fault-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(Path);
        var names = files.Length > 0 ? files : Directory.GetFiles(source).Select(System.IO.Path.GetFileName).ToArray()!;
        foreach (var name in names)
        {
            var bytes = File.ReadAllBytes(System.IO.Path.Combine(source, name!));
            _originals[name!] = bytes;
            File.WriteAllBytes(System.IO.Path.Combine(Path, name!), bytes);
        }
    }

    /// <summary>The folder.</summary>
    public string Path { get; }

    /// <summary>Restores every file, then writes <paramref name="fault"/> applied to <paramref name="file"/>; returns the damaged size.</summary>
    public long Damage(string file, Fault fault)
    {
        foreach (var (name, bytes) in _originals) File.WriteAllBytes(System.IO.Path.Combine(Path, name), bytes);
        var damaged = fault.Apply(_originals[file]);
        File.WriteAllBytes(System.IO.Path.Combine(Path, file), damaged);
        return damaged.Length;
    }

    /// <summary>A generator of (file, fault) over <paramref name="files"/>, JSON-aware for .json files.</summary>
    public static Gen<(string File, Fault Fault)> Faults(params string[] files) =>
        Gen.Int[0, files.Length - 1].SelectMany(i =>
        {
            var file = files[i];
            var gen = file.EndsWith(".json", StringComparison.Ordinal) || file.EndsWith(".jsonl", StringComparison.Ordinal)
                ? FaultGen.ForJson : FaultGen.ForBytes;
            return gen.Select(f => (file, f));
        });

    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { }
    }
}
