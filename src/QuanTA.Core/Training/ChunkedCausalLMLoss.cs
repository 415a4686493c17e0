using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Training;

/// <summary>
/// The causal-LM loss straight from the last hidden states and the LM head's weight, a chunk of rows at a time, so the
/// fp32 (B·T, V) logits never exist (the idea of Liger's fused linear cross-entropy, in libtorch calls). For each chunk c
/// of rows:
/// <code>
///   forward:   z_c = fp32(h_c Wᵀ)                      (n, V), the head's GEMM in the compute dtype, as lm_head + upcast
///              loss += Σ_valid (logsumexp(z_c) − z_c[y])      keeps only lse (B·T) fp32 for the backward
///   backward:  ∂L/∂z_c = (softmax(z_c) − onehot(y)) · g / N   recomputed from h_c and lse
///              ∂L/∂h_c = ∂L/∂z_c W          (∂L/∂W = ∂L/∂z_cᵀ h_c only when the head trains)
/// </code>
/// N is the number of target tokens (labels after the first position that are not <see cref="Losses.IgnoreIndex"/>).
/// Same value and gradients as <c>Losses.CausalLM(lm_head(h).float(), labels)</c> to fp32 rounding (tested); one more
/// head GEMM per step (the recompute) for a peak that no longer grows with B·T·V.
/// </summary>
public static class ChunkedCausalLMLoss
{
    /// <summary>Rows per chunk: about 64 Mi fp32 logits (256 MiB) per chunk, at least 16 rows.</summary>
    public static int ChunkRows(long vocab) => (int)Math.Max(16, (64L << 20) / Math.Max(1, vocab));

    /// <summary>
    /// Mean causal-LM loss over the target tokens, as <see cref="Losses.CausalLM"/> computes it from
    /// <c>fp32(hidden · weightᵀ)</c>. Checks shapes and label values like it (one host sync).
    /// </summary>
    /// <param name="hidden">(B, T, C) last hidden states (after the final norm), the head's input.</param>
    /// <param name="weight">(V, C) the LM head's weight, same dtype as <paramref name="hidden"/>.</param>
    /// <param name="labels">(B, T) int64 aligned with the input ids (not shifted), <see cref="Losses.IgnoreIndex"/> where no loss is wanted.</param>
    /// <param name="chunkRows">Rows per chunk (default <see cref="ChunkRows"/>).</param>
    public static Tensor Compute(Tensor hidden, Tensor weight, Tensor labels, int? chunkRows = null)
    {
        if (hidden.dim() != 3) throw new ArgumentException($"Hidden states must be [batch, time, hidden]; got [{string.Join(", ", hidden.shape)}].", nameof(hidden));
        if (weight.dim() != 2 || weight.shape[1] != hidden.shape[2])
            throw new ArgumentException($"The head's weight must be [vocab, {hidden.shape[2]}]; got [{string.Join(", ", weight.shape)}].", nameof(weight));
        if (labels.dim() != 2 || labels.shape[0] != hidden.shape[0] || labels.shape[1] != hidden.shape[1] || labels.dtype != ScalarType.Int64)
            throw new ArgumentException($"Labels must be int64 [batch, time] = [{hidden.shape[0]}, {hidden.shape[1]}]; got {labels.dtype} [{string.Join(", ", labels.shape)}].", nameof(labels));
        using var scope = NewDisposeScope();
        var shifted = Losses.ShiftedLabels(labels.to(hidden.device));                               // (B·T)
        long targets = Losses.CheckedTargets(shifted, weight.shape[0]);
        return Run(hidden, weight, shifted, targets, chunkRows).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <see cref="Compute"/> without host synchronization: for labels already checked on the host
    /// (<see cref="Losses.CountTargets"/>, which gives <paramref name="targetTokens"/>). Same value.
    /// </summary>
    public static Tensor ComputeUnchecked(Tensor hidden, Tensor weight, Tensor labels, long targetTokens, int? chunkRows = null)
    {
        if (targetTokens <= 0) throw new ArgumentOutOfRangeException(nameof(targetTokens), targetTokens, "The batch needs at least one target token.");
        using var scope = NewDisposeScope();
        return Run(hidden, weight, Losses.ShiftedLabels(labels.to(hidden.device)), targetTokens, chunkRows).MoveToOuterDisposeScope();
    }

    static Tensor Run(Tensor hidden, Tensor weight, Tensor shifted, long targets, int? chunkRows)
    {
        int rows = chunkRows ?? ChunkRows(weight.shape[0]);
        if (rows < 1) throw new ArgumentOutOfRangeException(nameof(chunkRows), rows, "chunkRows must be at least 1.");
        var h = hidden.reshape(-1, hidden.shape[2]);                                                // (B·T, C)
        return CustomFunctionOutput.Apply(() => ChunkedLossFunction.apply(h, weight, shifted, (double)targets, rows));
    }
}

/// <summary>The chunked loss as one autograd node. Arguments: h (M, C), W (V, C), shifted labels (M), the target count, rows per chunk.</summary>
internal sealed class ChunkedLossFunction : autograd.SingleTensorFunction<ChunkedLossFunction>
{
    public override string Name => "QuanTAChunkedCausalLMLoss";

    static readonly ReturnedGradients Returned = new();

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var (h, w, y, n, rows) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (double)vars[3], (int)vars[4]);
        using var scope = NewDisposeScope();
        long m = h.shape[0];
        var lse = empty(m, dtype: ScalarType.Float32, device: h.device);                             // (M) logsumexp per row
        var total = zeros(1, dtype: ScalarType.Float32, device: h.device);
        for (long s = 0; s < m; s += rows)
        {
            using var chunk = NewDisposeScope();
            long e = Math.Min(m, s + rows);
            var z = h.narrow(0, s, e - s).mm(w.t()).to_type(ScalarType.Float32);                                   // (n, V) fp32
            var l = z.logsumexp(-1);                                                                 // (n)
            lse.narrow(0, s, e - s).copy_(l);
            var yc = y.narrow(0, s, e - s);
            var ok = yc.ne(Losses.IgnoreIndex);
            var target = z.gather(1, yc.clamp_min(0).unsqueeze(1)).squeeze(1);                       // z[y] (ignored rows: z[0])
            total.add_((l - target).masked_fill(ok.logical_not(), 0).sum());
        }
        var loss = (total / n).squeeze(0);
        ctx.save_for_backward([h, w, y, CustomFunctionOutput.KeepUntilSaved(lse)]);
        ctx.save_data("n", n);
        ctx.save_data("rows", rows);
        ctx.save_data("needs", new[] { h.requires_grad, w.requires_grad });
        return CustomFunctionOutput.Keep(loss);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor g)
    {
        Returned.Release();                                                                          // the previous call's gradients are in the engine now
        var saved = ctx.get_saved_variables();
        var (n, rows, needs) = ((double)ctx.get_data("n"), (int)ctx.get_data("rows"), (bool[])ctx.get_data("needs"));
        var result = new List<Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            var (h, w, y, lse) = (saved[0], saved[1], saved[2], saved[3]);
            long m = h.shape[0];
            var scale = g.to_type(ScalarType.Float32) / n;                                            // ∂L/∂loss / N
            var gh = needs[0] ? zeros_like(h) : null;
            var gw = needs[1] ? zeros(w.shape, dtype: ScalarType.Float32, device: w.device) : null;
            for (long s = 0; s < m; s += rows)
            {
                using var chunk = NewDisposeScope();
                long e = Math.Min(m, s + rows);
                var hc = h.narrow(0, s, e - s);
                var yc = y.narrow(0, s, e - s);
                var ok = yc.ne(Losses.IgnoreIndex);
                var p = (hc.mm(w.t()).to_type(ScalarType.Float32) - lse.narrow(0, s, e - s).unsqueeze(1)).exp_();   // softmax(z_c) (n, V)
                p.scatter_add_(1, yc.clamp_min(0).unsqueeze(1), full(e - s, 1, -1f, device: p.device));  // − onehot(y)
                p.mul_(ok.unsqueeze(1).to_type(ScalarType.Float32) * scale);                           // ∂L/∂z_c, 0 on ignored rows
                var pc = p.to_type(h.dtype);                                                           // through the upcast, as autograd would
                gh?.narrow(0, s, e - s).copy_(pc.mm(w));                                                             // (n, C) = ∂L/∂z_c W
                gw?.add_(pc.t().mm(hc).to_type(ScalarType.Float32));                                   // (V, C)
            }
            result.Add(gh!); result.Add(gw?.to_type(w.dtype)!); result.Add(null!); result.Add(null!); result.Add(null!);
            foreach (var t in result) t?.DetachFromDisposeScope();
        }
        finally
        {
            foreach (var t in saved) t?.Dispose();
            g.Dispose();
        }
        Returned.Hold(result);
        return result;
    }
}
