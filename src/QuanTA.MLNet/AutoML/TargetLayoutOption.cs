using QuanTA.Core.Adapters;

namespace QuanTA.MLNet.AutoML;

/// <summary>
/// The axis-layout choice of a QuanTA sweep, drawn after the axis count N and the target modules: the factorizations of the
/// widest targeted layer into N factors (so one layout holds every targeted layer, e.g. 768 = 16·8·6 when <c>all-linear</c> takes
/// a 256-wide model's 768-wide MLP too) and <see cref="QuanTASearchSpace.DerivedLayout"/>, which leaves the layout to the trainer:
/// <c>[ceil(max(in,out)^(1/N))]·N</c> per layer, a layout per layer shape. A target set that matches no layer falls back to the
/// hidden size (the parameter count then rejects the configuration, naming the layers the model has).
/// </summary>
public sealed class TargetLayoutOption : SearchOption
{
    /// <summary>Name of the axis-count parameter this choice depends on.</summary>
    public const string AxisCountParameter = "QuanTA.AxisCount";
    /// <summary>Name of the target-modules parameter this choice depends on.</summary>
    public const string TargetModulesParameter = "TargetModules";

    readonly ModelShape _shape;
    readonly int _maxLayoutsPerAxisCount;
    readonly Dictionary<(string Targets, int AxisCount), IReadOnlyList<object>> _cache = [];

    /// <summary>Creates the choice for <paramref name="shape"/>.</summary>
    /// <param name="shape">The model's adaptable layers.</param>
    /// <param name="maxLayoutsPerAxisCount">Most factorizations offered per (targets, N), the most balanced ones; at least 1.</param>
    public TargetLayoutOption(ModelShape shape, int maxLayoutsPerAxisCount = 4)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLayoutsPerAxisCount, 1);
        _shape = shape;
        _maxLayoutsPerAxisCount = maxLayoutsPerAxisCount;
    }

    /// <summary>The widest max(in, out) among the layers <paramref name="targetModules"/> selects; the hidden size when it
    /// selects nothing.</summary>
    public int WidestTargetedLayer(string targetModules)
    {
        try
        {
            var chosen = TargetModules.Parse(targetModules).Select(_shape.Linears.Select(l => l.Name).ToList()).ToHashSet();
            var widths = _shape.Linears.Where(l => chosen.Contains(l.Name)).Select(l => Math.Max(l.InFeatures, l.OutFeatures)).ToList();
            return widths.Count > 0 ? widths.Max() : _shape.HiddenSize;
        }
        catch (ArgumentException) { return _shape.HiddenSize; }
    }

    /// <summary>The layouts offered for the drawn axis count and target modules: factorizations of the widest targeted layer
    /// (most balanced first), then <see cref="QuanTASearchSpace.DerivedLayout"/>.</summary>
    public override IReadOnlyList<object> Enumerate(IReadOnlyDictionary<string, object> sampled)
    {
        int axisCount = Convert.ToInt32(Required(sampled, AxisCountParameter), System.Globalization.CultureInfo.InvariantCulture);
        string targets = Convert.ToString(Required(sampled, TargetModulesParameter), System.Globalization.CultureInfo.InvariantCulture) ?? "";
        if (_cache.TryGetValue((targets, axisCount), out var list)) return list;
        var layouts = QuanTASearchSpace.Factorizations(WidestTargetedLayer(targets), axisCount, _maxLayoutsPerAxisCount)
            .Select(QuanTASearchSpace.FormatLayout).Cast<object>().Append(QuanTASearchSpace.DerivedLayout).ToArray();
        return _cache[(targets, axisCount)] = layouts;
    }

    /// <inheritdoc/>
    public override object Sample(Random random, IReadOnlyDictionary<string, object> sampled)
    {
        var list = Enumerate(sampled);
        return list[random.Next(list.Count)];
    }

    /// <inheritdoc/>
    public override object Default(IReadOnlyDictionary<string, object> sampled) => Enumerate(sampled)[0];

    static object Required(IReadOnlyDictionary<string, object> sampled, string name) => sampled.TryGetValue(name, out var v) ? v
        : throw new InvalidOperationException($"Parameter '{name}' must be drawn before the axis layout; add the layout option after it.");
}
