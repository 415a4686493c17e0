using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Generation;

/// <summary>
/// The repetition, frequency and presence penalties of one generation call: which tokens each row has seen (prompt and
/// generated text) and how often each was generated, kept on the model's device as (B, V) tensors and updated after every
/// step, so a step's penalties cost a few element-wise ops whatever the sequence length.
/// </summary>
/// <remarks>
/// Order and formulas, applied to the last-position logits in float32 before temperature / top-k / top-p and before greedy
/// argmax:
/// <list type="number">
/// <item>repetition penalty r, as transformers' <c>RepetitionPenaltyLogitsProcessor</c>
/// (src/transformers/generation/logits_process.py: <c>torch.where(score &lt; 0, score * penalty, score / penalty)</c> on
/// the tokens of input_ids, i.e. prompt and generated text, once per token); generate() puts it in the processor list
/// before the warpers (temperature, top-k, top-p) that sampling appends;</item>
/// <item>frequency penalty f: logit −= f · count(token in the generated text);</item>
/// <item>presence penalty p: logit −= p · [count &gt; 0].</item>
/// </list>
/// Frequency and presence follow OpenAI's definition and vLLM's order (repetition, then frequency, then presence, all
/// before temperature). One difference from transformers: the left padding of a batched prompt is not counted as text.
/// </remarks>
public sealed class TokenPenalties : IDisposable
{
    readonly IReadOnlyList<IReadOnlyList<long>> _prompts;
    readonly GenerationOptions _options;
    Tensor? _inPrompt;            // (B, V) bool: the token occurs in the row's prompt
    Tensor? _generatedCounts;     // (B, V) float32: times the token was generated in this row

    /// <summary>Penalties for a batch of (unpadded) prompts; the device tensors are created at the first step.</summary>
    public TokenPenalties(IReadOnlyList<IReadOnlyList<long>> prompts, GenerationOptions options)
    {
        _prompts = prompts ?? throw new ArgumentNullException(nameof(prompts));
        _options = options ?? throw new ArgumentNullException(nameof(options));
    }

    /// <summary>logits (B, V) → penalized float32 scores (B, V), from what the rows have seen so far.</summary>
    public Tensor Apply(Tensor logits)
    {
        EnsureState(logits);
        return Apply(logits, _inPrompt!, _generatedCounts!, _options);
    }

    /// <summary>Counts this step's tokens <paramref name="next"/> (B) as generated. Call once per step, after sampling.</summary>
    public void Record(Tensor next)
    {
        if (_generatedCounts is null) throw new InvalidOperationException("Record is called after Apply: the first step creates the counts.");
        using var scope = NewDisposeScope();
        var rows = next.view(-1, 1).to(_generatedCounts.device);                                  // (B, 1)
        _generatedCounts.scatter_add_(1, rows, ones(rows.shape, ScalarType.Float32, _generatedCounts.device));
    }

    /// <summary>
    /// The penalties as pure math (the tested formulas): <paramref name="logits"/> (B, V); <paramref name="inPrompt"/>
    /// (B, V) bool; <paramref name="generatedCounts"/> (B, V) counts. Returns float32 scores (B, V).
    /// </summary>
    public static Tensor Apply(Tensor logits, Tensor inPrompt, Tensor generatedCounts, GenerationOptions o)
    {
        using var scope = NewDisposeScope();
        var scores = logits.to_type(ScalarType.Float32);                                        // (B, V)
        var counts = generatedCounts.to_type(ScalarType.Float32);                               // (B, V)
        var generated = counts > 0;                                                             // (B, V) bool
        if (o.RepetitionPenalty != 1.0)
        {
            var penalized = where(scores < 0, scores * o.RepetitionPenalty, scores / o.RepetitionPenalty);
            scores = where(inPrompt.logical_or(generated), penalized, scores);                  // once per seen token
        }
        if (o.FrequencyPenalty != 0) scores = scores - counts * o.FrequencyPenalty;
        if (o.PresencePenalty != 0) scores = scores - generated.to_type(ScalarType.Float32) * o.PresencePenalty;
        return scores.MoveToOuterDisposeScope();
    }

    void EnsureState(Tensor logits)
    {
        long B = logits.shape[0], V = logits.shape[^1];
        if (_inPrompt is not null)
        {
            if (_inPrompt.shape[0] != B || _inPrompt.shape[1] != V)
                throw new ArgumentException($"The logits are ({B}, {V}) but the penalties were set up for ({_inPrompt.shape[0]}, {_inPrompt.shape[1]}).", nameof(logits));
            return;
        }
        if (_prompts.Count != B)
            throw new ArgumentException($"The logits have {B} rows but the penalties were given {_prompts.Count} prompts.", nameof(logits));
        var seen = new bool[B * V];
        for (var b = 0; b < B; b++)
            foreach (var id in _prompts[b])
            {
                if (id < 0 || id >= V) throw new ArgumentException($"Prompt {b} holds token id {id}, outside the model's vocabulary of {V}.");
                seen[b * V + id] = true;
            }
        using var scope = NewDisposeScope();
        _inPrompt = tensor(seen, [B, V]).to(logits.device).DetachFromDisposeScope();
        _generatedCounts = zeros(B, V, ScalarType.Float32, logits.device).DetachFromDisposeScope();
    }

    /// <summary>Frees the device tensors.</summary>
    public void Dispose()
    {
        _inPrompt?.Dispose(); _inPrompt = null;
        _generatedCounts?.Dispose(); _generatedCounts = null;
    }
}
