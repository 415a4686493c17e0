using QuanTA.Core.Runtime;

namespace QuanTA.Core.Export;

/// <summary>
/// Writes an export folder atomically: everything is built in a temporary sibling folder
/// (<c>&lt;name&gt;.&lt;guid&gt;.quanta-tmp</c>, on the same file system) and renamed into place once complete, so a reader
/// sees no folder, the previous one, or the complete new one — never a half-written export. A failed export deletes the
/// temporary folder and leaves the previous folder as it was. A non-empty folder is replaced only when asked to.
/// </summary>
public static class ExportFolder
{
    /// <summary>
    /// Builds <paramref name="output"/> through <paramref name="build"/>, which fills the (empty) temporary folder it is given.
    /// </summary>
    /// <param name="output">The folder to create or replace.</param>
    /// <param name="overwrite">Replace a non-empty folder; when false such a folder is refused before anything is written.</param>
    /// <param name="overwriteFlag">How the caller names the overwrite switch in the refusal (e.g. "--overwrite").</param>
    /// <param name="build">Writes the folder's files.</param>
    public static void Write(string output, bool overwrite, string overwriteFlag, Action<string> build)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(output);
        ArgumentNullException.ThrowIfNull(build);
        var target = Path.GetFullPath(output.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
        CheckTarget(target, overwrite, overwriteFlag);
        var parent = Path.GetDirectoryName(target) ?? throw new IOException($"The output folder '{target}' has no parent folder.");
        Directory.CreateDirectory(parent);
        var tmp = $"{target}.{Guid.NewGuid():N}{AtomicFile.TempExtension}";
        string? old = null;
        try
        {
            Directory.CreateDirectory(tmp);
            build(tmp);
            if (Directory.Exists(target))
            {
                CheckTarget(target, overwrite, overwriteFlag);       // (something may have appeared there while building)
                old = $"{target}.{Guid.NewGuid():N}.old{AtomicFile.TempExtension}";
                Directory.Move(target, old);                         // the previous export stays whole until the new one is in place
            }
            try { Directory.Move(tmp, target); }
            catch
            {
                if (old is not null) { Directory.Move(old, target); old = null; }   // put the previous folder back
                throw;
            }
        }
        finally
        {
            TryDelete(tmp);
            if (old is not null) TryDelete(old);
        }
    }

    static void CheckTarget(string target, bool overwrite, string overwriteFlag)
    {
        if (File.Exists(target))
            throw new IOException($"The output '{target}' is a file; give a folder path (a new folder, or an existing one with {overwriteFlag}).");
        if (!overwrite && Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"The output folder '{target}' is not empty; pass {overwriteFlag} to replace it, or give a new folder.");
    }

    static void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { }                                      // best effort: the original error matters more
        catch (UnauthorizedAccessException) { }
    }
}
