using System.Runtime.CompilerServices;
using QuanTA.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Generation;

/// <summary>
/// Autoregressive decoding for a <see cref="CausalLM"/>: greedy or sampled (with repetition, frequency and presence
/// penalties, see <see cref="TokenPenalties"/>), with a KV cache, eos and stop strings,
/// batched prompts (left-padded; positions come from the attention mask, so padding does not change results), and
/// token streaming. Kept apart from the model, like ML.NET GenAI's pipelines.
/// </summary>
public sealed class TextGenerator
{
    readonly CausalLM _model;
    readonly ITextCodec? _codec;

    /// <summary>Creates a generator; <paramref name="codec"/> is needed for the text methods and stop strings.</summary>
    public TextGenerator(CausalLM model, ITextCodec? codec = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _codec = codec;
    }

    /// <summary>
    /// Generates up to MaxNewTokens ids per prompt and returns only the new ids (an eos, if produced, is the last id).
    /// Prompts of different lengths are left-padded with config.pad_token_id (else eos, else 0).
    /// </summary>
    public long[][] GenerateIds(IReadOnlyList<IReadOnlyList<long>> prompts, GenerationOptions options)
    {
        var result = prompts.Select(_ => new List<long>()).ToArray();
        foreach (var step in Steps(prompts, options, null, CancellationToken.None))
            for (var b = 0; b < step.Length; b++)
                if (step[b] is long t) result[b].Add(t);
        return result.Select(r => r.ToArray()).ToArray();
    }

    /// <summary>Generates continuations of text prompts (prompt not repeated), cut at eos and at the first stop string.</summary>
    public string[] Generate(IReadOnlyList<string> prompts, GenerationOptions options)
    {
        var codec = Codec();
        var ids = prompts.Select(p => (IReadOnlyList<long>)codec.Encode(p).Select(i => (long)i).ToArray()).ToList();
        var gen = prompts.Select(_ => new List<int>()).ToArray();
        var cut = new string?[prompts.Count];
        foreach (var step in Steps(ids, options, (b, id) => StopCheck(gen[b], id, options, out cut[b]), CancellationToken.None))
        { }
        return cut.Select((c, b) => c ?? codec.Decode(gen[b])).ToArray();
    }

    /// <summary>Generates a continuation of one prompt.</summary>
    public string Generate(string prompt, GenerationOptions options) => Generate([prompt], options)[0];

    /// <summary>
    /// Streams the continuation of <paramref name="prompt"/> as text pieces as soon as they are final (a piece that could
    /// still become a stop string or an incomplete UTF-8 character is held back).
    /// </summary>
    public IAsyncEnumerable<string> StreamAsync(string prompt, GenerationOptions options, CancellationToken cancellationToken = default) =>
        StreamAsync(Codec().Encode(prompt).Select(i => (long)i).ToArray(), options, cancellationToken);

    /// <summary>
    /// Streams the continuation of already tokenized <paramref name="promptIds"/> (e.g. a chat template's rendering, which
    /// carries its own bos) as text pieces; see <see cref="Stream"/>.
    /// </summary>
    public async IAsyncEnumerable<string> StreamAsync(IReadOnlyList<long> promptIds, GenerationOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await Task.Yield();
        foreach (var piece in Stream(promptIds, options, cancellationToken))
        {
            yield return piece;
            await Task.Yield();
        }
    }

    /// <summary>
    /// Synchronous streaming: yields text pieces of the continuation of <paramref name="promptIds"/> as soon as they are
    /// final (a piece that could still become a stop string, or that ends in an incomplete UTF-8 character, is held back).
    /// Each step's forward runs inside its own no-grad and dispose scope, so the caller may resume the enumeration on any
    /// thread. <see cref="LastFinishReason"/> and <see cref="LastTokenCount"/> tell how it ended.
    /// </summary>
    public IEnumerable<string> Stream(IReadOnlyList<long> promptIds, GenerationOptions options, CancellationToken cancellationToken = default)
    {
        var codec = Codec();
        var ids = new List<IReadOnlyList<long>> { promptIds };
        var gen = new List<int>();
        var holdBack = options.StopStrings.Count == 0 ? 0 : options.StopStrings.Max(s => s.Length) - 1;
        var emitted = 0;
        string? final = null;
        foreach (var _ in Steps(ids, options, (b, id) => StopCheck(gen, id, options, out final), cancellationToken))
        {
            if (final is not null) break;
            var text = codec.Decode(gen);
            var end = text.Length;
            while (end > 0 && text[end - 1] == '\uFFFD') end--;                              // an unfinished UTF-8 sequence may still complete
            var safe = Math.Min(end, text.Length - holdBack);
            while (safe > emitted && char.IsHighSurrogate(text[safe - 1])) safe--;
            if (safe > emitted) { yield return text[emitted..safe]; emitted = safe; }
        }
        if (final is not null) LastFinishReason = GenerationFinishReason.StopString;
        final ??= codec.Decode(gen);
        if (final.Length > emitted) yield return final[emitted..];
    }

    /// <summary>Number of tokens produced by the last generation call (all rows together, eos included).</summary>
    public int LastTokenCount { get; private set; }

    /// <summary>Why the last single-prompt generation ended (for batches: the last row's reason).</summary>
    public GenerationFinishReason LastFinishReason { get; private set; }

    ITextCodec Codec() => _codec ?? throw new InvalidOperationException("This TextGenerator has no text codec; pass one to the constructor or use GenerateIds.");

    /// <summary>Records a new id; returns true (and the cut text) when the decoded continuation contains a stop string.</summary>
    bool StopCheck(List<int> gen, long id, GenerationOptions o, out string? cut)
    {
        cut = null;
        var eos = o.EosTokenIds ?? _model.Config.EosTokenIds;
        if (eos.Contains((int)id)) return false;                                            // eos is not text
        gen.Add((int)id);
        if (o.StopStrings.Count == 0) return false;
        var text = _codec!.Decode(gen);
        var at = o.StopStrings.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        if (at < 0) return false;
        cut = text[..at];
        return true;
    }

    /// <summary>
    /// The decoding loop. Yields, per step, the new id of every row (null for rows already finished).
    /// <paramref name="onToken"/> returns true to finish a row (a stop string was hit).
    /// </summary>
    IEnumerable<long?[]> Steps(IReadOnlyList<IReadOnlyList<long>> prompts, GenerationOptions o, Func<int, long, bool>? onToken, CancellationToken ct)
    {
        o.Validate();
        if (prompts.Count == 0) yield break;
        if (prompts.Any(p => p.Count == 0)) throw new ArgumentException("Every prompt needs at least one token (e.g. bos).", nameof(prompts));
        if (o.StopStrings.Count > 0 && _codec is null) throw new InvalidOperationException("Stop strings need a text codec.");
        var cfg = _model.Config;
        var eos = (o.EosTokenIds ?? cfg.EosTokenIds).Select(i => (long)i).ToHashSet();
        long pad = cfg.PadTokenId ?? (eos.Count > 0 ? eos.First() : 0);
        int B = prompts.Count, T0 = prompts.Max(p => p.Count);
        bool padded = prompts.Any(p => p.Count != T0);
        LastTokenCount = 0;
        LastFinishReason = GenerationFinishReason.MaxTokens;

        // Left-padded token and mask rows, kept on the host and grown by one column per step.
        var tokens = prompts.Select(p => Enumerable.Repeat(pad, T0 - p.Count).Concat(p).ToList()).ToArray();
        var mask = prompts.Select(p => Enumerable.Repeat(0L, T0 - p.Count).Concat(Enumerable.Repeat(1L, p.Count)).ToList()).ToArray();
        var done = new bool[B];
        var device = _model.Device;
        using var cache = o.UseCache ? _model.CreateCache() : null;
        using var penalties = o.HasPenalties ? new TokenPenalties(prompts, o) : null;    // counts what each row has seen
        using var rng = o.Greedy ? null : (o.Seed is long s ? new torch.Generator((ulong)s, device) : new torch.Generator((ulong)Random.Shared.NextInt64(), device));

        for (var step = 0; step < o.MaxNewTokens && !done.All(d => d); step++)
        {
            ct.ThrowIfCancellationRequested();
            long[] next;
            using (var scope = NewDisposeScope())
            using (var noGrad = no_grad())                                               // per step: the caller may change threads between steps
            {
                var S = tokens[0].Count;
                var fromCol = cache is null || step == 0 ? 0 : S - 1;                   // with a cache only the newest token is fed
                var ids = tensor(tokens.SelectMany(r => r.Skip(fromCol)).ToArray(), dtype: ScalarType.Int64, device: device).view(B, S - fromCol);
                // Without padding (one prompt, or prompts of one length) the mask is all ones: leave it out, which spares
                // the model a host-to-device copy and a check that waits for the device at every step.
                var m = padded ? tensor(mask.SelectMany(r => r).ToArray(), dtype: ScalarType.Int64, device: device).view(B, S) : null;
                var logits = _model.forward(ids, m, cache: cache, lastTokenOnly: true)[.., -1];   // (B, V)
                var sampled = LogitsSampler.Next(logits, o, rng, penalties);                  // (B)
                penalties?.Record(sampled);                                                 // rows already done only add to their own counts
                next = sampled.cpu().data<long>().ToArray();
            }
            var emittedNow = new long?[B];
            for (var b = 0; b < B; b++)
            {
                var t = done[b] ? pad : next[b];
                tokens[b].Add(t); mask[b].Add(1);
                if (done[b]) continue;
                emittedNow[b] = t;
                LastTokenCount++;
                if (eos.Contains(t)) { done[b] = true; LastFinishReason = GenerationFinishReason.EndOfSequence; }
                if (onToken?.Invoke(b, t) == true) { done[b] = true; LastFinishReason = GenerationFinishReason.StopString; }
            }
            yield return emittedNow;
        }
    }
}

/// <summary>Why a generation ended.</summary>
public enum GenerationFinishReason
{
    /// <summary>MaxNewTokens were generated.</summary>
    MaxTokens,
    /// <summary>An end-of-sequence token (eos or the chat template's end-of-turn token) was generated.</summary>
    EndOfSequence,
    /// <summary>A stop string appeared in the text.</summary>
    StopString,
}
