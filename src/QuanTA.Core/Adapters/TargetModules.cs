using System.Text.RegularExpressions;

namespace QuanTA.Core.Adapters;

/// <summary>
/// Which <see cref="AdaptableLinear"/> modules of a model receive an adapter (PEFT's <c>target_modules</c>):
/// <list type="bullet">
/// <item>names: a module matches when its full name equals a target or ends with "." + target ("q_proj" matches
/// "model.layers.0.self_attn.q_proj"); every target must match at least one module;</item>
/// <item>a regex, matched against the full name (whole-name match, like PEFT's <c>re.fullmatch</c>);</item>
/// <item>"all-linear": every AdaptableLinear except the output heads (<see cref="HeadNames"/>: lm_head, score).</item>
/// </list>
/// <see cref="Exclude"/> removes modules by the same name/suffix rule.
/// </summary>
public sealed record TargetModules
{
    /// <summary>Final name components never adapted by "all-linear".</summary>
    public static readonly IReadOnlyList<string> HeadNames = ["lm_head", "score"];

    /// <summary>Exact names or name suffixes (null unless built by <see cref="Names"/>).</summary>
    public IReadOnlyList<string>? NameList { get; init; }
    /// <summary>Whole-name regex (null unless built by <see cref="Regex"/>).</summary>
    public string? Pattern { get; init; }
    /// <summary>True for "all-linear".</summary>
    public bool AllLinear { get; init; }
    /// <summary>Names or suffixes to skip.</summary>
    public IReadOnlyList<string> Exclude { get; init; } = [];

    /// <summary>Targets by exact name or name suffix, e.g. <c>Names("q_proj", "v_proj")</c> (the paper's choice).</summary>
    public static TargetModules Names(params string[] names)
    {
        if (names is null || names.Length == 0 || names.Any(string.IsNullOrWhiteSpace))
            throw new ArgumentException("Target module names must be a non-empty list of non-empty names (e.g. \"q_proj\", \"v_proj\").", nameof(names));
        if (names.Length == 1 && names[0] == "all-linear") return All();
        return new TargetModules { NameList = names };
    }

    /// <summary>Targets whose full name matches <paramref name="pattern"/> entirely.</summary>
    public static TargetModules Regex(string pattern)
    {
        try { _ = new Regex(pattern); }
        catch (ArgumentException e) { throw new ArgumentException($"Target regex '{pattern}' is invalid: {e.Message}", nameof(pattern), e); }
        return new TargetModules { Pattern = pattern };
    }

    /// <summary>"all-linear": every adaptable linear layer except lm_head / score.</summary>
    public static TargetModules All() => new() { AllLinear = true };

    /// <summary>Parses a user string: "all-linear", "regex:PATTERN" (or the short "re:PATTERN"), or a comma-separated list of names.</summary>
    public static TargetModules Parse(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        text = text.Trim();
        if (text == "all-linear") return All();
        if (text.StartsWith("regex:", StringComparison.Ordinal)) return Regex(text["regex:".Length..]);
        if (text.StartsWith("re:", StringComparison.Ordinal)) return Regex(text["re:".Length..]);
        return Names(text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    /// <summary>True when <paramref name="fullName"/> equals <paramref name="target"/> or ends with "." + target.</summary>
    public static bool NameMatches(string fullName, string target) =>
        fullName == target || fullName.EndsWith("." + target, StringComparison.Ordinal);

    /// <summary>Selects the targeted names among <paramref name="linearNames"/>; throws naming the available layers when a
    /// target matches nothing.</summary>
    public IReadOnlyList<string> Select(IReadOnlyList<string> linearNames)
    {
        IEnumerable<string> chosen;
        if (AllLinear)
            chosen = linearNames.Where(n => !HeadNames.Contains(n.Split('.')[^1]));
        else if (Pattern is not null)
        {
            var re = new Regex($"^(?:{Pattern})$");
            chosen = linearNames.Where(n => re.IsMatch(n)).ToList();
            if (!chosen.Any()) throw new ArgumentException($"Target regex '{Pattern}' matches no linear layer. {Available(linearNames)}");
        }
        else
        {
            var names = NameList ?? throw new InvalidOperationException("TargetModules has neither names, a regex nor all-linear.");
            foreach (var t in names)
                if (!linearNames.Any(n => NameMatches(n, t)))
                    throw new ArgumentException($"Target module '{t}' matches no linear layer. {Available(linearNames)}");
            chosen = linearNames.Where(n => names.Any(t => NameMatches(n, t)));
        }
        var result = chosen.Where(n => !Exclude.Any(e => NameMatches(n, e))).ToList();
        if (result.Count == 0) throw new ArgumentException($"The targets {this} select no linear layer. {Available(linearNames)}");
        return result;
    }

    static string Available(IReadOnlyList<string> names)
    {
        var suffixes = names.Select(n => n.Split('.')[^1]).Distinct().ToList();
        return $"Available linear layer names (suffixes): {string.Join(", ", suffixes)}; full names e.g. {string.Join(", ", names.Take(8))}" +
               (names.Count > 8 ? $" … ({names.Count} in all)." : ".");
    }

    /// <inheritdoc/>
    public override string ToString() =>
        AllLinear ? "all-linear" : Pattern is not null ? $"regex:{Pattern}" : string.Join(",", NameList ?? []);
}
