using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Export;

/// <summary>What kind of model is exported: it decides the architecture written to config.json and PEFT's task_type.</summary>
public enum ExportTask
{
    /// <summary>A causal LM (<c>…ForCausalLM</c>, task_type CAUSAL_LM), also a verbalizer classifier.</summary>
    CausalLM,
    /// <summary>A sequence classifier with a <c>score</c> head (<c>…ForSequenceClassification</c>, task_type SEQ_CLS).</summary>
    SequenceClassification,
}

/// <summary>The model to export: a module whose state-dict keys are Hugging Face's, with adapters attached to its
/// <see cref="Adapters.AdaptableLinear"/> layers (merged or not), and what the folder needs besides the weights.</summary>
public sealed record ExportSource
{
    /// <summary>The model (LlamaForCausalLM or LlamaForSequenceClassification family) with its adapters.</summary>
    public required nn.Module Model { get; init; }
    /// <summary>The base model folder it was loaded from (config.json, tokenizer files, generation_config.json).</summary>
    public required string BaseModelPath { get; init; }
    /// <summary>Causal LM or sequence classifier.</summary>
    public ExportTask Task { get; init; } = ExportTask.CausalLM;
    /// <summary>Classification: the class names in label order. The merged head keeps the first ClassNames.Count rows of
    /// <c>score.weight</c>, and config.json gets id2label/label2id from them.</summary>
    public IReadOnlyList<string>? ClassNames { get; init; }
    /// <summary>The padding id the model was run with (classification pools at the last non-pad token; written as pad_token_id).</summary>
    public int? PadTokenId { get; init; }
    /// <summary>The chat template the model was trained with when it is not the base folder's own (a built-in or a file given
    /// at training), as Jinja text; a Hugging Face export writes it as chat_template.jinja and into tokenizer_config.json.</summary>
    public string? ChatTemplate { get; init; }
}

/// <summary>
/// Exports a fine-tuned model (see <see cref="ExportFormat"/> for the formats and docs/formats.md for their layouts). Every
/// format is written atomically into a new folder (<see cref="ExportFolder"/>), and the model is only read: merged weights are
/// computed from W0 and ΔW without merging the model, so an export in the middle of inference changes nothing.
/// </summary>
public static class ModelExporter
{
    /// <summary>The CLI names of the formats (the one table that parsing and messages use).</summary>
    static readonly (string Name, ExportFormat Format)[] Names = [("hf", ExportFormat.HuggingFace), ("peft", ExportFormat.Peft), ("gguf", ExportFormat.Gguf)];

    /// <summary>The format names the CLI accepts.</summary>
    public static IReadOnlyList<string> FormatNames => Names.Select(n => n.Name).ToArray();

    /// <summary>The file a GGUF export writes inside its output folder.</summary>
    public const string GgufFileName = "model.gguf";

    /// <summary>Parses a CLI format name (hf, peft, gguf; "huggingface" is accepted for hf).</summary>
    public static ExportFormat ParseFormat(string text, string optionName = "--format")
    {
        var t = text?.Trim().ToLowerInvariant();
        if (t == "huggingface") return ExportFormat.HuggingFace;
        foreach (var (name, format) in Names) if (name == t) return format;
        throw new ArgumentException($"{optionName} '{text}' is not an export format; use one of {string.Join(", ", FormatNames)}.");
    }

    /// <summary>Writes <paramref name="source"/> to the folder <paramref name="output"/> in the format of <paramref name="options"/>.</summary>
    public static void Export(ExportSource source, string output, ModelExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (!Directory.Exists(source.BaseModelPath))
            throw new DirectoryNotFoundException($"The base model folder '{source.BaseModelPath}' is gone; the export copies its config.json and tokenizer files.");
        if (source.Task == ExportTask.SequenceClassification && source.ClassNames is not { Count: > 0 })
            throw new ArgumentException("A sequence classifier is exported with its class names (ExportSource.ClassNames).");
        if (options.Format == ExportFormat.Gguf && source.Task == ExportTask.SequenceClassification)
            throw new NotSupportedException("GGUF holds causal LMs for llama.cpp; a sequence classifier (score head) exports as a Hugging Face folder (hf) or PEFT adapter (peft).");
        ExportFolder.Write(output, options.Overwrite, options.OverwriteSwitchName, dir =>
        {
            switch (options.Format)   // a new format: one enum member, one entry in Names, one case here
            {
                case ExportFormat.HuggingFace: HfFolderWriter.Write(source, dir, options.ResolvedDType, options.MaxShardSizeBytes); break;
                case ExportFormat.Peft: PeftFolderWriter.Write(source, dir, options.ResolvedDType); break;
                case ExportFormat.Gguf: WriteGguf(source, dir, options.GgufType); break;
                default: throw new ArgumentOutOfRangeException(nameof(options), $"Export format {options.Format} has no writer.");
            }
        });
    }

    /// <summary>GGUF = the merged Hugging Face folder in fp32 (W0 + ΔW, not yet rounded), converted by <see cref="Gguf.GgufConverter"/>,
    /// which rounds each matrix once to <paramref name="type"/>. The fp32 folder is a temporary inside the export's own temporary
    /// folder (it needs about 4 bytes per parameter of free disk space) and is deleted before the folder is renamed into place.</summary>
    static void WriteGguf(ExportSource source, string dir, Gguf.GgufFileType type)
    {
        var merged = Path.Combine(dir, "merged-fp32.quanta-tmp");
        try
        {
            Directory.CreateDirectory(merged);
            HfFolderWriter.Write(source, merged, ScalarType.Float32, ModelExportOptions.TransformersDefaultMaxShardSize);
            Gguf.GgufConverter.Convert(merged, Path.Combine(dir, GgufFileName), new Gguf.GgufConversionOptions
            {
                FileType = type,
                Name = new DirectoryInfo(source.BaseModelPath.TrimEnd(Path.DirectorySeparatorChar)).Name,
            });
        }
        finally
        {
            if (Directory.Exists(merged)) Directory.Delete(merged, recursive: true);
        }
    }
}
