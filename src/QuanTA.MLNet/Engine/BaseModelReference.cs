using System.Security.Cryptography;
using System.Text;

namespace QuanTA.MLNet.Engine;

/// <summary>
/// Where the base model lives and a fingerprint of its files, saved with a fine-tuned model instead of the base weights.
/// The fingerprint is SHA-256 over each relevant file's name, length and content (for files over 64 MiB: their first and
/// last 16 MiB, so checking a multi-GB checkpoint stays fast while any re-export or different model is still caught).
/// </summary>
internal sealed record BaseModelReference(string Path, string Fingerprint)
{
    const long FullHashLimit = 64L << 20, Edge = 16L << 20;

    static readonly string[] Patterns = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
        "*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json"];

    /// <summary>Fingerprints <paramref name="folder"/>; throws naming the folder when it does not exist.</summary>
    public static BaseModelReference Of(string folder)
    {
        var full = System.IO.Path.GetFullPath(folder);
        if (!Directory.Exists(full))
            throw new DirectoryNotFoundException($"Base model folder '{full}' not found.");
        return new BaseModelReference(full, Compute(full));
    }

    /// <summary>The fingerprint of the model files in <paramref name="folder"/>.</summary>
    public static string Compute(string folder)
    {
        var files = Patterns.SelectMany(p => Directory.EnumerateFiles(folder, p)).Distinct()
            .OrderBy(f => System.IO.Path.GetFileName(f), StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new FileNotFoundException($"No model files (config.json, *.safetensors) in base model folder '{folder}'.");
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (var f in files)
        {
            using var s = File.OpenRead(f);
            sha.AppendData(Encoding.UTF8.GetBytes($"{System.IO.Path.GetFileName(f)}\n{s.Length}\n"));
            if (s.Length <= FullHashLimit) Append(s, s.Length);
            else
            {
                Append(s, Edge);
                s.Seek(-Edge, SeekOrigin.End);
                Append(s, Edge);
            }
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();

        void Append(Stream s, long count)
        {
            while (count > 0)
            {
                int n = s.Read(buffer, 0, (int)Math.Min(buffer.Length, count));
                if (n <= 0) break;
                sha.AppendData(buffer, 0, n);
                count -= n;
            }
        }
    }
}
