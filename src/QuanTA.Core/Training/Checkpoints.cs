using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using QuanTA.Core.Runtime;
using static TorchSharp.torch;

namespace QuanTA.Core.Training;

/// <summary>Where training stands, stored as <c>trainer_state.json</c> in every checkpoint (HF Trainer's file of the same name).</summary>
public sealed class TrainerState
{
    /// <summary>Format version of this file.</summary>
    public int FormatVersion { get; set; } = 1;
    /// <summary>Optimizer steps completed.</summary>
    public long Step { get; set; }
    /// <summary>Data position: epoch of the next batch to train on.</summary>
    public int Epoch { get; set; }
    /// <summary>Data position: index (in <see cref="Epoch"/>) of the next batch; equal to the batch count when the epoch's end-of-epoch work is still to do.</summary>
    public long BatchInEpoch { get; set; }
    /// <summary>Optimizer steps of the whole run when saved.</summary>
    public long TotalSteps { get; set; }
    /// <summary>Batches per epoch when saved.</summary>
    public long BatchesPerEpoch { get; set; }
    /// <summary>Gradient accumulation when saved (resuming with another value would misplace the data position).</summary>
    public int GradientAccumulationSteps { get; set; }
    /// <summary>The run's seed.</summary>
    public long Seed { get; set; }
    /// <summary><see cref="TrainerOptions.RunFingerprint"/> of the run.</summary>
    public string? RunFingerprint { get; set; }
    /// <summary>Names, shapes and dtypes of the saved tensors: the trainable ones in optimizer order, then the state tensors.</summary>
    public List<ParameterInfo> Parameters { get; set; } = new();
    /// <summary>Best validation metric so far.</summary>
    public double? BestMetric { get; set; }
    /// <summary>Step of <see cref="BestMetric"/>.</summary>
    public long? BestStep { get; set; }
    /// <summary>Folder name (not path) of the best checkpoint.</summary>
    public string? BestCheckpoint { get; set; }
    /// <summary>Validations since the last improvement (early stopping).</summary>
    public int ValidationsWithoutImprovement { get; set; }
    /// <summary>History up to <see cref="Step"/>.</summary>
    public TrainingHistory History { get; set; } = new();
    /// <summary>SHA-256 (hex) of every other file of the checkpoint.</summary>
    public Dictionary<string, string> Sha256 { get; set; } = new();
    /// <summary>UTC time of saving.</summary>
    public DateTime SavedAtUtc { get; set; }
}

/// <summary>Name, shape and dtype of one trainable tensor.</summary>
/// <param name="Name">State-dict name.</param>
/// <param name="Shape">Shape.</param>
/// <param name="DType">Scalar type name.</param>
public sealed record ParameterInfo(string Name, long[] Shape, string DType);

/// <summary>
/// Checkpoint folders <c>checkpoint-000042/</c> holding <c>adapter.safetensors</c> (the trainable tensors by name, plus
/// untrained state tensors such as QuanTA's frozen copies <c>S_i</c>),
/// <c>optimizer.bin</c> (TorchSharp AdamW state), <c>rng_state.bin</c> (libtorch CPU generator) and <c>trainer_state.json</c>
/// (step, data position, history, best metric, SHA-256 of the other files). Each folder is written under a temporary name and
/// renamed when complete, so a crash never leaves a half-written <c>checkpoint-N</c>; a checkpoint altered afterwards fails
/// its hash check with <see cref="CheckpointCorruptException"/>.
/// </summary>
public static class Checkpoints
{
    /// <summary>File of the trainable tensors (safetensors, names as in the model's state dict).</summary>
    public const string AdapterFile = "adapter.safetensors";
    /// <summary>File of the optimizer state (TorchSharp format).</summary>
    public const string OptimizerFile = "optimizer.bin";
    /// <summary>File of the CPU random generator state.</summary>
    public const string RngFile = "rng_state.bin";
    /// <summary>File of the <see cref="TrainerState"/>.</summary>
    public const string StateFile = "trainer_state.json";
    const string Prefix = "checkpoint-";
    const string TmpPrefix = ".tmp-checkpoint-";
    const string OldInfix = ".old-";

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Per-thread replacement of the file opener; tests use it to simulate a full disk.</summary>
    [ThreadStatic] internal static Func<string, Stream>? OpenWriteOverride;

    static Stream OpenWrite(string path)
        => OpenWriteOverride?.Invoke(path) ?? new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);

    /// <summary>The folder name of step <paramref name="step"/>.</summary>
    public static string FolderName(long step) => Prefix + step.ToString("D6", CultureInfo.InvariantCulture);

    /// <summary>
    /// Checkpoint folders under <paramref name="root"/>, oldest first (temporary folders excluded). A step whose folder was moved
    /// aside for a re-save and not replaced (the process died between the two renames) is listed by that moved-aside folder:
    /// it is the only complete copy of the step.
    /// </summary>
    public static IReadOnlyList<string> List(string root)
    {
        if (!Directory.Exists(root)) return Array.Empty<string>();
        return Directory.GetDirectories(root, Prefix + "*")
            .Select(d => (dir: d, step: StepOf(Path.GetFileName(d), out var aside), aside))
            .Where(x => x.step >= 0)
            .GroupBy(x => x.step)
            .Select(g => g.OrderBy(x => x.aside).First())      // the folder in place before one moved aside
            .OrderBy(x => x.step).Select(x => x.dir).ToList();
    }

    /// <summary>The step of a folder named <c>checkpoint-N</c> or <c>checkpoint-N.old-…</c> (moved aside), else −1.</summary>
    static long StepOf(string name, out bool movedAside)
    {
        var digits = name[Prefix.Length..];
        var dot = digits.IndexOf(OldInfix, StringComparison.Ordinal);
        movedAside = dot >= 0;
        if (movedAside) digits = digits[..dot];
        return long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var s) ? s : -1;
    }

    /// <summary>
    /// Writes a checkpoint of <paramref name="tensors"/>, <paramref name="optimizer"/> and <paramref name="rngState"/> with
    /// <paramref name="state"/> (its hashes and time are filled in). Atomic: on any failure (e.g. disk full) the temporary
    /// folder is removed, nothing existing is touched, and an <see cref="IOException"/> says so.
    /// </summary>
    /// <returns>The checkpoint folder.</returns>
    public static string Save(string root, TrainerState state, IReadOnlyList<(string name, Tensor tensor)> tensors,
                              OptimizerHelper optimizer, byte[] rngState)
    {
        Directory.CreateDirectory(root);
        var final = Path.Combine(root, FolderName(state.Step));
        var tmp = Path.Combine(root, TmpPrefix + state.Step.ToString(CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(tmp);
        try
        {
            var point = "checkpoint:" + state.Step.ToString(CultureInfo.InvariantCulture) + ":";
            state.Sha256 = new Dictionary<string, string>();
            state.Sha256[AdapterFile] = WriteFile(Path.Combine(tmp, AdapterFile), s => SaveTensors(s, tensors));
            CrashTestPoints.Reached(point + AdapterFile);
            state.Sha256[OptimizerFile] = WriteFile(Path.Combine(tmp, OptimizerFile), s =>
            {
                using var w = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
                optimizer.save_state_dict(w);
                w.Flush();
            });
            CrashTestPoints.Reached(point + OptimizerFile);
            state.Sha256[RngFile] = WriteFile(Path.Combine(tmp, RngFile), s => s.Write(rngState));
            CrashTestPoints.Reached(point + RngFile);
            state.SavedAtUtc = DateTime.UtcNow;
            WriteFile(Path.Combine(tmp, StateFile), s => JsonSerializer.Serialize(s, state, Json));
            DirectorySync.Flush(tmp);                            // the four names are on disk before the folder is renamed
            CrashTestPoints.Reached(point + StateFile);
            if (Directory.Exists(final))
            {
                // Re-saving a step (e.g. at an epoch end right after the step's own checkpoint): rename(2) cannot replace a
                // non-empty folder, so the old one is moved aside first. A crash between the two renames leaves the moved-aside
                // folder, which List() still returns for its step; it is dropped once a newer copy is in place.
                var old = final + OldInfix + Guid.NewGuid().ToString("N")[..8];
                Directory.Move(final, old);
                CrashTestPoints.Reached(point + "replacing");
                Directory.Move(tmp, final);
                DirectorySync.Flush(root);
                DeleteFolder(old);
            }
            else
            {
                Directory.Move(tmp, final);
                DirectorySync.Flush(root);
            }
            foreach (var aside in Directory.GetDirectories(root, FolderName(state.Step) + OldInfix + "*")) DeleteFolder(aside);
            CrashTestPoints.Reached(point + "renamed");
            return final;
        }
        catch (Exception e)
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw new IOException($"Could not write checkpoint '{final}': {e.Message}. Nothing was replaced: earlier checkpoints are intact.", e);
        }
    }

    /// <summary>Removes a folder by first renaming it to a temporary name (one atomic step: a crash during the recursive
    /// delete leaves a temporary folder, never a half-deleted <c>checkpoint-N</c>); best effort.</summary>
    static void DeleteFolder(string dir)
    {
        var parent = Path.GetDirectoryName(Path.GetFullPath(dir))!;
        var doomed = Path.Combine(parent, TmpPrefix + "deleted-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            Directory.Move(dir, doomed);
            Directory.Delete(doomed, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    static void SaveTensors(Stream s, IReadOnlyList<(string name, Tensor tensor)> tensors)
    {
        using var scope = NewDisposeScope();
        var dict = new Dictionary<string, Tensor>();
        foreach (var (name, t) in tensors) dict[name] = t.detach().contiguous();
        Safetensors.SaveStateDict(s, dict, leaveOpen: true);
    }

    static string WriteFile(string path, Action<Stream> write)
    {
        using (var s = OpenWrite(path))
        {
            write(s);
            s.Flush();
            if (s is FileStream fs) fs.Flush(flushToDisk: true);
        }
        return HashFile(path);
    }

    static string HashFile(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s));
    }

    /// <summary>
    /// Reads and verifies a checkpoint's state: the state file parses and every listed file exists with the recorded SHA-256.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">the folder does not exist.</exception>
    /// <exception cref="CheckpointCorruptException">a file is missing, truncated or altered.</exception>
    public static TrainerState Verify(string checkpoint)
    {
        if (!Directory.Exists(checkpoint))
            throw new DirectoryNotFoundException($"Checkpoint folder '{checkpoint}' does not exist.");
        var statePath = Path.Combine(checkpoint, StateFile);
        if (!File.Exists(statePath)) throw new CheckpointCorruptException(checkpoint, $"{StateFile} is missing");
        TrainerState? state;
        try { state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(statePath), Json); }
        catch (JsonException e) { throw new CheckpointCorruptException(checkpoint, $"{StateFile} is not valid JSON ({e.Message})", e); }
        if (state is null || state.FormatVersion != 1)
            throw new CheckpointCorruptException(checkpoint, $"{StateFile} has an unknown format (version {state?.FormatVersion})");
        if (state.Sha256 is null || state.Parameters is null || state.History is null
            || state.Parameters.Any(p => p?.Name is null || p.Shape is null || p.DType is null))
            throw new CheckpointCorruptException(checkpoint, $"{StateFile} lacks its hashes, history or parameter list (null where an object is expected)");
        foreach (var file in new[] { AdapterFile, OptimizerFile, RngFile })
        {
            var path = Path.Combine(checkpoint, file);
            if (!state.Sha256.TryGetValue(file, out var expected)) throw new CheckpointCorruptException(checkpoint, $"{StateFile} lists no hash for {file}");
            if (!File.Exists(path)) throw new CheckpointCorruptException(checkpoint, $"{file} is missing");
            var actual = HashFile(path);
            if (!string.Equals(actual, expected, StringComparison.OrdinalIgnoreCase))
                throw new CheckpointCorruptException(checkpoint, $"{file} does not match its recorded SHA-256 (truncated or modified; size {new FileInfo(path).Length} bytes)");
        }
        return state;
    }

    /// <summary>
    /// The newest checkpoint under <paramref name="root"/> that passes <see cref="Verify"/>, or null. Corrupt ones are skipped and
    /// reported through <paramref name="skipped"/>.
    /// </summary>
    public static string? FindLatestValid(string root, Action<CheckpointCorruptException>? skipped = null)
    {
        foreach (var dir in List(root).Reverse())
        {
            try { Verify(dir); return dir; }
            catch (CheckpointCorruptException e) { skipped?.Invoke(e); }
        }
        return null;
    }

    /// <summary>
    /// Loads a verified checkpoint into <paramref name="tensors"/> (names, shapes and dtypes must match), <paramref name="optimizer"/>
    /// and, when <paramref name="restoreRng"/>, libtorch's CPU generator. Everything is checked before anything is changed.
    /// </summary>
    /// <returns>The checkpoint's <see cref="TrainerState"/>.</returns>
    public static TrainerState Load(string checkpoint, IReadOnlyList<(string name, Tensor tensor)> tensors,
                                    OptimizerHelper? optimizer, bool restoreRng = true)
    {
        var state = Verify(checkpoint);
        CheckTensors(checkpoint, state, tensors);
        Dictionary<string, Tensor> stored;
        try { stored = Models.SafetensorsReader.Read(Path.Combine(checkpoint, AdapterFile)); }
        catch (Exception e) when (e is not CheckpointCorruptException)
        { throw new CheckpointCorruptException(checkpoint, $"{AdapterFile} cannot be read ({e.Message})", e); }
        try
        {
            foreach (var (name, p) in tensors)
                if (!stored.TryGetValue(name, out var t) || !t.shape.SequenceEqual(p.shape) || t.dtype != p.dtype)
                    throw new CheckpointCorruptException(checkpoint, $"{AdapterFile} lacks '{name}' with shape [{string.Join(",", p.shape)}] {p.dtype}");
            var rng = File.ReadAllBytes(Path.Combine(checkpoint, RngFile));
            // libtorch aborts the process (not an exception) on a generator state of the wrong size: check it here.
            if (restoreRng && rng.Length != RngStateSize)
                throw new CheckpointCorruptException(checkpoint, $"{RngFile} is {rng.Length} bytes but libtorch's CPU generator state is {RngStateSize}");
            if (optimizer is not null)
            {
                using var r = new BinaryReader(File.OpenRead(Path.Combine(checkpoint, OptimizerFile)));
                try { optimizer.load_state_dict(r); }
                catch (Exception e) when (e is EndOfStreamException or ArgumentException or InvalidDataException)
                { throw new CheckpointCorruptException(checkpoint, $"{OptimizerFile} does not fit this optimizer ({e.Message})", e); }
            }
            using (no_grad())
                foreach (var (name, p) in tensors) p.copy_(stored[name]);
            if (restoreRng)
            {
                using var rt = tensor(rng, dtype: ScalarType.Byte);
                torch.random.set_rng_state(rt);
            }
        }
        finally { foreach (var t in stored.Values) t.Dispose(); }
        return state;
    }

    /// <summary>Loads only the tensors of a checkpoint into <paramref name="tensors"/> (e.g. the best one at the end), not the optimizer or RNG.</summary>
    public static void LoadTensors(string checkpoint, IReadOnlyList<(string name, Tensor tensor)> tensors)
        => Load(checkpoint, tensors, optimizer: null, restoreRng: false);

    static void CheckTensors(string checkpoint, TrainerState state, IReadOnlyList<(string name, Tensor tensor)> tensors)
    {
        var mine = tensors.Select(p => $"{p.name}[{string.Join(",", p.tensor.shape)}]:{p.tensor.dtype}").ToList();
        var theirs = state.Parameters.Select(p => $"{p.Name}[{string.Join(",", p.Shape)}]:{p.DType}").ToList();
        if (mine.SequenceEqual(theirs)) return;
        var missing = theirs.Except(mine).Take(3).ToList();
        var extra = mine.Except(theirs).Take(3).ToList();
        throw new InvalidOperationException(
            $"Checkpoint '{checkpoint}' was saved for other trainable parameters (a different base model or adapter configuration): " +
            $"{state.Parameters.Count} tensors there, {tensors.Count} here; only in the checkpoint: [{string.Join("; ", missing)}], " +
            $"only here: [{string.Join("; ", extra)}].");
    }

    /// <summary>Deletes all but the newest <paramref name="keepLast"/> checkpoints (0 keeps all), never <paramref name="keep"/>.</summary>
    public static void Prune(string root, int keepLast, string? keep)
    {
        if (keepLast <= 0) return;
        var all = List(root);
        var keepFull = keep is null ? null : Path.GetFullPath(keep);
        foreach (var dir in all.Take(Math.Max(0, all.Count - keepLast)))
        {
            if (keepFull is not null && Path.GetFullPath(dir) == keepFull) continue;
            DeleteFolder(dir);
        }
    }

    /// <summary>
    /// Removes what an interrupted save or prune left: temporary folders, and moved-aside copies of a step whose new folder is
    /// in place. A moved-aside copy without a new folder is kept (it is the step's only copy; see <see cref="List"/>).
    /// </summary>
    public static void CleanTemporary(string root)
    {
        if (!Directory.Exists(root)) return;
        foreach (var d in Directory.GetDirectories(root, TmpPrefix + "*"))
            try { Directory.Delete(d, recursive: true); } catch (IOException) { }
        foreach (var d in Directory.GetDirectories(root, Prefix + "*" + OldInfix + "*"))
            if (StepOf(Path.GetFileName(d), out _) is var step and >= 0 && Directory.Exists(Path.Combine(root, FolderName(step))))
                DeleteFolder(d);
    }

    /// <summary>Size in bytes of libtorch's CPU generator state.</summary>
    static int RngStateSize => _rngStateSize ??= CaptureRng().Length;
    static int? _rngStateSize;

    /// <summary>The CPU generator's state as bytes.</summary>
    public static byte[] CaptureRng()
    {
        using var s = torch.random.get_rng_state();
        return s.data<byte>().ToArray();
    }

    internal static List<ParameterInfo> Describe(IReadOnlyList<(string name, Tensor tensor)> tensors)
        => tensors.Select(p => new ParameterInfo(p.name, p.tensor.shape, p.tensor.dtype.ToString())).ToList();
}
