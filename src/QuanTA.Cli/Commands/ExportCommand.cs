using System.CommandLine;
using Microsoft.ML;
using QuanTA.Core.Export;
using QuanTA.MLNet;

namespace QuanTA.Cli.Commands;

/// <summary><c>quanta export</c>: a model .zip written by <c>quanta finetune</c> → a merged Hugging Face folder, a PEFT adapter
/// folder or a GGUF file for llama.cpp (docs/formats.md); the same as the library's <c>QuanTAFineTuneTransformer.Export</c>.</summary>
public static class ExportCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "A model .zip written by 'quanta finetune' (its base model folder must be where it was, or give --base-model).", Required = true };
        var format = new Option<string>("--format") { Description = $"{string.Join(" or ", ModelExporter.FormatNames)}: hf = a merged Hugging Face folder (config.json, safetensors shards, tokenizer files) that transformers loads as is; peft = the adapter as adapter_config.json + adapter_model.safetensors next to the unchanged base; gguf = the merged causal LM as one model.gguf for llama.cpp / Ollama.", Required = true };
        var output = new Option<string>("--output") { Description = "The folder to write (created; a non-empty folder needs --overwrite). Written in a temporary folder beside it and renamed into place when complete.", Required = true };
        var dtype = new Option<string?>("--dtype") { Description = "Weight precision: bf16, fp16 or fp32 (default: bf16 for hf, fp32 for peft). Merged weights are computed in fp32 and rounded once." };
        var shard = new Option<string?>("--max-shard-size") { Description = "hf: largest safetensors shard, e.g. 5GB, 500MB or 2GiB (default 50GB, as transformers 5.x's save_pretrained); more than one shard adds model.safetensors.index.json." };
        var ggufType = new Option<string?>("--gguf-type") { Description = "gguf: matrix type f16 (default, as llama.cpp's converter), bf16, q8_0 or f32; norms stay f32. Merged in fp32 and rounded once." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the output folder if it is not empty." };
        var baseModel = new Option<string?>("--base-model") { Description = "Base model folder, if it moved since training (its fingerprint is checked)." };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N (where ΔW is computed).", DefaultValueFactory = _ => "cpu" };
        var cmd = new Command("export", "Export a fine-tuned model .zip as a merged Hugging Face folder (hf), a PEFT adapter folder (peft) or a GGUF file (gguf).")
        {
            model, format, output, dtype, shard, ggufType, overwrite, baseModel, device,
        };
        cmd.SetAction(r => CliRun.Run(() =>
        {
            var options = new ModelExportOptions
            {
                Format = ModelExporter.ParseFormat(r.GetValue(format)!),
                DType = r.GetValue(dtype) is { } d ? ModelExportOptions.ParseDType(d) : null,
                Overwrite = r.GetValue(overwrite),
                MaxShardSizeBytes = r.GetValue(shard) is { } size ? ModelExportOptions.ParseSize(size) : ModelExportOptions.TransformersDefaultMaxShardSize,
                GgufType = r.GetValue(ggufType) is { } g ? ModelExportOptions.ParseGgufType(g) : new ModelExportOptions().GgufType,
                OverwriteSwitchName = "--overwrite",
            };
            if (options.Format == ExportFormat.Gguf && r.GetValue(dtype) is not null)
                throw new ArgumentException("--dtype sets the precision of hf and peft exports; a gguf export takes --gguf-type (f16, bf16, q8_0 or f32).");
            if (options.Format != ExportFormat.Gguf && r.GetValue(ggufType) is not null)
                throw new ArgumentException($"--gguf-type applies to --format gguf only; for --format {r.GetValue(format)} give --dtype (bf16, fp16 or fp32).");
            var path = r.GetValue(model)!;
            if (!File.Exists(path)) throw new FileNotFoundException($"--model '{path}' does not exist; give a model .zip written by quanta finetune.", path);
            var ml = CliRun.Context(r.GetValue(device)!, 1);
            ml.RegisterQuanTA(r.GetValue(baseModel));
            var loaded = ml.Model.LoadWithQuanTA(ml, path, out _);
            using var quanta = TextData.FindQuanTA(loaded, path);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            quanta.Export(r.GetValue(output)!, options);
            var dir = Path.GetFullPath(r.GetValue(output)!);
            long bytes = Directory.EnumerateFiles(dir).Sum(f => new FileInfo(f).Length);
            var precision = options.Format == ExportFormat.Gguf ? options.GgufType.ToString() : options.ResolvedDType.ToString();
            Console.Error.WriteLine($"exported {r.GetValue(format)} ({precision}) to {dir}: " +
                $"{Directory.EnumerateFiles(dir).Count()} files, {bytes:N0} bytes in {clock.Elapsed.TotalSeconds:F1} s");
            return 0;
        }));
        return cmd;
    }
}
