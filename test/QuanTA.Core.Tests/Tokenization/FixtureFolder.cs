using System.Text.Json;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.PyBridge;

namespace QuanTA.Core.Tests.Tokenization;

/// <summary>Reads a fixture folder's reference.json / reference.safetensors (made by HF transformers, see make_fixtures.py).</summary>
internal static class FixtureFolder
{
    public static string Dir(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    public static string[] Prompts(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir(name), "reference.json")));
        return doc.RootElement.GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();
    }

    public static string? JsonString(string name, string key)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir(name), "reference.json")));
        return doc.RootElement.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
    }

    /// <summary>An int64 tensor of reference.safetensors as rows of longs.</summary>
    public static long[][]? Int64Rows(string name, string key)
    {
        TorchRuntime.Initialize();
        var dict = Safetensors.LoadStateDict(Path.Combine(Dir(name), "reference.safetensors"));
        try
        {
            if (!dict.TryGetValue(key, out var t)) return null;
            var shape = t.shape;
            var flat = t.data<long>().ToArray();
            return Enumerable.Range(0, (int)shape[0])
                .Select(r => flat.Skip(r * (int)shape[1]).Take((int)shape[1]).ToArray()).ToArray();
        }
        finally
        {
            foreach (var t in dict.Values) t.Dispose();
        }
    }

    /// <summary>A fresh temp folder with the named files of a fixture copied in (deleted on dispose).</summary>
    public sealed class TempCopy : IDisposable
    {
        public string Path { get; }

        public TempCopy(string fixture, params string[] files)
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "quanta-tok-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(Path);
            foreach (var f in files) File.Copy(System.IO.Path.Combine(Dir(fixture), f), System.IO.Path.Combine(Path, f));
        }

        public void Write(string file, string text) => File.WriteAllText(System.IO.Path.Combine(Path, file), text);

        public void Dispose()
        {
            try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
        }
    }
}
