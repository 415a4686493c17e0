using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>One adapted layer in an <see cref="InjectionReport"/>.</summary>
/// <param name="Name">Full module name, e.g. "model.layers.0.self_attn.q_proj".</param>
/// <param name="InFeatures">Layer input size.</param>
/// <param name="OutFeatures">Layer output size.</param>
/// <param name="Method">"quanta" or "lora".</param>
/// <param name="TrainableParameters">The adapter's trainable parameters.</param>
/// <param name="RankLower">Lower bound on the rank of the adapted operator (QuanTA: of M_T, the paper's theorem; LoRA: 0).</param>
/// <param name="RankUpper">Upper bound (QuanTA: of M_T; LoRA: r).</param>
/// <param name="Shape">Human-readable options, e.g. "layout [16,8,8,4], 6 tensors, full rank".</param>
public sealed record InjectedLayer(string Name, int InFeatures, int OutFeatures, string Method, long TrainableParameters,
    long RankLower, long RankUpper, string Shape);

/// <summary>What <see cref="AdapterInjector.Inject"/> did: parameter counts (buffers such as QuanTA's frozen S are not
/// parameters and are not counted) and one line per adapted layer.</summary>
/// <param name="TrainableParameters">Parameters with requires_grad (the adapters').</param>
/// <param name="TotalParameters">All parameters of the model, adapters included.</param>
/// <param name="Layers">The adapted layers.</param>
public sealed record InjectionReport(long TrainableParameters, long TotalParameters, IReadOnlyList<InjectedLayer> Layers)
{
    /// <summary>100 · trainable / total.</summary>
    public double TrainablePercent => TotalParameters == 0 ? 0 : 100.0 * TrainableParameters / TotalParameters;

    /// <summary>A table: one line per layer, then the totals.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (var l in Layers)
            sb.AppendLine($"{l.Name,-48} {l.InFeatures,6}→{l.OutFeatures,-6} {l.Method,-6} {l.TrainableParameters,10:N0} params  rank∈[{l.RankLower},{l.RankUpper}]  {l.Shape}");
        sb.Append($"trainable params: {TrainableParameters:N0} || all params: {TotalParameters:N0} || trainable%: {TrainablePercent:F4}");
        return sb.ToString();
    }
}

/// <summary>
/// Finds the <see cref="AdaptableLinear"/> layers of a model by name and attaches adapters (PEFT's <c>model.py</c>):
/// every other parameter is frozen, so only the adapters train. Merge/unmerge and the parameter report live here too.
/// </summary>
public static class AdapterInjector
{
    /// <summary>All adaptable linear layers of <paramref name="model"/> with their full module names, in module order.</summary>
    public static IReadOnlyList<(string Name, AdaptableLinear Layer)> LinearLayers(nn.Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var list = new List<(string, AdaptableLinear)>();
        foreach (var (name, module) in model.named_modules())
            if (module is AdaptableLinear l && !string.IsNullOrEmpty(name)) list.Add((name, l));
        if (model is AdaptableLinear self && list.Count == 0) list.Add(("", self));
        return list;
    }

    /// <summary>
    /// Attaches one adapter made by <paramref name="config"/> to each targeted layer (replacing any previous one there),
    /// freezes every parameter that is not an adapter's, and reports the counts. With <see cref="IAdapterConfig.Seed"/> set,
    /// one generator seeded once initializes the layers in module order (reproducible, different per layer).
    /// </summary>
    public static InjectionReport Inject(nn.Module model, IAdapterConfig config, TargetModules targets)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(targets);
        config.Validate();
        var layers = LinearLayers(model);
        if (layers.Count == 0) throw new ArgumentException("The model has no AdaptableLinear layers to adapt.", nameof(model));
        var chosen = targets.Select(layers.Select(l => l.Name).ToList()).ToHashSet();
        using var generator = config.Seed is int s ? new Generator((ulong)s) : null;
        // create every adapter first, so a bad layer leaves the model untouched
        var created = new List<(AdaptableLinear Layer, Adapter Adapter)>();
        try
        {
            foreach (var (name, layer) in layers.Where(l => chosen.Contains(l.Name)))
            {
                Adapter a;
                try { a = config.Create(layer.InFeatures, layer.OutFeatures, generator); }
                catch (ArgumentException e)
                {
                    throw new ArgumentException($"Cannot create a {config.Method} adapter for layer '{name}' ({layer.InFeatures}→{layer.OutFeatures}): {e.Message}", e);
                }
                created.Add((layer, a));
            }
        }
        catch { foreach (var (_, a) in created) a.Dispose(); throw; }
        foreach (var (layer, a) in created)
        {
            a.to(layer.weight.device);
            layer.Attach(a);
        }
        FreezeAllButAdapters(model);
        return Report(model);
    }

    /// <summary>Sets requires_grad = false on every parameter except those of attached adapters (which are set trainable).</summary>
    public static void FreezeAllButAdapters(nn.Module model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
        foreach (var (_, layer) in LinearLayers(model))
            if (layer.Adapter is { } a)
                foreach (var p in a.parameters()) p.requires_grad = true;
    }

    /// <summary>Counts trainable and total parameters and lists the adapted layers.</summary>
    public static InjectionReport Report(nn.Module model)
    {
        long trainable = 0, total = 0;
        foreach (var p in model.parameters()) { total += p.numel(); if (p.requires_grad) trainable += p.numel(); }
        foreach (var (_, layer) in LinearLayers(model)) total += layer.QuantizedWeight?.ElementCount ?? 0;   // quantized W0: not a parameter
        var rows = new List<InjectedLayer>();
        foreach (var (name, layer) in LinearLayers(model))
        {
            if (layer.Adapter is not { } a) continue;
            long lo, hi; string shape;
            switch (a)
            {
                case QuanTAAdapter q:
                    (lo, hi) = q.Layout.RankBounds(q.Rank);
                    shape = $"layout [{string.Join(",", q.Layout.Dims)}], {q.Layout.TensorCount} tensors {string.Join(" ", q.Layout.Pairs)}, {(q.Rank is int r ? $"rank {r}" : "full rank")}";
                    break;
                case LoRAAdapter l:
                    (lo, hi) = (0, Math.Min(l.Rank, Math.Min(l.InFeatures, l.OutFeatures)));
                    shape = $"r={l.Rank}, alpha={l.Alpha}";
                    break;
                default: (lo, hi, shape) = (0, Math.Min(a.InFeatures, a.OutFeatures), a.GetType().Name); break;
            }
            rows.Add(new InjectedLayer(name, a.InFeatures, a.OutFeatures, a.Method, a.TrainableParameterCount, lo, hi, shape));
        }
        return new InjectionReport(trainable, total, rows);
    }

    /// <summary>The measured numerical rank of every attached adapter's ΔW (<see cref="MatrixRank.Of"/>; one SVD per layer,
    /// so meant for reports, not for every step), keyed by layer name.</summary>
    public static IReadOnlyDictionary<string, long> MeasureDeltaRanks(nn.Module model)
    {
        var ranks = new Dictionary<string, long>();
        using var _ = no_grad();
        foreach (var (name, layer) in LinearLayers(model))
            if (layer.Adapter is { } a)
            {
                using var dw = a.DeltaWeight();
                ranks[name] = MatrixRank.Of(dw);
            }
        return ranks;
    }

    /// <summary>Folds every attached adapter's ΔW into its layer's weight (zero-overhead inference). Returns the number merged.
    /// Layers with a quantized base are left unmerged (their adapter runs beside the frozen weight; merging into 4 or 8 bits is
    /// refused by <see cref="AdaptableLinear.Merge"/>).</summary>
    public static int MergeAll(nn.Module model)
    {
        int n = 0;
        foreach (var (_, layer) in LinearLayers(model))
            if (layer.Adapter is not null && !layer.IsMerged && layer.Quantization == Quantization.BaseQuantization.None) { layer.Merge(); n++; }
        return n;
    }

    /// <summary>Restores W0 exactly in every merged layer. Returns the number unmerged.</summary>
    public static int UnmergeAll(nn.Module model)
    {
        int n = 0;
        foreach (var (_, layer) in LinearLayers(model))
            if (layer.IsMerged) { layer.Unmerge(); n++; }
        return n;
    }

    /// <summary>Detaches every adapter (unmerging first) and disposes it. Returns the number removed.</summary>
    public static int RemoveAll(nn.Module model)
    {
        int n = 0;
        foreach (var (_, layer) in LinearLayers(model))
            if (layer.Detach() is { } a) { a.Dispose(); n++; }
        return n;
    }
}
