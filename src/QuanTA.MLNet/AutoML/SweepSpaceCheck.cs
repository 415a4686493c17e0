using System.Globalization;

namespace QuanTA.MLNet.AutoML;

/// <summary>The trainable-parameter limits of a sweep (<see cref="QuanTASweepExperiment.SetConstraint"/>).</summary>
/// <param name="MaxTrainableFraction">Most trainable / total (e.g. 0.001 = 0.1 %); null = no limit.</param>
/// <param name="MaxTrainableParameters">Most trainable parameters; null = no limit.</param>
public sealed record SweepConstraint(double? MaxTrainableFraction, long? MaxTrainableParameters)
{
    /// <summary>Why <paramref name="count"/> breaks a limit, or null when it meets both.</summary>
    public string? Violation(ParameterCount count)
    {
        ArgumentNullException.ThrowIfNull(count);
        if (MaxTrainableFraction is { } f && count.TrainableFraction > f)
            return string.Create(CultureInfo.InvariantCulture, $"{count.Trainable:N0} trainable parameters = {100 * count.TrainableFraction:F4} % > {100 * f:G4} %");
        if (MaxTrainableParameters is { } m && count.Trainable > m)
            return string.Create(CultureInfo.InvariantCulture, $"{count.Trainable:N0} trainable parameters > {m:N0}");
        return null;
    }

    /// <summary>The limits in words, naming the library call and the CLI flags that set them.</summary>
    public string Describe() => string.Join(" and ", new[]
    {
        MaxTrainableFraction is { } f ? string.Create(CultureInfo.InvariantCulture, $"at most {100 * f:G4} % trainable") : null,
        MaxTrainableParameters is { } m ? string.Create(CultureInfo.InvariantCulture, $"at most {m:N0} trainable parameters") : null,
    }.Where(s => s is not null)) + " (SetConstraint, --max-trainable-percent / --max-trainable)";
}

/// <summary>
/// Whether one adapter's part of a search space can run at all: every combination of its finite choices (learning rate, epochs
/// and schedule do not change the parameter count, so they are held at their defaults) counted on the model and checked against
/// the constraint before the sweep starts.
/// </summary>
/// <param name="Adapter">"QuanTA" or "LoRA".</param>
/// <param name="Checked">Distinct configurations checked.</param>
/// <param name="Runnable">Configurations that fit the model and meet the constraint.</param>
/// <param name="Complete">False when the check stopped at <see cref="SweepSpaceCheck.MaxCombinations"/> combinations.</param>
/// <param name="OverConstraint">Configurations over the constraint.</param>
/// <param name="Smallest">The configuration with the fewest trainable parameters among those that fit the model, with its count.</param>
/// <param name="Unbuildable">Configurations that cannot be built on the model (a target that matches nothing, a layout too small).</param>
/// <param name="FirstBuildError">The first of those errors.</param>
public sealed record AdapterSpaceCheck(string Adapter, int Checked, int Runnable, bool Complete, int OverConstraint,
    (string Description, ParameterCount Count)? Smallest, int Unbuildable, string? FirstBuildError)
{
    /// <summary>
    /// For an adapter none of whose configurations can run: which adapter, why and what to change; null when some can run.
    /// </summary>
    public string? Warning(SweepConstraint constraint)
    {
        ArgumentNullException.ThrowIfNull(constraint);
        if (Runnable > 0) return null;
        var text = new List<string>
        {
            string.Create(CultureInfo.InvariantCulture,
                $"No {Adapter} configuration of the search space can run ({(Complete ? "all" : "the first")} {Checked} checked), so the sweep tries no {Adapter} trial.")
        };
        if (OverConstraint > 0 && Smallest is { } s)
            text.Add(string.Create(CultureInfo.InvariantCulture,
                $"{OverConstraint} are over the limit of {constraint.Describe()}; the smallest, '{s.Description}', has {s.Count.Trainable:N0} trainable " +
                $"parameters = {100 * s.Count.TrainableFraction:F4} %: raise the limit to at least that, or search fewer target modules or smaller {Adapter} settings."));
        if (Unbuildable > 0)
            text.Add(string.Create(CultureInfo.InvariantCulture,
                $"{Unbuildable} cannot be built on this model ({FirstBuildError}): change the target modules (--target-modules) or the axis layouts / counts (--axis-counts, SetSearchSpace)."));
        return string.Join(" ", text);
    }
}

/// <summary>Checks before a sweep which adapters of its search space can run (<see cref="AdapterSpaceCheck"/>).</summary>
public static class SweepSpaceCheck
{
    /// <summary>Most combinations checked per adapter.</summary>
    public const int MaxCombinations = 20_000;

    /// <summary>Checks every adapter the space's "Adapter" choice offers.</summary>
    /// <param name="space">A space read from <see cref="QuanTASweepParameters"/>.</param>
    /// <param name="shape">The model's layers.</param>
    /// <param name="trainsHead">Whether the classification head is trained (it counts as trainable).</param>
    /// <param name="baseOptions">The options the drawn parameters are written onto.</param>
    /// <param name="constraint">The sweep's trainable-parameter limits.</param>
    public static IReadOnlyList<AdapterSpaceCheck> Run(SearchSpace space, ModelShape shape, bool trainsHead, QuanTAFineTuneOptions baseOptions,
        SweepConstraint constraint)
    {
        ArgumentNullException.ThrowIfNull(space);
        var adapters = space.Options.Any(o => o.Name == "Adapter")
            ? space["Adapter"].Enumerate(new Dictionary<string, object>()) ?? [space["Adapter"].Default(new Dictionary<string, object>())]
            : ["QuanTA"];
        var names = adapters.Select(a => Convert.ToString(a, CultureInfo.InvariantCulture) ?? "").Distinct().ToList();
        return names.Select(a => Check(space, shape, trainsHead, baseOptions, constraint, a, names.Where(n => n != a).ToList())).ToList();
    }

    static AdapterSpaceCheck Check(SearchSpace space, ModelShape shape, bool trainsHead, QuanTAFineTuneOptions baseOptions,
        SweepConstraint constraint, string adapter, IReadOnlyList<string> otherAdapters)
    {
        var seen = new HashSet<string>();
        int runnable = 0, over = 0, unbuildable = 0, combinations = 0;
        string? firstError = null;
        (string, ParameterCount)? smallest = null;
        var pinned = new Dictionary<string, object> { ["Adapter"] = adapter };
        // the other adapters' own parameters ("LoRA.Rank" while checking QuanTA) do not matter: hold them at their defaults
        bool HoldAtDefault(string name) => otherAdapters.Any(o => name.StartsWith(o + ".", StringComparison.Ordinal));
        foreach (var raw in Combinations(space, pinned, HoldAtDefault))
        {
            if (++combinations > MaxCombinations) break;
            var p = space.ToObject<QuanTASweepParameters>(raw);
            var description = p.Describe();
            if (!seen.Add(description)) continue;
            ParameterCount count;
            try { count = shape.Count(p.ApplyTo(baseOptions, 1), trainsHead); }
            catch (ArgumentException e) { unbuildable++; firstError ??= e.Message; continue; }
            if (smallest is null || count.Trainable < smallest.Value.Item2.Trainable) smallest = (description, count);
            if (constraint.Violation(count) is null) runnable++; else over++;
        }
        return new AdapterSpaceCheck(adapter, seen.Count, runnable, combinations <= MaxCombinations, over, smallest, unbuildable, firstError);
    }

    /// <summary>Every combination of the space's finite choices in sampling order (dependent choices see their parents), ranges
    /// and flags at their defaults, <paramref name="pinned"/> parameters fixed and <paramref name="holdAtDefault"/> ones at their
    /// defaults.</summary>
    public static IEnumerable<IReadOnlyDictionary<string, object>> Combinations(SearchSpace space, IReadOnlyDictionary<string, object> pinned,
        Func<string, bool> holdAtDefault)
    {
        ArgumentNullException.ThrowIfNull(space);
        var values = new Dictionary<string, object>();
        IEnumerable<IReadOnlyDictionary<string, object>> Walk(int i)
        {
            if (i == space.Options.Count) { yield return new Dictionary<string, object>(values); yield break; }
            var (name, option) = space.Options[i];
            IReadOnlyList<object> choices = pinned.TryGetValue(name, out var fixedValue) ? [fixedValue]
                : holdAtDefault(name) ? [option.Default(values)] : option.Enumerate(values) ?? [option.Default(values)];
            foreach (var choice in choices)
            {
                values[name] = choice;
                foreach (var combination in Walk(i + 1)) yield return combination;
            }
            values.Remove(name);
        }
        return Walk(0);
    }
}
