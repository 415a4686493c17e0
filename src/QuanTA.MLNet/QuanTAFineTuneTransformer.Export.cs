using QuanTA.Core.Export;
using QuanTA.MLNet.Engine;

namespace QuanTA.MLNet;

public sealed partial class QuanTAFineTuneTransformer
{
    /// <summary>
    /// Writes the fine-tuned model to the folder <paramref name="outputFolder"/> for the tools that serve LLMs
    /// (docs/formats.md): <see cref="ExportFormat.HuggingFace"/> — a merged Hugging Face folder that transformers loads as is
    /// (a head-mode classifier as <c>…ForSequenceClassification</c> with this model's class names as id2label/label2id; a
    /// generation or verbalizer model as the causal LM); <see cref="ExportFormat.Peft"/> — the adapter as a PEFT folder next to
    /// the unchanged base (LoRA loads with PEFT; QuanTA in the same layout, loaded back by this project's <c>--adapter</c>).
    /// The folder is written atomically; a non-empty one is replaced only with <see cref="ModelExportOptions.Overwrite"/>.
    /// The model is only read: merged weights are computed beside it, so predictions after an export are unchanged.
    /// </summary>
    /// <param name="outputFolder">The folder to create (or replace, with Overwrite).</param>
    /// <param name="options">Format, dtype, overwrite and shard size; null exports a bf16 Hugging Face folder.</param>
    public void Export(string outputFolder, ModelExportOptions? options = null)
    {
        ThrowIfDisposed();
        ArgumentException.ThrowIfNullOrWhiteSpace(outputFolder);
        options ??= new ModelExportOptions();
        lock (_lock)
        {
            ThrowIfDisposed();
            ModelExporter.Export(ExportSource(), outputFolder, options);
        }
    }

    /// <summary>What the exporter needs to know about this model (call under the lock).</summary>
    ExportSource ExportSource()
    {
        bool head = _options.Task == QuanTATask.TextClassification && !_model.IsVerbalizer;
        return new ExportSource
        {
            Model = _model.Module,
            BaseModelPath = _model.BaseModelPath,
            Task = head ? ExportTask.SequenceClassification : ExportTask.CausalLM,
            ClassNames = head ? ClassNames : null,
            PadTokenId = _model.Tokenizer.PadId,
            ChatTemplate = _model.IsChat && _options.ChatTemplate is not null ? _model.Chat.Template.Text : null,
        };
    }
}
