namespace QuanTA.Core.Generation;

/// <summary>Decoding settings (transformers' <c>GenerationConfig</c> subset). Validated by <see cref="Validate"/>.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most tokens to generate after the prompt. Default 32.</summary>
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>True: argmax at every step (the default). False: sample with temperature / top-k / top-p.</summary>
    public bool Greedy { get; init; } = true;
    /// <summary>Sampling temperature (&gt; 0). Default 1.</summary>
    public double Temperature { get; init; } = 1.0;
    /// <summary>Keep only the k most likely tokens before sampling; 0 = off (default).</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p; 1 = off (default).</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>Seed of the sampling generator; null = nondeterministic.</summary>
    public long? Seed { get; init; }
    /// <summary>Tokens that end a sequence; null = the model config's eos_token_id(s).</summary>
    public IReadOnlyList<int>? EosTokenIds { get; init; }
    /// <summary>Strings that end a sequence (the text is cut before them). Needs a text codec.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Reuse past keys/values (default). False recomputes the whole sequence every step (slow; for checks).</summary>
    public bool UseCache { get; init; } = true;
    /// <summary>
    /// transformers' <c>repetition_penalty</c> (CTRL): the logit of every token that occurs in the prompt or in the text
    /// generated so far is divided by this value when positive and multiplied by it when negative, once per token however
    /// often it occurred. &gt; 1 discourages repetition (1.1–1.3 is usual), &lt; 1 encourages it; must be &gt; 0.
    /// Default 1 = off. Padding of a batched prompt is not counted.
    /// </summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>
    /// OpenAI's <c>frequency_penalty</c>: subtracted from a token's logit once per time the token was generated in this
    /// completion (the prompt does not count). In [−2, 2]; default 0 = off.
    /// </summary>
    public double FrequencyPenalty { get; init; }
    /// <summary>
    /// OpenAI's <c>presence_penalty</c>: subtracted from the logit of every token generated at least once in this
    /// completion (the prompt does not count). In [−2, 2]; default 0 = off.
    /// </summary>
    public double PresencePenalty { get; init; }

    /// <summary>Largest magnitude OpenAI allows for <see cref="FrequencyPenalty"/> and <see cref="PresencePenalty"/>.</summary>
    public const double MaxAbsOpenAIPenalty = 2.0;

    /// <summary>True when any of the repetition, frequency or presence penalties changes the logits.</summary>
    public bool HasPenalties => RepetitionPenalty != 1.0 || FrequencyPenalty != 0 || PresencePenalty != 0;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentException($"MaxNewTokens must be ≥ 0; got {MaxNewTokens}.");
        if (!Greedy)
        {
            if (!(Temperature > 0) || double.IsInfinity(Temperature)) throw new ArgumentException($"Temperature must be a positive number; got {Temperature}.");
            if (TopK < 0) throw new ArgumentException($"TopK must be ≥ 0 (0 = off); got {TopK}.");
            if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"TopP must be in (0, 1]; got {TopP}.");
        }
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new ArgumentException("StopStrings must not contain empty strings.");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty))
            throw new ArgumentException($"RepetitionPenalty must be a positive number (1 = off, > 1 discourages repetition); got {RepetitionPenalty}.");
        if (!(Math.Abs(FrequencyPenalty) <= MaxAbsOpenAIPenalty))
            throw new ArgumentException($"FrequencyPenalty must be between -2 and 2 (0 = off); got {FrequencyPenalty}.");
        if (!(Math.Abs(PresencePenalty) <= MaxAbsOpenAIPenalty))
            throw new ArgumentException($"PresencePenalty must be between -2 and 2 (0 = off); got {PresencePenalty}.");
    }
}

/// <summary>Turns text into token ids and back (implemented over the model folder's tokenizer).</summary>
public interface ITextCodec
{
    /// <summary>Token ids of a prompt, with whatever special tokens the tokenizer config adds (e.g. bos).</summary>
    IReadOnlyList<int> Encode(string text);

    /// <summary>Text of generated ids, special tokens skipped.</summary>
    string Decode(IReadOnlyList<int> ids);
}
