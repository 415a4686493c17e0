using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Training;

/// <summary>
/// Loss functions of fine-tuning, computed in fp32 whatever the logits' dtype (bf16 logits are upcast first, as HF does).
/// </summary>
public static class Losses
{
    /// <summary>Label value that contributes no loss (PyTorch / HF <c>ignore_index</c>).</summary>
    public const long IgnoreIndex = -100;

    /// <summary>
    /// Causal-LM loss as in HF <c>LlamaForCausalLM</c>: position t predicts token t+1, so logits[:, :-1] are scored against
    /// labels[:, 1:]; labels equal to <see cref="IgnoreIndex"/> (prompt, padding) are skipped; the result is the mean over the
    /// target tokens of the whole batch.
    /// </summary>
    /// <param name="logits">[B, T, V] any float dtype.</param>
    /// <param name="labels">[B, T] int64, aligned with the input ids (not shifted), <see cref="IgnoreIndex"/> where no loss is wanted.</param>
    /// <param name="targetTokens">Number of target tokens the mean is over.</param>
    /// <returns>Scalar fp32 loss.</returns>
    /// <exception cref="ArgumentException">wrong ranks/shapes/dtypes, or no target token in the batch.</exception>
    public static Tensor CausalLM(Tensor logits, Tensor labels, out long targetTokens)
    {
        if (logits.dim() != 3) throw new ArgumentException($"Causal-LM logits must be [batch, time, vocab]; got shape [{string.Join(", ", logits.shape)}].", nameof(logits));
        if (labels.dim() != 2 || labels.shape[0] != logits.shape[0] || labels.shape[1] != logits.shape[1])
            throw new ArgumentException($"Labels must be [batch, time] = [{logits.shape[0]}, {logits.shape[1]}] to match the logits; got [{string.Join(", ", labels.shape)}].", nameof(labels));
        if (labels.dtype != ScalarType.Int64) throw new ArgumentException($"Labels must be int64 token ids; got {labels.dtype}.", nameof(labels));
        using var scope = NewDisposeScope();
        var onDevice = labels.to(logits.device);
        targetTokens = CheckedTargets(ShiftedLabels(onDevice), logits.shape[2]);
        return CausalLMUnchecked(logits, onDevice).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The causal-LM loss without host synchronization (no target count, no range check): for labels that were validated on
    /// the host before they were moved to the device, e.g. by <see cref="CountTargets"/>. Same value as <see cref="CausalLM"/>.
    /// </summary>
    public static Tensor CausalLMUnchecked(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        // The labels are shifted, not the logits (as transformers' ForCausalLMLoss does): position t is scored against
        // labels[t + 1] and the last position against nothing, so the (B, T, V) logits are never copied into a slice.
        long vocab = logits.shape[2];
        var flatLogits = logits.to_type(ScalarType.Float32).reshape(-1, vocab);                  // (B·T, V), a view when fp32
        return nn.functional.cross_entropy(flatLogits, ShiftedLabels(labels), ignore_index: IgnoreIndex, reduction: nn.Reduction.Mean)
            .MoveToOuterDisposeScope();
    }

    /// <summary>labels[:, 1:] followed by an ignored last position, flattened (B·T): position t is scored against labels[t + 1].</summary>
    internal static Tensor ShiftedLabels(Tensor labels) =>
        cat([labels[.., 1..], full(labels.shape[0], 1, IgnoreIndex, dtype: labels.dtype, device: labels.device)], 1).reshape(-1);

    /// <summary>The number of target tokens in <paramref name="shifted"/> (<see cref="ShiftedLabels"/>), after checking there is
    /// at least one and every one lies in 0..vocab−1 (a device sync).</summary>
    internal static long CheckedTargets(Tensor shifted, long vocab)
    {
        using var scope = NewDisposeScope();
        var mask = shifted.ne(IgnoreIndex);
        long targets = mask.sum().item<long>();
        if (targets == 0)
            throw new ArgumentException("The batch has no target token: every label after the first position is -100 " +
                                        "(is the prompt longer than the maximum sequence length, truncating the whole answer?).", "labels");
        CheckRange(shifted.masked_select(mask), vocab, "vocabulary size");
        return targets;
    }

    /// <summary>Host-side check of causal-LM labels [B, T] (row-major): counts the target tokens (those after the first
    /// position that are not <see cref="IgnoreIndex"/>) and throws if one lies outside 0..vocab−1.</summary>
    public static long CountTargets(ReadOnlySpan<long> labels, int time, long vocab)
    {
        long n = 0;
        for (int i = 0; i < labels.Length; i++)
        {
            if (i % time == 0 || labels[i] == IgnoreIndex) continue;
            if (labels[i] < 0 || labels[i] >= vocab)
                throw new ArgumentException($"Label values must lie in 0..{vocab - 1} (the vocabulary size); found {labels[i]}.", nameof(labels));
            n++;
        }
        return n;
    }

    /// <summary>Classification cross-entropy (mean over the batch).</summary>
    /// <param name="logits">[B, C] any float dtype.</param>
    /// <param name="labels">[B] int64 class indices in 0..C-1.</param>
    /// <returns>Scalar fp32 loss.</returns>
    public static Tensor Classification(Tensor logits, Tensor labels)
    {
        if (logits.dim() != 2) throw new ArgumentException($"Classification logits must be [batch, classes]; got [{string.Join(", ", logits.shape)}].", nameof(logits));
        if (labels.dim() != 1 || labels.shape[0] != logits.shape[0])
            throw new ArgumentException($"Labels must be [batch] = [{logits.shape[0]}]; got [{string.Join(", ", labels.shape)}].", nameof(labels));
        if (labels.dtype != ScalarType.Int64) throw new ArgumentException($"Labels must be int64 class indices; got {labels.dtype}.", nameof(labels));
        using var scope = NewDisposeScope();
        var l = labels.to(logits.device);
        CheckRange(l, logits.shape[1], "number of classes");
        return nn.functional.cross_entropy(logits.to_type(ScalarType.Float32), l).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Labels for prompt → target training: a copy of <paramref name="inputIds"/> with <see cref="IgnoreIndex"/> on padding
    /// (<paramref name="attentionMask"/> = 0) and on the first <paramref name="promptLengths"/>[i] real tokens of each row, so the
    /// loss covers only the target tokens (the paper's DROP recipe). Works for left and right padding.
    /// </summary>
    /// <param name="inputIds">[B, T] int64.</param>
    /// <param name="attentionMask">[B, T], 1 for real tokens.</param>
    /// <param name="promptLengths">Prompt tokens (BOS included, if any) per row.</param>
    /// <returns>[B, T] int64 labels.</returns>
    public static Tensor PromptMaskedLabels(Tensor inputIds, Tensor attentionMask, IReadOnlyList<int> promptLengths)
    {
        if (inputIds.dim() != 2) throw new ArgumentException($"input_ids must be [batch, time]; got [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        if (!attentionMask.shape.SequenceEqual(inputIds.shape)) throw new ArgumentException("attention_mask must have the shape of input_ids.", nameof(attentionMask));
        if (promptLengths.Count != inputIds.shape[0]) throw new ArgumentException($"{promptLengths.Count} prompt lengths for {inputIds.shape[0]} rows.", nameof(promptLengths));
        using var scope = NewDisposeScope();
        var real = attentionMask.to_type(ScalarType.Int64).ne(0);                                        // (B, T)
        var rank = real.to_type(ScalarType.Int64).cumsum(1);                                              // 1-based index among real tokens
        var prompt = tensor(promptLengths.Select(p => (long)p).ToArray(), device: inputIds.device).unsqueeze(1); // (B, 1)
        var keep = real.logical_and(rank.gt(prompt));                                                    // real and after the prompt
        return inputIds.to_type(ScalarType.Int64).masked_fill(keep.logical_not(), IgnoreIndex).MoveToOuterDisposeScope();
    }

    static void CheckRange(Tensor labels, long size, string what)
    {
        if (labels.numel() == 0) return;
        var min = labels.min().item<long>();
        var max = labels.max().item<long>();
        if (min < 0 || max >= size)
            throw new ArgumentException($"Label values must lie in 0..{size - 1} (the {what}); found {(min < 0 ? min : max)}.", "labels");
    }
}
