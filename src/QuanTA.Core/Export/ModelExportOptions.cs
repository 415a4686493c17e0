using QuanTA.Core.Runtime;
using static TorchSharp.torch;

namespace QuanTA.Core.Export;

/// <summary>The formats a fine-tuned model can be exported to (<see cref="ModelExporter"/> writes each one).</summary>
public enum ExportFormat
{
    /// <summary>A merged Hugging Face model folder (config.json, sharded safetensors, tokenizer files): W0 + ΔW in one weight,
    /// loaded by transformers' <c>from_pretrained</c> like any checkpoint. CLI name "hf".</summary>
    HuggingFace,
    /// <summary>A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) next to the unchanged base. LoRA loads
    /// with PEFT's <c>PeftModel.from_pretrained</c>; QuanTA has no PEFT tuner and is written in the same layout with
    /// <c>"peft_type": "QUANTA"</c> (docs/formats.md). CLI name "peft".</summary>
    Peft,
    /// <summary>The merged causal LM as one GGUF v3 file (<c>model.gguf</c> in the output folder) for llama.cpp, Ollama and the
    /// tools built on them; tensor type from <see cref="ModelExportOptions.GgufType"/>. CLI name "gguf".</summary>
    Gguf,
}

/// <summary>Options of <see cref="ModelExporter.Export"/> (and of <c>QuanTAFineTuneTransformer.Export</c>). Defaults follow
/// transformers' <c>save_pretrained</c>.</summary>
public sealed record ModelExportOptions
{
    /// <summary>transformers 5.x <c>save_pretrained</c>'s default <c>max_shard_size</c>, "50GB" (decimal: 50·10⁹ bytes).</summary>
    public const long TransformersDefaultMaxShardSize = 50_000_000_000;

    /// <summary>What to write. Default <see cref="ExportFormat.HuggingFace"/>.</summary>
    public ExportFormat Format { get; init; } = ExportFormat.HuggingFace;

    /// <summary>The dtype of the written weights: Float32, Float16 or BFloat16. Null (default) picks per format: bf16 for a merged
    /// Hugging Face folder (how LLM checkpoints are shipped), fp32 for PEFT adapters (the dtype they were trained in).
    /// Merged weights are computed in fp32 and rounded once to this dtype.</summary>
    public ScalarType? DType { get; init; }

    /// <summary>GGUF only: the storage type of the matrices (F16, BF16, Q8_0 or F32; norms stay F32). Default
    /// <see cref="Gguf.GgufFileType.F16"/>, as llama.cpp's converter. The merged weights are computed in fp32 and rounded once
    /// to this type.</summary>
    public Gguf.GgufFileType GgufType { get; init; } = Gguf.GgufFileType.F16;

    /// <summary>Replace a non-empty output folder. Default false: such a folder is refused before anything is written.</summary>
    public bool Overwrite { get; init; }

    /// <summary>Largest safetensors shard of a Hugging Face folder, in bytes (a tensor larger than this gets a shard of its own,
    /// as in transformers). Default <see cref="TransformersDefaultMaxShardSize"/>; with more than one shard a
    /// <c>model.safetensors.index.json</c> is written.</summary>
    public long MaxShardSizeBytes { get; init; } = TransformersDefaultMaxShardSize;

    /// <summary>How a refusal names the overwrite switch (the CLI sets "--overwrite").</summary>
    public string OverwriteSwitchName { get; init; } = $"{nameof(ModelExportOptions)}.{nameof(Overwrite)} = true";

    /// <summary>The dtype used for <see cref="Format"/> (see <see cref="DType"/>).</summary>
    public ScalarType ResolvedDType => DType ?? (Format == ExportFormat.Peft ? ScalarType.Float32 : ScalarType.BFloat16);

    /// <summary>Throws naming the option that is out of range.</summary>
    public void Validate()
    {
        if (!Enum.IsDefined(Format)) throw new ArgumentException($"{nameof(Format)} {(int)Format} is not an export format ({string.Join(", ", ModelExporter.FormatNames)}).");
        if (DType is { } t && t is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentException($"{nameof(DType)} {t} cannot be exported; use Float32, Float16 or BFloat16 (fp32, fp16, bf16).");
        if (!Enum.IsDefined(GgufType)) throw new ArgumentException($"{nameof(GgufType)} {(int)GgufType} is not a GGUF type; use F16, BF16, Q8_0 or F32.");
        if (MaxShardSizeBytes < 1) throw new ArgumentException($"{nameof(MaxShardSizeBytes)} must be positive; got {MaxShardSizeBytes}.");
    }

    /// <summary>Parses a shard size as transformers' <c>convert_file_size_to_int</c> does: a number of bytes, or digits followed by
    /// KB/MB/GB (powers of 10) or KiB/MiB/GiB (powers of 2), e.g. "50GB", "500MB", "2GiB".</summary>
    public static long ParseSize(string text, string optionName = "--max-shard-size")
    {
        var t = text?.Trim() ?? "";
        foreach (var (unit, factor) in new (string, long)[] { ("GIB", 1L << 30), ("MIB", 1L << 20), ("KIB", 1L << 10), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1) })
            if (t.EndsWith(unit, StringComparison.OrdinalIgnoreCase)
                && long.TryParse(t[..^unit.Length].Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) && n > 0)
                return checked(n * factor);
        if (long.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var bytes) && bytes > 0) return bytes;
        throw new ArgumentException($"{optionName} '{text}' is not a size: give digits followed by KB, MB, GB (or KiB, MiB, GiB), e.g. 5GB.");
    }

    /// <summary>Parses a GGUF type name: f16, bf16, q8_0 or f32 (as the CLI's --gguf-type).</summary>
    public static Gguf.GgufFileType ParseGgufType(string text, string optionName = "--gguf-type") =>
        (text?.Trim().ToLowerInvariant()) switch
        {
            "f16" or "fp16" => Gguf.GgufFileType.F16,
            "bf16" => Gguf.GgufFileType.BF16,
            "q8_0" or "q8" => Gguf.GgufFileType.Q8_0,
            "f32" or "fp32" => Gguf.GgufFileType.F32,
            _ => throw new ArgumentException($"{optionName} '{text}' is not a GGUF type; use f16, bf16, q8_0 or f32."),
        };

    /// <summary>Parses an export dtype name: fp32, fp16 or bf16 (as the CLI's --dtype).</summary>
    public static ScalarType ParseDType(string text, string optionName = "--dtype") =>
        TorchRuntime.ParseDType(text, optionName) ?? throw new ArgumentException($"{optionName} needs a value: fp32, fp16 or bf16.");
}
