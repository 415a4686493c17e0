using QuanTA.Core.Chat;
using QuanTA.Core.Generation;
using QuanTA.Core.Runtime;
using QuanTA.MLNet.Engine;
using TorchSharp;

namespace QuanTA.MLNet.Chat;

/// <summary>What one generation produced besides its text.</summary>
internal sealed record ChatGenerationResult(int PromptTokens, int OutputTokens, GenerationFinishReason FinishReason, bool PromptTruncated);

/// <summary>
/// One loaded model behind a chat client: the template, the prompt encoder, a generator and the lock that serializes every
/// use of the model. A request renders its conversation, then decodes on a worker thread that holds the lock for the whole
/// generation (TorchSharp's grad mode and dispose scopes are per thread) and hands text pieces to the caller through a
/// channel, so streaming callers may await on any thread and concurrent requests run one after another.
/// </summary>
internal sealed class ChatModelHost : IDisposable
{
    readonly TextGenerator _generator;
    readonly ITextTokenizer _tokenizer;
    readonly IDisposable? _owned;
    bool _disposed;

    ChatModelHost(TextGenerator generator, ITextTokenizer tokenizer, ConversationEncoder encoder, object gate, int contextLength,
        string modelId, IDisposable? owned, QuanTAFineTuneTransformer? transformer, string device)
    {
        Device = device;
        _generator = generator; _tokenizer = tokenizer; Encoder = encoder; Gate = gate; ContextLength = contextLength;
        ModelId = modelId; _owned = owned; Transformer = transformer;
        // Stop at eos (and generation_config's list) and at the special token that ends an assistant turn in this template.
        StopTokenIds = FineTuneModel.ChatStopIds(tokenizer, encoder.Template);
    }

    public ConversationEncoder Encoder { get; }
    public object Gate { get; }
    public int ContextLength { get; }
    public string ModelId { get; }
    public IReadOnlyList<int> StopTokenIds { get; }
    public QuanTAFineTuneTransformer? Transformer { get; }
    public string Device { get; }

    /// <summary>Over a fitted (or loaded) generation transformer; <paramref name="owns"/>: dispose it with the client.</summary>
    public static ChatModelHost FromTransformer(QuanTAFineTuneTransformer transformer, QuanTAChatClientOptions o, string defaultId, IDisposable? owns)
    {
        if (transformer.Task != QuanTATask.TextGeneration)
            throw new ArgumentException("A chat client needs a text-generation model (QuanTAFineTuneOptions.Task = TextGeneration); " +
                "this transformer classifies.", nameof(transformer));
        var model = transformer.Model;
        var template = ClientTemplate(() => o.ChatTemplate is null ? model.Chat.Template : ChatTemplate.FromModelFolder(model.BaseModelPath, o.ChatTemplate));
        int context = o.MaxContextTokens ?? CoreBackend.ContextLength(model.BaseModelPath);
        return new ChatModelHost(model.CreateGenerator(), model.Tokenizer, new ConversationEncoder(model.Tokenizer, template, context),
            transformer.SyncRoot, context, o.ModelId ?? defaultId, owns, transformer, model.Device.ToString());
    }

    /// <summary>Over a Hugging Face model folder with an optional adapter file.</summary>
    public static ChatModelHost FromFolder(string modelDir, string? adapterPath, QuanTAChatClientOptions o)
    {
        TorchRuntime.Initialize();
        var device = TorchRuntime.ParseDevice(o.Device);
        var dtype = TorchRuntime.ParseDType(o.DType, "QuanTAChatClientOptions.DType");
        var (lm, tokenizer, contextLength) = CoreBackend.LoadForChat(modelDir, adapterPath, device, dtype);
        try
        {
            var template = ClientTemplate(() => ChatTemplate.FromModelFolder(modelDir, o.ChatTemplate));
            int context = o.MaxContextTokens ?? contextLength;
            var id = o.ModelId ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir)));
            return new ChatModelHost(lm.CreateGenerator(tokenizer), tokenizer, new ConversationEncoder(tokenizer, template, context),
                new object(), context, id, lm, null, device.ToString());
        }
        catch { lm.Dispose(); throw; }
    }

    /// <summary>
    /// Renders <paramref name="conversation"/> with the generation prompt and streams the answer's text pieces;
    /// <paramref name="done"/> receives the counts and finish reason once the stream ends. Cancelling stops decoding
    /// between two tokens.
    /// </summary>
    public IAsyncEnumerable<string> GenerateAsync(IReadOnlyList<ChatTurn> conversation, GenerationOptions options,
        Action<ChatGenerationResult> done, CancellationToken ct)
    {
        // The prompt keeps at least half the context (older exchanges are dropped beyond its budget); the answer gets the
        // requested tokens when they fit and what is left otherwise.
        int budget = Math.Min(ContextLength - 1, Math.Max(ContextLength / 2, ContextLength - options.MaxNewTokens));
        var prompt = Encoder.EncodePrompt(conversation, budget, dropTrailingAssistant: false);
        var ids = prompt.Ids.Select(i => (long)i).ToArray();
        var o = options with { EosTokenIds = StopTokenIds, MaxNewTokens = Math.Min(options.MaxNewTokens, ContextLength - ids.Length) };
        return LockedGeneration.RunAsync(Gate, token => _generator.Stream(ids, o, token),
            () => done(new ChatGenerationResult(ids.Length, _generator.LastTokenCount, _generator.LastFinishReason, prompt.Truncated)),
            () => _disposed || (Transformer?.IsDisposed ?? false), ct);
    }

    /// <summary>Loads the template; a missing or bad one names the chat client's own setting as well.</summary>
    static ChatTemplate ClientTemplate(Func<ChatTemplate> load)
    {
        try { return load(); }
        catch (ChatTemplateException e)
        {
            throw new ChatTemplateException(e.Message + " For a chat client: QuanTAChatClientOptions.ChatTemplate (quanta serve --chat-template).", e);
        }
    }

    /// <summary>Number of tokens of <paramref name="text"/> (no special tokens added).</summary>
    public int CountTokens(string text) => _tokenizer.Encode(text, addSpecialTokens: false).Length;

    /// <summary>Frees a model the host owns, after the request that holds the model (if any) has finished.</summary>
    public void Dispose()
    {
        lock (Gate)
        {
            if (_disposed) return;
            _disposed = true;
            _owned?.Dispose();
        }
    }
}
