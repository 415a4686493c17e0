using System.Globalization;
using QuanTA.Core.Training;

namespace QuanTA.MLNet.Engine;

/// <summary>
/// The run fingerprint stored in every checkpoint of <c>Fit</c>, and resolving <see cref="QuanTAFineTuneOptions.ResumeFromCheckpoint"/>
/// with a check that the checkpoint belongs to this base model and adapter. The fingerprint is readable text in three parts:
/// <c>base &lt;sha256 of the base model files&gt; | adapter &lt;options that shape the trained tensors&gt; | path fused|per-layer</c>
/// (the fused QuanTA paths — Stacked, Layerwise, LayerwiseUncached — store stacked <c>quanta_bank.*</c> tensors and resume each
/// other's checkpoints; the per-layer path stores one tensor per layer), and a fourth,
/// <c>| world N</c>, for data-parallel runs: each rank's shard and the steps per epoch depend on the number of ranks, so a
/// checkpoint resumes only with the world size that wrote it.
/// </summary>
internal static class RunFingerprints
{
    const string Sep = " | ";

    /// <summary>The fingerprint of a run.</summary>
    public static string Make(string baseModelFingerprint, QuanTAFineTuneOptions o, bool fused, int worldSize = 1)
    {
        var inv = CultureInfo.InvariantCulture;
        string adapter = o.Adapter == AdapterMethod.LoRA
            ? string.Create(inv, $"LoRA r={o.LoRARank} alpha={o.LoRAAlpha} dropout={o.Dropout}")
            : string.Create(inv, $"QuanTA layout={(o.AxisLayout is null ? "auto" + o.AxisCount : string.Join("x", o.AxisLayout))} " +
                $"pairs={(o.Pairs is null ? "all" : string.Join(",", o.Pairs.Select(p => $"{p.Item1}-{p.Item2}")))} " +
                $"tensors={o.TensorCount?.ToString(inv) ?? "all"} rank={o.Rank?.ToString(inv) ?? "full"} dropout={o.Dropout}");
        string task = o.Task == QuanTATask.TextClassification ? $"classification/{o.ClassificationMode}" : "generation";
        // a quantized base is part of the base's identity (older checkpoints, all unquantized, keep their fingerprint)
        if (o.BaseQuantization != QuanTA.Core.Quantization.BaseQuantization.None) baseModelFingerprint += $" quantized={o.BaseQuantization}";
        return $"base {baseModelFingerprint}{Sep}adapter {adapter} targets={string.Join(",", o.TargetModules)} task={task}" +
               $"{Sep}path {(fused ? "fused" : "per-layer")}" + (worldSize > 1 ? $"{Sep}world {worldSize}" : "");
    }

    /// <summary>
    /// The checkpoint folder to resume from: <paramref name="resume"/> itself when it is a checkpoint, else the newest valid
    /// checkpoint under it (<c>"latest"</c> = under <paramref name="checkpointDir"/>; corrupt ones are skipped with a warning).
    /// Throws a message naming the difference when the checkpoint was made with another base model, adapter or training path.
    /// <c>"latest"</c> over a checkpoint folder that holds no <c>checkpoint-N</c> yet (missing, empty, or only the temporary
    /// folder of a save that was killed) returns null: the run starts from the beginning, with a warning, so a restart loop can
    /// always pass <c>"latest"</c>.
    /// </summary>
    public static string? ResolveResume(string resume, string? checkpointDir, string fingerprint, long seed, Action<string> warn)
    {
        var from = resume == "latest"
            ? checkpointDir ?? throw new ArgumentException("ResumeFromCheckpoint = \"latest\" needs CheckpointDirectory.")
            : Path.GetFullPath(resume);
        if (resume == "latest" && Checkpoints.List(from).Count == 0)
        {
            warn($"ResumeFromCheckpoint = \"latest\": '{from}' holds no checkpoint yet; training starts from the beginning.");
            return null;
        }
        string checkpoint;
        if (File.Exists(Path.Combine(from, Checkpoints.StateFile))) checkpoint = from;
        else
        {
            if (!Directory.Exists(from))
                throw new DirectoryNotFoundException($"ResumeFromCheckpoint: folder '{from}' does not exist.");
            checkpoint = Checkpoints.FindLatestValid(from, e => warn($"Skipping checkpoint: {e.Message}"))
                ?? throw new DirectoryNotFoundException($"ResumeFromCheckpoint: '{from}' holds no valid checkpoint-N folder " +
                    "(none was written yet, or all are corrupt). Start without ResumeFromCheckpoint.");
        }
        var state = Checkpoints.Verify(checkpoint);
        var stored = state.RunFingerprint ?? "";
        if (stored != fingerprint)
        {
            var (a, b) = (Parts(stored), Parts(fingerprint));
            string what = a.Base != b.Base ? $"a different base model (checkpoint: {a.Base}; now: {b.Base})"
                : a.Adapter != b.Adapter ? $"different adapter options (checkpoint: {a.Adapter}; now: {b.Adapter})"
                : a.Path != b.Path ? $"the {a.Path} training path, this Fit uses {b.Path} (set {(a.Path == "path fused" ? "TrainingPath = Stacked or Layerwise (CLI: --training-path stacked)" : "TrainingPath = PerLayer (CLI: --training-path per-layer)")} to resume)"
                : a.World != b.World ? $"{Ranks(a.World)}, this Fit runs {Ranks(b.World)} (each rank's shard and the steps per epoch " +
                    "depend on the number of ranks: resume with the world size that wrote the checkpoint)"
                : $"another run (fingerprint '{stored}')";
            throw new InvalidOperationException($"Cannot resume from checkpoint '{checkpoint}': it was made with {what}. " +
                "Resume with the same BaseModelPath and adapter options, or start a fresh Fit in another CheckpointDirectory.");
        }
        if (state.Seed != seed)
            throw new InvalidOperationException($"Cannot resume from checkpoint '{checkpoint}': it was made with Seed = {state.Seed}, this Fit uses " +
                $"Seed = {seed} (the seed fixes the data order of every epoch). Resume with Seed = {state.Seed}.");
        return checkpoint;
    }

    static (string Base, string Adapter, string Path, int World) Parts(string fingerprint)
    {
        var p = fingerprint.Split(Sep);
        var world = p.ElementAtOrDefault(3) is { } w && w.StartsWith("world ", StringComparison.Ordinal) && int.TryParse(w[6..], out var n) ? n : 1;
        return (p.ElementAtOrDefault(0) ?? "", p.ElementAtOrDefault(1) ?? "", p.ElementAtOrDefault(2) ?? "", world);
    }

    static string Ranks(int n) => n == 1 ? "1 process (no data parallelism)" : $"{n} data-parallel ranks";
}
