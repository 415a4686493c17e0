using Microsoft.Extensions.Logging;

namespace QuanTA.Serving;

/// <summary>
/// Settings of the OpenAI-compatible endpoint (<see cref="OpenAIChatEndpoints"/>) and of the server that hosts it
/// (<see cref="OpenAIServer"/>). Every property has a safe default: localhost only, no authentication, 1 MiB requests.
/// </summary>
public sealed class OpenAIServerOptions
{
    /// <summary>
    /// The one model id the server serves: returned by <c>GET /v1/models</c>, echoed in every completion, and the only
    /// value accepted in a request's <c>model</c> field (an omitted <c>model</c> is accepted too; any other value gets
    /// 404 <c>model_not_found</c>). Default <c>"quanta"</c>.
    /// </summary>
    public string ModelId { get; set; } = "quanta";

    /// <summary>
    /// When set, every <c>/v1/...</c> request must carry <c>Authorization: Bearer &lt;ApiKey&gt;</c> or it gets 401 with an
    /// OpenAI error body. <c>/health</c> stays open. Default <see langword="null"/>: no authentication.
    /// </summary>
    public string? ApiKey { get; set; }

    /// <summary>Largest accepted request body in bytes; larger bodies get 413. Default 1 MiB.</summary>
    public long MaxRequestBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// Largest <c>max_tokens</c> / <c>max_completion_tokens</c> a request may ask for; above it the request gets 400 naming
    /// the limit. Default 4096.
    /// </summary>
    public int MaxTokensLimit { get; set; } = 4096;

    /// <summary>
    /// <see cref="Microsoft.Extensions.AI.ChatOptions.MaxOutputTokens"/> used when a request names no limit.
    /// Default 512; <see langword="null"/> leaves the choice to the chat client.
    /// </summary>
    public int? DefaultMaxTokens { get; set; } = 512;

    /// <summary>
    /// Address <see cref="OpenAIServer.StartAsync"/> listens on: an IP literal, <c>"localhost"</c> (IPv4 loopback) or
    /// <c>"*"</c> (every interface). Default <c>"127.0.0.1"</c>: reachable from this machine only.
    /// </summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>TCP port <see cref="OpenAIServer.StartAsync"/> listens on; 0 picks a free port. Default 8080.</summary>
    public int Port { get; set; } = 8080;

    /// <summary>
    /// Logger factory for the server's own messages (failed generations, Kestrel). Default <see langword="null"/>: the
    /// endpoint logs through the host's logging and <see cref="OpenAIServer"/> logs nothing.
    /// </summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>A copy, so that the endpoints keep the settings they were mapped with.</summary>
    internal OpenAIServerOptions Snapshot() => (OpenAIServerOptions)MemberwiseClone();

    /// <summary>Throws <see cref="ArgumentException"/> when a setting is out of range.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ModelId))
            throw new ArgumentException("ModelId must be a non-empty model id.", nameof(ModelId));
        if (ApiKey is { Length: 0 })
            throw new ArgumentException("ApiKey must be null (no authentication) or non-empty.", nameof(ApiKey));
        if (MaxRequestBytes <= 0)
            throw new ArgumentException("MaxRequestBytes must be positive.", nameof(MaxRequestBytes));
        if (MaxTokensLimit <= 0)
            throw new ArgumentException("MaxTokensLimit must be positive.", nameof(MaxTokensLimit));
        if (DefaultMaxTokens is { } d && (d <= 0 || d > MaxTokensLimit))
            throw new ArgumentException("DefaultMaxTokens must be between 1 and MaxTokensLimit.", nameof(DefaultMaxTokens));
        if (Port is < 0 or > 65535)
            throw new ArgumentException("Port must be between 0 and 65535.", nameof(Port));
        if (string.IsNullOrWhiteSpace(Host))
            throw new ArgumentException("Host must be an IP address, \"localhost\" or \"*\".", nameof(Host));
    }
}
