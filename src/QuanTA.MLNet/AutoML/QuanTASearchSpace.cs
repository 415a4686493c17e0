using System.Globalization;
using Microsoft.ML.SearchSpace;
using QuanTA.Core.Adapters;
using QuanTA.Core.Training;

namespace QuanTA.MLNet.AutoML;

/// <summary>
/// The sweepable options of a QuanTA (or LoRA baseline) fine-tune, annotated the AutoML way. Read with
/// <see cref="QuanTASearchSpace.Create(ModelShape, IReadOnlyList{int}, int)"/>, which also generates the axis-layout candidates from the model's layer sizes.
/// Only parameters relevant to the drawn <see cref="Adapter"/> matter (<see cref="QuanTASweepParameters.Describe"/>).
/// </summary>
public sealed class QuanTASweepParameters
{
    /// <summary>"QuanTA" or "LoRA" (the baseline).</summary>
    [Choice(new object[] { "QuanTA", "LoRA" }, "QuanTA")]
    public string Adapter = "QuanTA";

    /// <summary>QuanTA's own parameters.</summary>
    [NestOption]
    public QuanTAParameters QuanTA = new();

    /// <summary>LoRA's own parameters.</summary>
    [NestOption]
    public LoRAParameters LoRA = new();

    /// <summary>Modules to adapt, in <see cref="QuanTAFineTuneOptions.TargetModules"/> syntax (comma-separated suffixes or
    /// "all-linear").</summary>
    [Choice(new object[] { "q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj", "all-linear" }, "q_proj,v_proj")]
    public string TargetModules = "q_proj,v_proj";

    /// <summary>Peak learning rate (log scale).</summary>
    [Range(1e-4, 3e-2, 1e-3, true)]
    public double LearningRate = 1e-3;

    /// <summary>Epochs. With successive halving this range is the resource: trials start at its minimum and the survivors are
    /// re-trained with η times more epochs up to its maximum.</summary>
    [Range(1, 9, 3, false)]
    public int Epochs = 3;

    /// <summary>Cosine instead of linear learning-rate decay.</summary>
    [BooleanChoice(false)]
    public bool CosineSchedule;

    /// <summary>A one-line description of the parameters that matter for the drawn adapter (also the trial's identity: two
    /// draws with the same description are the same configuration). Epochs are not part of it (they are the resource).</summary>
    public string Describe()
    {
        string lr = LearningRate.ToString("0.###e+0", CultureInfo.InvariantCulture);
        string schedule = CosineSchedule ? " cosine" : "";
        return Adapter == "LoRA"
            ? $"LoRA r={LoRA.Rank} alpha={LoRA.Alpha.ToString(CultureInfo.InvariantCulture)} targets={TargetModules} lr={lr}{schedule}"
            : $"QuanTA layout={DescribeLayout()} pairs={QuanTA.PairSubset} rank={(QuanTA.Rank == 0 ? "full" : QuanTA.Rank.ToString(CultureInfo.InvariantCulture))} " +
              $"targets={TargetModules} lr={lr}{schedule}";
    }

    /// <summary>The layout as <see cref="Describe"/> shows it: "8,4,4", or "derived(N=3)" for a layout derived per layer.</summary>
    string DescribeLayout() => QuanTA.AxisLayout == QuanTASearchSpace.DerivedLayout
        ? $"{QuanTASearchSpace.DerivedLayout}(N={QuanTA.AxisCount.ToString(CultureInfo.InvariantCulture)})" : QuanTA.AxisLayout;

    /// <summary>Writes these parameters (and <paramref name="epochs"/>) onto a copy of <paramref name="baseOptions"/>. The layout
    /// <see cref="QuanTASearchSpace.DerivedLayout"/> leaves <see cref="QuanTAFineTuneOptions.AxisLayout"/> null, so the trainer
    /// derives a layout per layer from <see cref="QuanTAParameters.AxisCount"/>.</summary>
    public QuanTAFineTuneOptions ApplyTo(QuanTAFineTuneOptions baseOptions, int epochs)
    {
        ArgumentNullException.ThrowIfNull(baseOptions);
        var o = baseOptions.Clone();
        o.TargetModules = TargetModules.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        o.LearningRate = LearningRate;
        o.Epochs = epochs;
        o.Schedule = CosineSchedule ? LearningRateSchedule.Cosine : LearningRateSchedule.Linear;
        if (Adapter == "LoRA")
        {
            o.Adapter = AdapterMethod.LoRA;
            o.LoRARank = LoRA.Rank;
            o.LoRAAlpha = LoRA.Alpha;
        }
        else if (Adapter == "QuanTA")
        {
            o.Adapter = AdapterMethod.QuanTA;
            bool derived = QuanTA.AxisLayout == QuanTASearchSpace.DerivedLayout;
            int[]? dims = derived ? null : QuanTASearchSpace.ParseLayout(QuanTA.AxisLayout);
            o.AxisLayout = dims;
            o.AxisCount = dims?.Length ?? QuanTA.AxisCount;
            o.Pairs = QuanTASearchSpace.PairsOf(QuanTA.PairSubset, o.AxisCount).Select(p => (p.M, p.N)).ToArray();
            o.TensorCount = null;
            o.Rank = QuanTA.Rank == 0 ? null : QuanTA.Rank;
        }
        else throw new ArgumentException($"Adapter '{Adapter}' is not QuanTA or LoRA.");
        return o;
    }
}

/// <summary>QuanTA's sweepable parameters (nested in <see cref="QuanTASweepParameters"/>).</summary>
public sealed class QuanTAParameters
{
    /// <summary>Number of axes N; the layout candidates of each N are generated from the hidden size.</summary>
    [Choice(new object[] { 2, 3, 4 }, 3)]
    public int AxisCount = 3;

    /// <summary>Axis layout "d0,d1,…", or <see cref="QuanTASearchSpace.DerivedLayout"/> for a layout derived per layer from
    /// <see cref="AxisCount"/>. The attribute's candidate is a placeholder: the real candidates are generated per
    /// <see cref="AxisCount"/> (and, with a model shape, per target set) by <see cref="QuanTASearchSpace.Create(ModelShape, IReadOnlyList{int}, int)"/>.</summary>
    [Choice(new object[] { "generated" })]
    public string AxisLayout = "generated";

    /// <summary>Which pairs of axes carry a tensor: "all" (N(N−1)/2, the paper's), "adjacent" ((i, i+1): N−1 tensors),
    /// "star" ((0, i): N−1 tensors) or "double" (all pairs twice, a deeper chain).</summary>
    [Choice(new object[] { "all", "adjacent", "star", "double" }, "all")]
    public string PairSubset = "all";

    /// <summary>Per-tensor rank; 0 = full-rank tensors (the paper's).</summary>
    [Choice(new object[] { 0, 4, 8 }, 0)]
    public int Rank;
}

/// <summary>LoRA's sweepable parameters (nested in <see cref="QuanTASweepParameters"/>).</summary>
public sealed class LoRAParameters
{
    /// <summary>LoRA rank r.</summary>
    [Choice(new object[] { 1, 2, 4, 8, 16 }, 8)]
    public int Rank = 8;

    /// <summary>LoRA α (ΔW = α/r · B·A).</summary>
    [Choice(new object[] { 8f, 16f, 32f }, 16f)]
    public float Alpha = 16;
}

/// <summary>
/// Builds the QuanTA search space for a model: reads <see cref="QuanTASweepParameters"/>' attributes and replaces the axis-layout
/// placeholder by the factorizations of the hidden size into N factors (for every N of the axis-count choice), so the
/// candidates follow the model instead of a hard-coded list.
/// </summary>
public static class QuanTASearchSpace
{
    /// <summary>The layout candidate that leaves the layout to the trainer: <c>[ceil(max(in,out)^(1/N))]·N</c> derived per layer,
    /// so layers of different shapes (attention and MLP) each get one that holds them.</summary>
    public const string DerivedLayout = "derived";

    /// <summary>
    /// The search space for <paramref name="shape"/>: as <see cref="Create(int, IReadOnlyList{int}, int)"/> for its hidden size,
    /// but the axis layouts are drawn after the target modules (<see cref="TargetLayoutOption"/>): the factorizations of the
    /// widest targeted layer plus <see cref="DerivedLayout"/>, so every target set (e.g. <c>all-linear</c> with an MLP wider than
    /// the hidden size) has QuanTA layouts that hold all its layers.
    /// </summary>
    /// <param name="shape">The model's adaptable layers (<see cref="ModelShape.FromConfig(string, bool?)"/>).</param>
    /// <param name="axisCounts">Values of N; null keeps the attribute's choice (2, 3, 4).</param>
    /// <param name="maxLayoutsPerAxisCount">Most factorizations kept per N and target set (the most balanced ones). Default 4.</param>
    public static SearchSpace Create(ModelShape shape, IReadOnlyList<int>? axisCounts = null, int maxLayoutsPerAxisCount = 4)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var space = Create(shape.HiddenSize, axisCounts, maxLayoutsPerAxisCount);
        return space.Remove("QuanTA.AxisLayout").With("QuanTA.AxisLayout", new TargetLayoutOption(shape, maxLayoutsPerAxisCount));
    }

    /// <summary>The search space for a model of hidden size <paramref name="hiddenSize"/>.</summary>
    /// <param name="hiddenSize">The model's hidden size (config.json "hidden_size").</param>
    /// <param name="axisCounts">Values of N to generate layouts for; null keeps the attribute's choice (2, 3, 4). N values that
    /// have no factorization (every factor ≥ 2) are dropped.</param>
    /// <param name="maxLayoutsPerAxisCount">Most layouts kept per N (the most balanced ones). Default 4.</param>
    public static SearchSpace Create(int hiddenSize, IReadOnlyList<int>? axisCounts = null, int maxLayoutsPerAxisCount = 4)
    {
        if (hiddenSize < 4) throw new ArgumentOutOfRangeException(nameof(hiddenSize), hiddenSize, "The hidden size must be at least 4 to factor into 2 axes.");
        var space = SearchSpace.FromType<QuanTASweepParameters>();
        var counts = axisCounts ?? ((ChoiceOption)space["QuanTA.AxisCount"]).Candidates.Cast<int>().ToArray();
        var layouts = new Dictionary<object, IReadOnlyList<object>>();
        foreach (var n in counts.Distinct())
        {
            var list = Factorizations(hiddenSize, n, maxLayoutsPerAxisCount);
            if (list.Count > 0) layouts[n] = list.Select(FormatLayout).Cast<object>().ToArray();
        }
        if (layouts.Count == 0)
            throw new ArgumentException($"Hidden size {hiddenSize} has no factorization into {string.Join(" or ", counts)} factors ≥ 2.");
        var kept = layouts.Keys.Cast<int>().OrderBy(n => n).Cast<object>().ToArray();
        space.With("QuanTA.AxisCount", new ChoiceOption(kept, kept.Contains(3) ? 3 : kept[0]));
        space.With("QuanTA.AxisLayout", new DependentChoiceOption("QuanTA.AxisCount", layouts));
        return space;
    }

    /// <summary>
    /// The ways to write <paramref name="size"/> as a product of <paramref name="axisCount"/> factors, each ≥ 2, in non-increasing
    /// order (the paper's convention, e.g. 4096 = 16·8·8·4), most balanced first (smallest largest/smallest ratio), at most
    /// <paramref name="max"/> of them (0 = all).
    /// </summary>
    public static IReadOnlyList<int[]> Factorizations(int size, int axisCount, int max = 0)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, "Size must be positive.");
        if (axisCount < 2) throw new ArgumentOutOfRangeException(nameof(axisCount), axisCount, "A layout needs at least 2 axes.");
        var all = new List<int[]>();
        var current = new List<int>();
        void Walk(int rest, int slots, int maxFactor)
        {
            if (slots == 1)
            {
                if (rest >= 2 && rest <= maxFactor) { current.Add(rest); all.Add([.. current]); current.RemoveAt(current.Count - 1); }
                return;
            }
            for (int f = Math.Min(maxFactor, rest / 2); f >= 2; f--)
            {
                if (rest % f != 0) continue;
                current.Add(f);
                Walk(rest / f, slots - 1, f);
                current.RemoveAt(current.Count - 1);
            }
        }
        Walk(size, axisCount, size);
        var ordered = all.OrderBy(d => (double)d[0] / d[^1]).ThenByDescending(d => d[0]).ToList();
        return max > 0 ? ordered.Take(max).ToList() : ordered;
    }

    /// <summary>The pair chain of a subset name for N axes: "all" (official order), "adjacent", "star" or "double".</summary>
    public static AxisPair[] PairsOf(string subset, int axisCount) => subset switch
    {
        "all" => AxisLayout.OfficialPairs(axisCount),
        "adjacent" => Enumerable.Range(0, axisCount - 1).Reverse().Select(i => new AxisPair(i, i + 1)).ToArray(),
        "star" => Enumerable.Range(1, axisCount - 1).Reverse().Select(i => new AxisPair(0, i)).ToArray(),
        "double" => [.. AxisLayout.OfficialPairs(axisCount), .. AxisLayout.OfficialPairs(axisCount)],
        _ => throw new ArgumentException($"Pair subset '{subset}' is not all, adjacent, star or double."),
    };

    /// <summary>"8,4,4" for [8, 4, 4].</summary>
    public static string FormatLayout(int[] dims) => string.Join(",", dims);

    /// <summary>Parses "8,4,4" (or "8x4x4"); throws naming the text when it is not a list of positive integers.</summary>
    public static int[] ParseLayout(string text)
    {
        var parts = (text ?? "").Split([',', 'x'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var dims = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out dims[i]) || dims[i] < 1)
                throw new ArgumentException($"Axis layout '{text}' is not a list of positive integers such as \"8,4,4\".");
        if (dims.Length < 2) throw new ArgumentException($"Axis layout '{text}' needs at least 2 axes.");
        return dims;
    }
}
