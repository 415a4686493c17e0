using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using QuanTA.Core.Chat;
using QuanTA.Core.Generation;

namespace QuanTA.MLNet.Chat;

/// <summary>
/// Microsoft.Extensions.AI's <see cref="IChatClient"/> over a QuanTA fine-tuned model: a fitted generation transformer, a
/// model .zip saved with <c>mlContext.Model.Save</c>, or a Hugging Face model folder with an optional adapter file.
/// Conversations are rendered with the model's chat template; the answer is decoded greedily unless the request asks for
/// sampling (<c>Temperature</c> &gt; 0, <c>TopP</c> or <c>TopK</c>), and streamed as it is decoded (UTF-8 safe, cancellable).
/// <c>FrequencyPenalty</c>, <c>PresencePenalty</c> and <c>AdditionalProperties["repetition_penalty"]</c> are honoured
/// (see <see cref="GenerationOptions"/>).
/// </summary>
/// <remarks>One model serves one request at a time: concurrent requests are queued on the model's lock (the same lock the
/// transformer's <c>Transform</c> takes) and each runs at full speed in turn. The client is safe to share (register it as a
/// singleton with <c>services.AddChatClient(...)</c>).</remarks>
public sealed class QuanTAChatClient : IChatClient
{
    /// <summary>The provider name reported in <see cref="ChatClientMetadata"/>.</summary>
    public const string ProviderName = "QuanTA.MLNet";

    readonly ChatModelHost _host;
    readonly QuanTAChatClientOptions _options;
    readonly ChatClientMetadata _metadata;

    QuanTAChatClient(ChatModelHost host, QuanTAChatClientOptions options)
    {
        _host = host; _options = options;
        _metadata = new ChatClientMetadata(ProviderName, null, host.ModelId);
    }

    /// <summary>A client over a fitted (or loaded) text-generation transformer; the caller keeps owning the transformer.</summary>
    public QuanTAChatClient(QuanTAFineTuneTransformer transformer, QuanTAChatClientOptions? options = null)
        : this(ForTransformer(transformer, Checked(options))) { }

    QuanTAChatClient((ChatModelHost Host, QuanTAChatClientOptions Options) x) : this(x.Host, x.Options) { }

    static (ChatModelHost, QuanTAChatClientOptions) ForTransformer(QuanTAFineTuneTransformer transformer, QuanTAChatClientOptions o) =>
        (ChatModelHost.FromTransformer(transformer ?? throw new ArgumentNullException(nameof(transformer)), o, "quanta-model", owns: null), o);

    /// <summary>Loads a model saved with <c>mlContext.Model.Save</c> (the base model folder must be where it was, or given
    /// as <paramref name="baseModelPath"/>); the client owns and disposes it.</summary>
    public static QuanTAChatClient FromSavedModel(string modelZipPath, string? baseModelPath = null, QuanTAChatClientOptions? options = null)
    {
        options = Checked(options);
        if (!File.Exists(modelZipPath)) throw new FileNotFoundException($"Saved model '{modelZipPath}' not found.", modelZipPath);
        var ml = new MLContext().RegisterQuanTA(baseModelPath);
        TorchSharp.torch.Device device;
        try { device = Core.Runtime.TorchRuntime.ParseDevice(options.Device); }   // the one device parser (also checks CUDA is there)
        catch (ArgumentException e)
        {
            throw new ArgumentException($"QuanTAChatClientOptions.Device '{options.Device}' is not cpu, cuda or cuda:N.", nameof(options), e);
        }
        if (device.type == TorchSharp.DeviceType.CUDA)                     // the saved model loads where the MLContext says
        {
            ml.GpuDeviceId = device.index < 0 ? 0 : device.index;
            ml.FallbackToCpu = false;
        }
        var loaded = ml.Model.LoadWithQuanTA(ml, modelZipPath, out _);
        var transformer = QuanTAFineTuneTransformer.FindIn(loaded) ?? throw new InvalidDataException(
            $"'{modelZipPath}' holds no QuanTA fine-tuned model (no QuanTAFineTuneTransformer in the saved pipeline).");
        var id = options.ModelId ?? Path.GetFileNameWithoutExtension(modelZipPath);
        try { return new QuanTAChatClient(ChatModelHost.FromTransformer(transformer, options, id, loaded as IDisposable ?? transformer), options); }
        catch { (loaded as IDisposable ?? transformer).Dispose(); throw; }
    }

    /// <summary>Loads a Hugging Face causal-LM folder, with an optional adapter file saved by QuanTA.MLNet
    /// (<c>ExportAdapter</c>: a .safetensors file with its .json next to it).</summary>
    public static QuanTAChatClient FromModelFolder(string modelDir, string? adapterPath = null, QuanTAChatClientOptions? options = null)
    {
        options = Checked(options);
        return new QuanTAChatClient(ChatModelHost.FromFolder(modelDir, adapterPath, options), options);
    }

    /// <summary>The model id reported in responses.</summary>
    public string ModelId => _host.ModelId;

    /// <summary>The device the model runs on (<c>cpu</c>, <c>cuda:0</c>, …).</summary>
    public string Device => _host.Device;

    /// <summary>The chat template the conversations are rendered with.</summary>
    public ChatTemplate ChatTemplate => _host.Encoder.Template;

    /// <summary>The exact prompt text a conversation becomes (the template's rendering with the generation prompt).</summary>
    public string RenderPrompt(IEnumerable<ChatMessage> messages, ChatOptions? options = null) =>
        ChatTemplate.Render(ToTurns(messages, options), addGenerationPrompt: true);

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false)) updates.Add(u);
        return updates.ToChatResponse();
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages,
        ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var turns = ToTurns(messages, options);
        var generation = ToGenerationOptions(options, _options.DefaultMaxOutputTokens);
        string responseId = "chatcmpl-" + Guid.NewGuid().ToString("N"), messageId = "msg-" + Guid.NewGuid().ToString("N");
        var created = DateTimeOffset.UtcNow;
        ChatGenerationResult? result = null;
        await foreach (var piece in _host.GenerateAsync(turns, generation, r => result = r, cancellationToken).ConfigureAwait(false))
            yield return Update(new ChatResponseUpdate(ChatRole.Assistant, piece));
        var r = result ?? throw new InvalidOperationException("The generation ended without a result.");
        var usage = new UsageDetails { InputTokenCount = r.PromptTokens, OutputTokenCount = r.OutputTokens, TotalTokenCount = r.PromptTokens + r.OutputTokens };
        var last = new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(usage)])
        {
            FinishReason = r.FinishReason == GenerationFinishReason.MaxTokens ? ChatFinishReason.Length : ChatFinishReason.Stop,
        };
        if (r.PromptTruncated)
            last.AdditionalProperties = new() { ["prompt_truncated"] = true };   // older exchanges were dropped to fit the context
        yield return Update(last);

        ChatResponseUpdate Update(ChatResponseUpdate u)
        {
            u.ResponseId = responseId; u.MessageId = messageId; u.CreatedAt = created; u.ModelId = _host.ModelId;
            return u;
        }
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType == typeof(QuanTAFineTuneTransformer)) return _host.Transformer;
        if (serviceType == typeof(ChatTemplate)) return _host.Encoder.Template;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <inheritdoc/>
    public void Dispose() => _host.Dispose();

    // ---------------------------------------------------------------- mapping

    /// <summary>Messages as the template sees them: role and text; <c>ChatOptions.Instructions</c> join the system prompt.</summary>
    internal static List<ChatTurn> ToTurns(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = new List<ChatTurn>();
        foreach (var m in messages)
        {
            var unsupported = m.Contents.FirstOrDefault(c => c is not TextContent and not UsageContent);
            if (unsupported is not null)
                throw new NotSupportedException($"A {m.Role.Value} message holds {unsupported.GetType().Name}; this model reads text only.");
            turns.Add(new ChatTurn(m.Role.Value.ToLowerInvariant(), m.Text));
        }
        if (!string.IsNullOrWhiteSpace(options?.Instructions))
        {
            int sys = turns.FindIndex(t => t.Role == ChatTurn.SystemRole);
            if (sys >= 0) turns[sys] = turns[sys] with { Content = turns[sys].Content + "\n" + options.Instructions };
            else turns.Insert(0, new ChatTurn(ChatTurn.SystemRole, options.Instructions));
        }
        if (turns.Count == 0) throw new ArgumentException("The conversation has no messages.", nameof(messages));
        return turns;
    }

    /// <summary>The <c>ChatOptions.AdditionalProperties</c> key read as transformers' / vLLM's repetition penalty.</summary>
    public const string RepetitionPenaltyKey = "repetition_penalty";

    /// <summary>Greedy unless the request samples: Temperature &gt; 0, or TopP / TopK set without a temperature; an explicit
    /// temperature of 0 is always greedy (as OpenAI clients send it). FrequencyPenalty, PresencePenalty and
    /// <c>AdditionalProperties["repetition_penalty"]</c> apply to greedy and sampled decoding alike.</summary>
    internal static GenerationOptions ToGenerationOptions(ChatOptions? o, int defaultMaxOutputTokens)
    {
        bool sample = o?.Temperature is float t0 ? t0 > 0 : o?.TopP is not null || o?.TopK is not null;
        var g = new GenerationOptions
        {
            MaxNewTokens = o?.MaxOutputTokens ?? defaultMaxOutputTokens,
            Greedy = !sample,
            Temperature = o?.Temperature > 0 ? o.Temperature.Value : 1.0,
            TopP = o?.TopP ?? 1.0,
            TopK = o?.TopK ?? 0,
            Seed = o?.Seed,
            StopStrings = o?.StopSequences?.Where(s => !string.IsNullOrEmpty(s)).ToArray() ?? [],
            FrequencyPenalty = o?.FrequencyPenalty ?? 0,
            PresencePenalty = o?.PresencePenalty ?? 0,
            RepetitionPenalty = RepetitionPenalty(o) ?? 1.0,
        };
        if (g.MaxNewTokens <= 0) throw new ArgumentException($"ChatOptions.MaxOutputTokens must be positive; got {g.MaxNewTokens}.");
        try { g.Validate(); }
        catch (ArgumentException e) when (e.Message.StartsWith(nameof(GenerationOptions.RepetitionPenalty), StringComparison.Ordinal))
        {
            throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{RepetitionPenaltyKey}\"]" +
                e.Message[nameof(GenerationOptions.RepetitionPenalty).Length..], e);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"ChatOptions.{e.Message}", e);      // names the ChatOptions property of the same name
        }
        return g;
    }

    /// <summary><c>AdditionalProperties["repetition_penalty"]</c> as a number (any numeric type, a JSON number or a
    /// numeric string); null when absent.</summary>
    static double? RepetitionPenalty(ChatOptions? o)
    {
        if (o?.AdditionalProperties is null || !o.AdditionalProperties.TryGetValue(RepetitionPenaltyKey, out var value) || value is null)
            return null;
        var culture = System.Globalization.CultureInfo.InvariantCulture;
        return value switch
        {
            double d => d,
            float f => f,
            decimal m => (double)m,
            int or long or short or byte or uint or ulong or ushort or sbyte => Convert.ToDouble(value, culture),
            System.Text.Json.JsonElement { ValueKind: System.Text.Json.JsonValueKind.Number } j => j.GetDouble(),
            string s when double.TryParse(s, System.Globalization.NumberStyles.Float, culture, out var parsed) => parsed,
            _ => throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{RepetitionPenaltyKey}\"] must be a number " +
                $"(1 = off, > 1 discourages repetition); got {value} ({value.GetType().Name})."),
        };
    }

    static QuanTAChatClientOptions Checked(QuanTAChatClientOptions? o)
    {
        o ??= new QuanTAChatClientOptions();
        o.Validate();
        return o;
    }
}
