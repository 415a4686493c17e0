using System.Globalization;

using QuanTA.Core.Adapters;

namespace QuanTA.Core.Training;

/// <summary>
/// How a training step computes the QuanTA layers: the one decision about which code runs, made once per fit by
/// <see cref="QuanTATrainingPaths.Resolve"/> and logged with its reason. All paths give the same loss and gradients (tested);
/// they trade speed for memory. Measured figures per path: docs/performance.md.
/// <code>
///   path                 ΔW built                              kept from forward to backward      chain runs / step
///   PerLayer             per adapter, on x (QuanTAAdapter)      the chain's activations on x      per layer
///   Stacked              all layers at once (QuanTABank)        W0 + ΔW and the chain's input     once
///   StackedRecompute     all layers at once, without a graph    W0 + ΔW                           twice (+ S), batched
///   Layerwise            inside each layer's forward            x and the small block operators    twice
///   LayerwiseUncached    as Layerwise, S chain rebuilt too      as Layerwise                       twice (+ S)
/// </code>
/// </summary>
public enum QuanTATrainingPath
{
    /// <summary>Decided by <see cref="QuanTATrainingPaths.Resolve"/>: PerLayer on the CPU; on a GPU Stacked, or StackedRecompute
    /// (then Layerwise) when Stacked's extra memory would take more than half of the free GPU memory.</summary>
    Auto,
    /// <summary>Each adapter runs its own chain on its layer's input (<see cref="QuanTAAdapter.Delta"/>): the readable
    /// reference, and the path for adapters the fused paths do not serve (dropout, a per-tensor rank).</summary>
    PerLayer,
    /// <summary>One batched chain builds ΔW for every adapted layer of a shape (<see cref="QuanTABank"/>); each layer runs one
    /// GEMM with W0 + ΔW, kept for its backward. Fastest, most memory.</summary>
    Stacked,
    /// <summary>As <see cref="Stacked"/>, but the batched chain runs without a graph and W0 + ΔW is the only weight-sized tensor
    /// kept per layer; the backward collects ∂L/∂ΔW = gᵀx and re-runs the chain with a graph a few layers at a time
    /// (<see cref="QuanTARecomputeChunk"/>). Nothing of the chain's graph and no frozen chain is kept: about the layerwise paths'
    /// memory with batched chains.</summary>
    StackedRecompute,
    /// <summary>The bank builds only each layer's small block operators; each layer builds W0 + ΔW inside its forward and again
    /// in its backward (<see cref="QuanTALayerwiseStep"/>): nothing weight-sized is kept between forward and backward.</summary>
    Layerwise,
    /// <summary>As <see cref="Layerwise"/>, and the constant frozen chain (S) is rebuilt where it is needed instead of cached:
    /// one weight-sized tensor per adapted layer less, for the smallest peak (slowest).</summary>
    LayerwiseUncached,
}

/// <summary>The resolved training path and why it was chosen (logged once per fit).</summary>
/// <param name="Path">Never <see cref="QuanTATrainingPath.Auto"/>.</param>
/// <param name="Reason">One sentence for the log.</param>
public sealed record QuanTATrainingPathChoice(QuanTATrainingPath Path, string Reason)
{
    /// <summary>True for the paths served by a <see cref="QuanTABank"/> (all but PerLayer).</summary>
    public bool UsesBank => Path is not QuanTATrainingPath.PerLayer;

    /// <inheritdoc/>
    public override string ToString() => $"QuanTA training path: {QuanTATrainingPaths.Name(Path)} ({Reason})";
}

/// <summary>Resolves <see cref="QuanTATrainingPath"/>; the only place that decides which QuanTA path runs.</summary>
public static class QuanTATrainingPaths
{
    /// <summary>The path's name as the CLI, logs, bench and docs write it: per-layer, stacked, stacked-recompute, layerwise,
    /// layerwise-uncached.</summary>
    public static string Name(QuanTATrainingPath path) => path switch
    {
        QuanTATrainingPath.PerLayer => "per-layer",
        QuanTATrainingPath.LayerwiseUncached => "layerwise-uncached",
        QuanTATrainingPath.StackedRecompute => "stacked-recompute",
        _ => path.ToString().ToLowerInvariant(),
    };

    /// <summary>Auto's memory rule: a path takes too much when its extra memory exceeds half of what is free after the model
    /// is loaded (the activations need the rest); unknown free memory never does.</summary>
    public static bool StackedTakesTooMuch(long stackedExtraBytes, long? freeBytes) => freeBytes is long f && stackedExtraBytes > f / 2;

    /// <summary>
    /// The path a fit takes. An explicit <paramref name="requested"/> path is kept as asked (its reason says so). Auto picks
    /// PerLayer off the GPU; on a GPU the fastest path whose extra memory fits the rule of <see cref="StackedTakesTooMuch"/>:
    /// Stacked, else StackedRecompute (about the layerwise paths' memory, faster than them on the measured shapes), else
    /// Layerwise.
    /// </summary>
    /// <param name="requested">The option's value.</param>
    /// <param name="onCuda">Whether the model is on a CUDA device.</param>
    /// <param name="stackedExtraBytes">Stacked's estimated extra memory (<see cref="QuanTABank.EstimatedStackedExtraBytes"/>);
    /// called only when Auto needs it.</param>
    /// <param name="freeBytes">Free device memory now (null when it cannot be read); called only when Auto needs it.</param>
    /// <param name="recomputeExtraBytes">StackedRecompute's estimated extra memory
    /// (<see cref="QuanTABank.EstimatedRecomputeExtraBytes"/>); called only when Stacked does not fit.</param>
    public static QuanTATrainingPathChoice Resolve(QuanTATrainingPath requested, bool onCuda, Func<long> stackedExtraBytes, Func<long?> freeBytes,
        Func<long> recomputeExtraBytes)
    {
        if (requested != QuanTATrainingPath.Auto) return new(requested, "as requested");
        if (!onCuda) return new(QuanTATrainingPath.PerLayer, "Auto off the GPU: the per-layer reference path (the fused paths are built for GPU memory and GEMMs)");
        long extra = stackedExtraBytes();
        long? free = freeBytes();
        static string MiB(long b) => (b / 1048576.0).ToString("F0", CultureInfo.InvariantCulture) + " MiB";
        if (free is not long f) return new(QuanTATrainingPath.Stacked, "Auto on the GPU; the free GPU memory could not be read, so the fastest path " +
            "(choose StackedRecompute or Layerwise to save memory)");
        if (!StackedTakesTooMuch(extra, f))
            return new(QuanTATrainingPath.Stacked, $"Auto on the GPU: stacked needs ≈ {MiB(extra)} more, {MiB(f)} free");
        long lean = recomputeExtraBytes();
        return StackedTakesTooMuch(lean, f)
            ? new(QuanTATrainingPath.Layerwise, $"Auto on the GPU: stacked needs ≈ {MiB(extra)} more and stacked-recompute ≈ {MiB(lean)}, " +
                $"each over half of the {MiB(f)} free")
            : new(QuanTATrainingPath.StackedRecompute, $"Auto on the GPU: stacked needs ≈ {MiB(extra)} more, over half of the {MiB(f)} free; " +
                $"stacked-recompute ≈ {MiB(lean)}");
    }
}
