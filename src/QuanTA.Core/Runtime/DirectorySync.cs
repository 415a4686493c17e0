using System.Runtime.InteropServices;

namespace QuanTA.Core.Runtime;

/// <summary>
/// Makes a folder's entries durable: after files are created or renamed in a folder, <c>fsync</c> of the folder itself
/// writes the new names to disk (POSIX; on a power loss without it a renamed file or folder can vanish although its data
/// was flushed). Linux and macOS; a no-op on Windows, where the rename is journaled with the file system's metadata.
/// </summary>
public static class DirectorySync
{
    /// <summary>Flushes the entries of <paramref name="folder"/> to disk; best effort (a file system that does not support
    /// it, or a folder that cannot be opened, is skipped: the data itself was already flushed by the writer).</summary>
    /// <returns>true when the folder was flushed.</returns>
    public static bool Flush(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (OperatingSystem.IsWindows()) return false;
        int fd = open(Path.GetFullPath(folder), 0 /* O_RDONLY: enough to fsync a folder */);
        if (fd < 0) return false;
        try { return fsync(fd) == 0; }
        finally { close(fd); }
    }

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    static extern int fsync(int fd);

    [DllImport("libc", EntryPoint = "close")]
    static extern int close(int fd);
}
