using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Generation;

/// <summary>
/// Picks the next token from last-position logits: penalties (repetition, frequency, presence; see
/// <see cref="TokenPenalties"/>), then argmax, or temperature → top-k → top-p → multinomial — the order of transformers'
/// generate(), whose processors (the repetition penalty among them) run before the sampling warpers.
/// </summary>
public static class LogitsSampler
{
    /// <summary>logits (B, V) → next token ids (B) int64. <paramref name="penalties"/>: null when none are set.</summary>
    public static Tensor Next(Tensor logits, GenerationOptions o, torch.Generator? generator, TokenPenalties? penalties = null)
    {
        using var scope = NewDisposeScope();
        if (o.Greedy) return Penalized(logits, penalties).argmax(-1).MoveToOuterDisposeScope();
        var probs = Scores(logits, o, penalties).softmax(-1);                                   // (B, V)
        return multinomial(probs, 1, generator: generator).squeeze(-1).MoveToOuterDisposeScope();
    }

    /// <summary>The float32 scores (B, V) that sampling draws from: penalties, temperature, top-k, top-p (−∞ = removed).</summary>
    internal static Tensor Scores(Tensor logits, GenerationOptions o, TokenPenalties? penalties)
    {
        using var scope = NewDisposeScope();
        var scores = Penalized(logits, penalties).to_type(ScalarType.Float32) / o.Temperature; // (B, V)
        var V = scores.shape[^1];
        if (o.TopK > 0 && o.TopK < V)
        {
            var kth = scores.topk(o.TopK, dim: -1).values[.., ^1..];                            // (B, 1)
            scores = scores.masked_fill(scores < kth, float.NegativeInfinity);
        }
        if (o.TopP < 1.0)
        {
            // As transformers' TopPLogitsWarper: drop the low tail whose total mass is ≤ 1 − top_p; keep at least one.
            var (sorted, idx) = scores.sort(dim: -1, descending: false);                        // ascending
            var cum = sorted.softmax(-1).cumsum(-1);                                            // (B, V)
            var remove = cum <= (1 - o.TopP);
            remove[.., ^1].fill_(false);                                                        // keep the most likely token
            var removeOrig = remove.scatter(-1, idx, remove);
            scores = scores.masked_fill(removeOrig, float.NegativeInfinity);
        }
        return scores.MoveToOuterDisposeScope();
    }

    /// <summary>The logits with the penalties applied (float32), or the logits themselves when there are none.</summary>
    static Tensor Penalized(Tensor logits, TokenPenalties? penalties) => penalties is null ? logits : penalties.Apply(logits);
}
