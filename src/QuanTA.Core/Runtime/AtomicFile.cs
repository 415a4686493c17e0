using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace QuanTA.Core.Runtime;

/// <summary>
/// Writes files so that a reader sees either the previous file or the complete new one, never a half-written file:
/// the content goes to a temporary file in the same folder (<c>&lt;name&gt;.&lt;pid&gt;.&lt;guid&gt;.quanta-tmp</c>), is
/// flushed to disk, and is then renamed over the target (an atomic replace on the same file system). On any failure — the
/// writer throws, the disk is full, the rename is refused — the temporary file is deleted and the previous file is left
/// byte for byte as it was. A process killed during a write cannot delete its temporary file: the next write of the same
/// target removes it (<see cref="RemoveStaleTempFiles"/>), knowing from the process id in its name that no one owns it.
/// </summary>
public static class AtomicFile
{
    /// <summary>Extension of the temporary files (listed in .gitignore; safe to delete when no write is running).</summary>
    public const string TempExtension = ".quanta-tmp";

    /// <summary>
    /// Writes <paramref name="path"/> through <paramref name="write"/>, which gets a stream on the temporary file.
    /// The folder is created if missing.
    /// </summary>
    /// <param name="path">The file to create or replace.</param>
    /// <param name="write">Writes the whole content (it may close the stream).</param>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        WriteViaPath(path, tmp =>
        {
            using var s = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None);
            write(s);
        });
    }

    /// <summary>
    /// Writes <paramref name="path"/> through an API that only writes to a path: <paramref name="writeToPath"/> gets
    /// the temporary file's path (in the same folder, not yet existing) and must create that file. The file is then
    /// flushed to disk and renamed over <paramref name="path"/>. The folder is created if missing.
    /// </summary>
    /// <param name="path">The file to create or replace.</param>
    /// <param name="writeToPath">Creates the file at the path it is given.</param>
    public static void WriteViaPath(string path, Action<string> writeToPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(writeToPath);
        var target = Path.GetFullPath(path);
        if (Directory.Exists(target))
            throw new IOException($"Cannot write '{target}': a folder of that name exists. Give a file path instead.");
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        RemoveStaleTempFiles(target);
        var tmp = TempPathFor(target);
        try
        {
            writeToPath(tmp);
            if (!File.Exists(tmp))
                throw new IOException($"Writing '{target}' produced no file (the writer did not create '{tmp}').");
            using (var s = new FileStream(tmp, FileMode.Open, FileAccess.Write, FileShare.None))
                s.Flush(flushToDisk: true);
            CrashTestPoints.Reached("atomic-write:" + Path.GetFileName(target));   // crash tests: die before the rename
            File.Move(tmp, target, overwrite: true);
            DirectorySync.Flush(Path.GetDirectoryName(target)!);                  // the new name is on disk too
        }
        finally
        {
            try { if (File.Exists(tmp)) File.Delete(tmp); }
            catch (IOException) { }                              // best effort: the original error matters more
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8 (no byte-order mark) to <paramref name="path"/>, atomically.</summary>
    public static void WriteAllText(string path, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        WriteAllBytes(path, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text));
    }

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/>, atomically.</summary>
    public static void WriteAllBytes(string path, byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        Write(path, s => s.Write(bytes));
    }

    /// <summary>
    /// Checks that a file can be written at <paramref name="path"/> before any long work: the folder must exist and accept a
    /// new file (a probe temporary file is created and deleted), and <paramref name="path"/> must not be a folder.
    /// </summary>
    /// <param name="path">The file that will be written later.</param>
    /// <param name="what">How the caller names the path in messages, e.g. <c>--output</c> or <c>Options.OutputPath</c>.</param>
    /// <exception cref="IOException">The file cannot be written; the message names <paramref name="what"/> and the reason.</exception>
    public static void EnsureWritable(string path, string what)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path, what);
        var target = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(target)!;
        if (Directory.Exists(target))
            throw new IOException($"{what} '{path}' is a folder; give the path of the file to write (e.g. {Path.Combine(path, "model.zip")}).");
        if (File.Exists(folder))
            throw new IOException($"{what} '{path}' is not writable: '{folder}' is a file, not a folder. Choose another {what}.");
        if (!Directory.Exists(folder))
            throw new IOException($"{what} '{path}': the folder '{folder}' does not exist. Create it or choose another {what}.");
        var probe = TempPathFor(target);
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{what} '{path}' is not writable: cannot create a file in '{folder}' ({e.Message}). " +
                $"Choose another {what} or fix the folder's permissions.", e);
        }
        finally
        {
            try { if (File.Exists(probe)) File.Delete(probe); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>A unique temporary path next to <paramref name="target"/>: <c>&lt;name&gt;.&lt;pid&gt;.&lt;guid&gt;.quanta-tmp</c>,
    /// with the id of this process (so that a later write can tell a stale temporary file from one being written).</summary>
    public static string TempPathFor(string target)
        => $"{Path.GetFullPath(target)}.{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}.{Guid.NewGuid():N}{TempExtension}";

    /// <summary>
    /// Deletes the temporary files of <paramref name="target"/> (named by <see cref="TempPathFor"/>) whose writing process no
    /// longer runs — left by a process killed during a write, before its rename. A file is kept when its process is alive (this
    /// process included: another thread may be writing it) or its name carries no process id (older naming); a process id reused
    /// by a process started after the file was last written does not count as its owner. Called by every write; best effort
    /// (a file that cannot be deleted is left). Process ids are those of this machine and process namespace: do not share one
    /// output folder between writers on different machines or containers at the same time.
    /// </summary>
    /// <param name="target">The file whose stale temporary files to remove.</param>
    /// <returns>The number of files deleted.</returns>
    public static int RemoveStaleTempFiles(string target)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(target);
        var full = Path.GetFullPath(target);
        var folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder)) return 0;
        var prefix = Path.GetFileName(full) + ".";
        int removed = 0;
        foreach (var tmp in Directory.EnumerateFiles(folder, "*" + TempExtension))
        {
            var name = Path.GetFileName(tmp);
            if (!name.StartsWith(prefix, StringComparison.Ordinal) || name.Length <= prefix.Length + TempExtension.Length) continue;
            var parts = name[prefix.Length..^TempExtension.Length].Split('.');   // "<pid>.<guid>" (a longer target name has more parts)
            if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                || !Guid.TryParseExact(parts[1], "N", out _) || OwnerIsAlive(pid, tmp)) continue;
            try { File.Delete(tmp); removed++; }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return removed;
    }

    static bool OwnerIsAlive(int pid, string tempFile)
    {
        if (pid == Environment.ProcessId) return true;
        Process process;
        try { process = Process.GetProcessById(pid); }
        catch (ArgumentException) { return false; }                       // no process has this id
        using (process)
        {
            try
            {
                if (process.HasExited) return false;
                // the owner started before it wrote the file (1 s of slack for the start time's resolution)
                return process.StartTime.ToUniversalTime() <= File.GetLastWriteTimeUtc(tempFile).AddSeconds(1);
            }
            catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or NotSupportedException)
            {
                return true;                                                  // cannot tell: keep the file
            }
        }
    }
}
