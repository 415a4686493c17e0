using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Generation;

/// <summary>Picks the next token from last-position logits: argmax, or temperature → top-k → top-p → multinomial.</summary>
public static class LogitsSampler
{
    /// <summary>logits (B, V) → next token ids (B) int64.</summary>
    public static Tensor Next(Tensor logits, GenerationOptions o, torch.Generator? generator)
    {
        using var scope = NewDisposeScope();
        if (o.Greedy) return logits.argmax(-1).MoveToOuterDisposeScope();
        var scores = logits.to_type(ScalarType.Float32) / o.Temperature;                        // (B, V)
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
        var probs = scores.softmax(-1);
        return multinomial(probs, 1, generator: generator).squeeze(-1).MoveToOuterDisposeScope();
    }
}
