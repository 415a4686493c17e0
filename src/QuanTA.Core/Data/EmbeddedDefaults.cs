namespace QuanTA.Core.Data;

/// <summary>
/// Finds the embedded default assets that ship in the repository: the WordNet 3.0 data
/// (<c>samples/Data/wordnet</c>) and the tiny base model pre-trained on it (<c>samples/Models/wordnet-llama-tiny</c>).
/// Applications get them next to their binaries with two Content items, e.g.
/// <code>
/// &lt;Content Include="$(RepoRoot)samples/Data/wordnet/**" LinkBase="Data/wordnet" CopyToOutputDirectory="PreserveNewest" /&gt;
/// &lt;Content Include="$(RepoRoot)samples/Models/wordnet-llama-tiny/**" LinkBase="Models/wordnet-llama-tiny" CopyToOutputDirectory="PreserveNewest" /&gt;
/// </code>
/// </summary>
public static class EmbeddedDefaults
{
    /// <summary>Environment variable that overrides where the WordNet files are looked for.</summary>
    public const string WordNetDirEnv = "QUANTA_WORDNET_DIR";

    /// <summary>Environment variable that overrides where the tiny base model is looked for.</summary>
    public const string BaseModelDirEnv = "QUANTA_BASE_MODEL_DIR";

    /// <summary>Folder of the WordNet files relative to the application folder (where the Content item copies them).</summary>
    public const string WordNetRelativeToApp = "Data/wordnet";

    /// <summary>Folder of the WordNet files relative to the repository root.</summary>
    public const string WordNetRelativeToRepo = "samples/Data/wordnet";

    /// <summary>Folder of the tiny base model relative to the application folder.</summary>
    public const string BaseModelRelativeToApp = "Models/wordnet-llama-tiny";

    /// <summary>Folder of the tiny base model relative to the repository root.</summary>
    public const string BaseModelRelativeToRepo = "samples/Models/wordnet-llama-tiny";

    /// <summary>
    /// The folder holding <c>synsets.tsv.gz</c>: <paramref name="directory"/> when given, else <see cref="WordNetDirEnv"/>,
    /// else <c>Data/wordnet</c> next to the application, else <c>samples/Data/wordnet</c> in a parent folder of the
    /// application or of the current directory (a repository checkout).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">no candidate holds the files; the message lists where it looked.</exception>
    public static string WordNetDirectory(string? directory = null)
        => Find(directory, WordNetDirEnv, WordNetRelativeToApp, WordNetRelativeToRepo, WordNetData.SynsetsFile, "WordNet data");

    /// <summary>
    /// The folder of the tiny base model (<c>config.json</c>, <c>model.safetensors</c>, tokenizer files), searched like
    /// <see cref="WordNetDirectory"/> with <see cref="BaseModelDirEnv"/>, <c>Models/wordnet-llama-tiny</c> and
    /// <c>samples/Models/wordnet-llama-tiny</c>.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">no candidate holds the model; the message lists where it looked.</exception>
    public static string BaseModelDirectory(string? directory = null)
        => Find(directory, BaseModelDirEnv, BaseModelRelativeToApp, BaseModelRelativeToRepo, "tokenizer.json", "tiny base model");

    static string Find(string? directory, string env, string relativeToApp, string relativeToRepo, string marker, string what)
    {
        var tried = new List<string>();
        bool Has(string dir)
        {
            tried.Add(dir);
            return File.Exists(Path.Combine(dir, marker));
        }

        if (!string.IsNullOrWhiteSpace(directory))
        {
            var full = Path.GetFullPath(directory);
            if (Has(full)) return full;
            throw new DirectoryNotFoundException($"The {what} folder '{full}' does not contain {marker}.");
        }
        var fromEnv = Environment.GetEnvironmentVariable(env);
        if (!string.IsNullOrWhiteSpace(fromEnv))
        {
            var full = Path.GetFullPath(fromEnv);
            if (Has(full)) return full;
            throw new DirectoryNotFoundException($"{env}='{fromEnv}' does not contain {marker}.");
        }
        var app = Path.Combine(AppContext.BaseDirectory, relativeToApp);
        if (Has(app)) return Path.GetFullPath(app);
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, relativeToRepo);
                if (Has(candidate)) return candidate;
            }
        }
        throw new DirectoryNotFoundException(
            $"Could not find the {what} ({marker}). Looked in: {string.Join(", ", tried.Distinct().Take(6))}, ... " +
            $"Copy {relativeToRepo} next to the application as {relativeToApp} (a Content item), or set {env}.");
    }
}
