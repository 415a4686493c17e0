namespace QuanTA.MLNet.Chat;

/// <summary>Settings of a <see cref="QuanTAChatClient"/>. Per-request settings come from Microsoft.Extensions.AI's
/// <c>ChatOptions</c>; these are the defaults and limits around them.</summary>
public sealed class QuanTAChatClientOptions
{
    /// <summary>Chat template: null (default) takes the one the model was fine-tuned with
    /// (<see cref="QuanTAFineTuneOptions.ChatTemplate"/>), else the base model's own <c>chat_template</c>; otherwise a built-in
    /// name (<c>llama2</c>, <c>llama3</c>, <c>mistral</c>, <c>chatml</c>, <c>qwen2</c>), a <c>.jinja</c> file or the template text.</summary>
    public string? ChatTemplate;

    /// <summary>Tokens generated when a request sets no <c>MaxOutputTokens</c>. Default 256.</summary>
    public int DefaultMaxOutputTokens = 256;

    /// <summary>Prompt + output token budget; null (default) takes config.json's <c>max_position_embeddings</c>. Older
    /// exchanges of a longer conversation are dropped (the system prompt is kept).</summary>
    public int? MaxContextTokens;

    /// <summary>The model id reported in responses and by <c>GetService(typeof(ChatClientMetadata))</c>; null (default) takes
    /// the model file or folder name.</summary>
    public string? ModelId;

    /// <summary>Device for models the client loads itself (a model folder or a saved .zip): <c>cpu</c> (default), <c>cuda</c> or
    /// <c>cuda:N</c>. A fitted transformer stays where it is.</summary>
    public string Device = "cpu";

    /// <summary>Weight precision for a model folder the client loads: null (default: fp32 on the CPU, bf16 on CUDA), or
    /// <c>fp32</c>, <c>fp16</c>, <c>bf16</c>.</summary>
    public string? DType;

    /// <summary>Checks the settings; throws an <see cref="ArgumentException"/> naming the first bad one.</summary>
    public void Validate()
    {
        if (DefaultMaxOutputTokens <= 0)
            throw new ArgumentException($"QuanTAChatClientOptions.DefaultMaxOutputTokens must be positive; got {DefaultMaxOutputTokens}.");
        if (MaxContextTokens is <= 1)
            throw new ArgumentException($"QuanTAChatClientOptions.MaxContextTokens must be at least 2; got {MaxContextTokens}.");
    }
}
