using QuanTA.Core.Runtime;

namespace QuanTA.Core.Tests;

/// <summary><see cref="AtomicFile"/>: a failed write leaves the previous file byte for byte and no temporary file.</summary>
public sealed class AtomicFileTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("quanta-atomic");
    static readonly byte[] Previous = [.. Enumerable.Range(0, 4096).Select(i => (byte)(i * 7))];

    public void Dispose() => _dir.Delete(recursive: true);

    string PreviousFile(string name = "model.zip")
    {
        var path = Path.Combine(_dir.FullName, name);
        File.WriteAllBytes(path, Previous);
        return path;
    }

    string[] TempFiles() => Directory.GetFiles(_dir.FullName, "*" + AtomicFile.TempExtension, SearchOption.AllDirectories);

    [Fact]
    public void ReplacesTheFileAndLeavesNoTemporaryFile()
    {
        var path = PreviousFile();
        AtomicFile.Write(path, s => s.Write([1, 2, 3]));
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(path));
        AtomicFile.WriteAllText(Path.Combine(_dir.FullName, "sub", "new.json"), "{}");   // creates the folder
        Assert.Equal("{}", File.ReadAllText(Path.Combine(_dir.FullName, "sub", "new.json")));
        Assert.Empty(TempFiles());
    }

    [Fact]
    public void AWriterThatThrowsMidwayLeavesThePreviousFileIntact()
    {
        var path = PreviousFile();
        var e = Assert.Throws<IOException>(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[100_000]);                              // a half-written zip …
            s.Flush();
            throw new IOException("No space left on device");        // … then the disk is full
        }));
        Assert.Contains("No space left", e.Message);
        Assert.Equal(Previous, File.ReadAllBytes(path));
        Assert.Empty(TempFiles());
        Assert.Single(Directory.GetFiles(_dir.FullName));
    }

    [Fact]
    public void APathWriterThatThrowsAfterCreatingItsFileLeavesThePreviousFileIntact()
    {
        var path = PreviousFile("adapter.safetensors");
        string? tempSeen = null;
        Assert.Throws<InvalidOperationException>(() => AtomicFile.WriteViaPath(path, tmp =>
        {
            tempSeen = tmp;
            File.WriteAllBytes(tmp, [9, 9, 9]);
            throw new InvalidOperationException("writer failed");
        }));
        Assert.Equal(_dir.FullName, Path.GetDirectoryName(tempSeen));    // same folder: the rename cannot cross file systems
        Assert.EndsWith(AtomicFile.TempExtension, tempSeen);
        Assert.Equal(Previous, File.ReadAllBytes(path));
        Assert.Empty(TempFiles());
    }

    [Fact]
    public void APathWriterThatCreatesNoFileIsAnErrorAndChangesNothing()
    {
        var path = PreviousFile();
        var e = Assert.Throws<IOException>(() => AtomicFile.WriteViaPath(path, _ => { }));
        Assert.Contains(path, e.Message);
        Assert.Equal(Previous, File.ReadAllBytes(path));
    }

    [Fact]
    public void ATargetThatIsAFolderIsRefusedAndNothingIsLeftBehind()
    {
        var folder = Directory.CreateDirectory(Path.Combine(_dir.FullName, "model.zip")).FullName;
        File.WriteAllBytes(Path.Combine(folder, "inside.bin"), Previous);
        var e = Assert.Throws<IOException>(() => AtomicFile.WriteAllBytes(folder, [1]));
        Assert.Contains("folder", e.Message);
        Assert.Equal(Previous, File.ReadAllBytes(Path.Combine(folder, "inside.bin")));
        Assert.Empty(TempFiles());
    }

    [Fact]
    public void ARenameThatFailsLeavesNoTemporaryFile()
    {
        // While the writer runs, a folder appears at the target: the content is written and flushed, the rename is refused.
        var path = Path.Combine(_dir.FullName, "model.zip");
        Assert.ThrowsAny<IOException>(() => AtomicFile.WriteViaPath(path, tmp =>
        {
            File.WriteAllBytes(tmp, [1, 2]);
            Directory.CreateDirectory(path);
            File.WriteAllBytes(Path.Combine(path, "inside.bin"), Previous);
        }));
        Assert.Equal(Previous, File.ReadAllBytes(Path.Combine(path, "inside.bin")));
        Assert.Empty(TempFiles());
    }

    [Fact]
    public void EnsureWritableNamesTheFlagAndWhatIsWrong()
    {
        var file = PreviousFile("a-file");
        var underAFile = Assert.Throws<IOException>(() => AtomicFile.EnsureWritable(Path.Combine(file, "model.zip"), "--output"));
        Assert.Contains("--output", underAFile.Message);
        var missing = Assert.Throws<IOException>(() => AtomicFile.EnsureWritable(Path.Combine(_dir.FullName, "no", "such", "model.zip"), "--output"));
        Assert.Contains("--output", missing.Message);
        Assert.Contains("does not exist", missing.Message);
        var folder = Assert.Throws<IOException>(() => AtomicFile.EnsureWritable(_dir.FullName, "--output"));
        Assert.Contains("is a folder", folder.Message);

        AtomicFile.EnsureWritable(Path.Combine(_dir.FullName, "model.zip"), "--output");            // fine: no probe left behind
        Assert.Empty(TempFiles());
        Assert.False(File.Exists(Path.Combine(_dir.FullName, "model.zip")));
    }

    // ---- stale temporary files: a process killed during a write never renames nor deletes its temporary file ----

    string TempOf(string target, int pid) => $"{target}.{pid}.{Guid.NewGuid():N}{AtomicFile.TempExtension}";

    static System.Diagnostics.Process Start(string file, string args) =>
        System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(file, args) { UseShellExecute = false })!;

    /// <summary>The id of a process that has exited and been reaped (no process has it now).</summary>
    static int DeadPid()
    {
        using var p = Start("/bin/true", "");
        p.WaitForExit();
        return p.Id;
    }

    [Fact]
    public void TheTemporaryFileNameCarriesTheWritingProcessId()
    {
        var tmp = Path.GetFileName(AtomicFile.TempPathFor(Path.Combine(_dir.FullName, "model.zip")));
        Assert.Matches($@"^model\.zip\.{Environment.ProcessId}\.[0-9a-f]{{32}}\{AtomicFile.TempExtension}$", tmp);
    }

    [Fact]
    public void AWriteRemovesTheStaleTemporaryFilesOfItsTargetAndNoOthers()
    {
        var path = PreviousFile();
        using var live = Start("sleep", "60");                                          // a live process that is not this one
        try
        {
            var stale = TempOf(path, DeadPid());                                         // killed before its rename
            var ours = TempOf(path, Environment.ProcessId);                              // another thread of this process is writing it
            var liveOwner = TempOf(path, live.Id);                                       // another live process is writing it
            var reusedPid = TempOf(path, live.Id);                                       // written long before that process started: its
            var otherTarget = TempOf(Path.Combine(_dir.FullName, "model.zip.bak"), DeadPid());   // … owner is dead; another target's
            var oldNaming = $"{path}.{Guid.NewGuid():N}{AtomicFile.TempExtension}";      // no process id: cannot tell, kept
            foreach (var f in new[] { stale, ours, liveOwner, reusedPid, otherTarget, oldNaming }) File.WriteAllBytes(f, [1]);
            File.SetLastWriteTimeUtc(reusedPid, DateTime.UtcNow.AddHours(-1));

            AtomicFile.WriteAllBytes(path, [4, 5]);

            Assert.Equal(new byte[] { 4, 5 }, File.ReadAllBytes(path));
            Assert.False(File.Exists(stale));
            Assert.False(File.Exists(reusedPid));
            Assert.Equal(new[] { ours, liveOwner, otherTarget, oldNaming }.Order(StringComparer.Ordinal), TempFiles().Order(StringComparer.Ordinal));
            Assert.Equal(1, AtomicFile.RemoveStaleTempFiles(Path.Combine(_dir.FullName, "model.zip.bak")));
            Assert.False(File.Exists(otherTarget));
        }
        finally { live.Kill(); live.WaitForExit(); }
    }
}
