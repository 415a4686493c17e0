using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace QuanTA.Serving.Tests;

/// <summary>
/// A deterministic fake model: answers with the last user message reversed, one "token" per word. It honours
/// <see cref="ChatOptions.MaxOutputTokens"/> (finish reason length) and <see cref="ChatOptions.StopSequences"/>, reports
/// usage (input tokens = words in all messages), and records what it was called with.
/// </summary>
internal sealed class EchoChatClient : IChatClient
{
    private readonly object _gate = new();

    /// <summary>Delay before each streamed word (cancellation tests).</summary>
    public TimeSpan WordDelay { get; init; }

    /// <summary>Thrown by both methods instead of answering (after <see cref="ThrowAfterWords"/> streamed words).</summary>
    public Exception? Failure { get; init; }

    public int ThrowAfterWords { get; init; }

    public ChatOptions? LastOptions { get; private set; }

    public IList<ChatMessage>? LastMessages { get; private set; }

    /// <summary>Completes once a call's cancellation token fired while the call was running.</summary>
    public TaskCompletionSource CancellationObserved { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The answer's pieces (words with their separating spaces), its finish reason and usage.</summary>
    public static (List<string> Pieces, ChatFinishReason Reason, UsageDetails Usage) Answer(
        IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        var list = messages.ToList();
        string reply = new(list.Last(m => m.Role == ChatRole.User).Text.Reverse().ToArray());
        foreach (var stop in options?.StopSequences ?? [])
        {
            int at = reply.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0) reply = reply[..at];
        }
        var words = reply.Split(' ');
        var reason = ChatFinishReason.Stop;
        if (options?.MaxOutputTokens is { } max && words.Length > max)
        {
            words = words[..max];
            reason = ChatFinishReason.Length;
        }
        var pieces = words.Select((w, i) => i < words.Length - 1 ? w + " " : w).ToList();
        int input = list.Sum(m => m.Text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length);
        var usage = new UsageDetails { InputTokenCount = input, OutputTokenCount = pieces.Count, TotalTokenCount = input + pieces.Count };
        return (pieces, reason, usage);
    }

    public Task<ChatResponse> GetResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        Record(messages, options);
        cancellationToken.ThrowIfCancellationRequested();
        if (Failure is not null) throw Failure;
        var (pieces, reason, usage) = Answer(messages, options);
        return Task.FromResult(new ChatResponse(new ChatMessage(ChatRole.Assistant, string.Concat(pieces)))
        {
            FinishReason = reason,
            Usage = usage,
            ModelId = options?.ModelId,
        });
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(
        IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        Record(messages, options);
        using var registration = cancellationToken.Register(() => CancellationObserved.TrySetResult());
        var (pieces, reason, usage) = Answer(messages, options);
        for (int i = 0; i < pieces.Count; i++)
        {
            if (Failure is not null && i == ThrowAfterWords) throw Failure;
            if (WordDelay > TimeSpan.Zero) await Task.Delay(WordDelay, cancellationToken);
            cancellationToken.ThrowIfCancellationRequested();
            yield return new ChatResponseUpdate(ChatRole.Assistant, pieces[i]);
        }
        yield return new ChatResponseUpdate { Role = ChatRole.Assistant, FinishReason = reason, Contents = [new UsageContent(usage)] };
    }

    private void Record(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        lock (_gate)
        {
            LastMessages = messages.ToList();
            LastOptions = options;
        }
    }

    public object? GetService(Type serviceType, object? serviceKey = null) => null;

    public void Dispose() { }
}
