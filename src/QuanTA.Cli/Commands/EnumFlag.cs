namespace QuanTA.Cli.Commands;

/// <summary>
/// Enum values on the command line: each value's name in kebab case (<c>TruncateWithWarning</c> ↔ <c>truncate-with-warning</c>,
/// <c>QuanTA</c> ↔ <c>quanta</c>), read case-insensitively; the plain enum name is accepted too. Flag defaults are written with
/// <see cref="Format{T}"/> from a fresh <c>QuanTAFineTuneOptions</c>, so the CLI restates no enum default.
/// </summary>
internal static class EnumFlag
{
    /// <summary>The command-line spelling of <paramref name="value"/>.</summary>
    public static string Format<T>(T value) where T : struct, Enum
    {
        var name = value.ToString();
        var text = new System.Text.StringBuilder(name.Length + 4);
        for (int i = 0; i < name.Length; i++)
        {
            // a dash before an upper-case letter that starts a new lower-case word ("WithWarning"), not inside an acronym ("QuanTA")
            if (i > 0 && char.IsUpper(name[i]) && char.IsLower(name[i - 1]) && i + 1 < name.Length && char.IsLower(name[i + 1]))
                text.Append('-');
            text.Append(char.ToLowerInvariant(name[i]));
        }
        return text.ToString();
    }

    /// <summary>Reads <paramref name="text"/> given to <paramref name="flag"/>; throws naming the flag and its choices.</summary>
    public static T Parse<T>(string flag, string text) where T : struct, Enum
    {
        var given = text.Trim();
        foreach (var value in Enum.GetValues<T>())
            if (string.Equals(Format(value), given, StringComparison.OrdinalIgnoreCase) ||
                string.Equals(value.ToString(), given, StringComparison.OrdinalIgnoreCase))
                return value;
        throw new ArgumentException($"{flag} '{text}' is not {Choices<T>()}.");
    }

    /// <summary>"a, b or c": the values of <typeparamref name="T"/> as the command line spells them.</summary>
    public static string Choices<T>() where T : struct, Enum
    {
        var names = Enum.GetValues<T>().Select(Format).ToArray();
        return names.Length == 1 ? names[0] : $"{string.Join(", ", names[..^1])} or {names[^1]}";
    }
}
