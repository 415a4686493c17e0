using System.Threading.Channels;
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

    ChatModelHost(TextGenerator generator, ITextTokenizer tokenizer, ConversationEncoder encoder, object gate, int contextLength,
        string modelId, IDisposable? owned, QuanTAFineTuneTransformer? transformer, string device)
    {
        Device = device;
        _generator = generator; _tokenizer = tokenizer; Encoder = encoder; Gate = gate; ContextLength = contextLength;
        ModelId = modelId; _owned = owned; Transformer = transformer;
        // Stop at eos (and generation_config's list) and at the special token that ends an assistant turn in this template.
        var endOfTurn = tokenizer.Encode(encoder.Template.AssistantTurnSuffix, addSpecialTokens: false).Where(tokenizer.IsSpecial);
        StopTokenIds = tokenizer.EosIds.Concat(endOfTurn).Distinct().ToArray();
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
        var template = o.ChatTemplate is null ? model.Chat.Template : ChatTemplate.FromModelFolder(model.BaseModelPath, o.ChatTemplate);
        int context = o.MaxContextTokens ?? CoreBackend.ContextLength(model.BaseModelPath);
        return new ChatModelHost(model.CreateGenerator(), model.Tokenizer, new ConversationEncoder(model.Tokenizer, template, context),
            transformer.SyncRoot, context, o.ModelId ?? defaultId, owns, transformer, model.Device.ToString());
    }

    /// <summary>Over a Hugging Face model folder with an optional adapter file.</summary>
    public static ChatModelHost FromFolder(string modelDir, string? adapterPath, QuanTAChatClientOptions o)
    {
        TorchRuntime.Initialize();
        var device = TorchRuntime.ParseDevice(o.Device);
        var dtype = o.DType?.Trim().ToLowerInvariant() switch
        {
            null or "" or "auto" => (torch.ScalarType?)null,
            "fp32" or "float32" => torch.ScalarType.Float32,
            "fp16" or "float16" => torch.ScalarType.Float16,
            "bf16" or "bfloat16" => torch.ScalarType.BFloat16,
            var s => throw new ArgumentException($"QuanTAChatClientOptions.DType '{s}' is not one of fp32, fp16, bf16."),
        };
        var (lm, tokenizer, contextLength) = CoreBackend.LoadForChat(modelDir, adapterPath, device, dtype);
        try
        {
            var template = ChatTemplate.FromModelFolder(modelDir, o.ChatTemplate);
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
    public async IAsyncEnumerable<string> GenerateAsync(IReadOnlyList<ChatTurn> conversation, GenerationOptions options,
        Action<ChatGenerationResult> done, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        // The prompt may fill the context but one token (older exchanges are dropped beyond that); the answer gets what is left.
        var prompt = Encoder.EncodePrompt(conversation, ContextLength - 1);
        var ids = prompt.Ids.Select(i => (long)i).ToArray();
        var options2 = options with { EosTokenIds = StopTokenIds, MaxNewTokens = Math.Min(options.MaxNewTokens, ContextLength - ids.Length) };
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);   // also cancelled when the caller stops reading
        var token = stop.Token;
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var worker = Task.Factory.StartNew(() =>
        {
            Exception? error = null;
            try
            {
                lock (Gate)
                {
                    token.ThrowIfCancellationRequested();
                    foreach (var piece in _generator.Stream(ids, options2, token)) channel.Writer.TryWrite(piece);
                    done(new ChatGenerationResult(ids.Length, _generator.LastTokenCount, _generator.LastFinishReason, prompt.Truncated));
                }
            }
            catch (Exception e) { error = e; }
            channel.Writer.TryComplete();
            return error;
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            await foreach (var piece in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
                yield return piece;
        }
        finally { if (!worker.IsCompleted) stop.Cancel(); }
        if (await worker.ConfigureAwait(false) is { } failure)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
    }

    /// <summary>Number of tokens of <paramref name="text"/> (no special tokens added).</summary>
    public int CountTokens(string text) => _tokenizer.Encode(text, addSpecialTokens: false).Length;

    public void Dispose() => _owned?.Dispose();
}
