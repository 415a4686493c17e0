using System.Collections;
using System.CommandLine;
using System.Globalization;
using System.Reflection;
using Microsoft.ML;
using QuanTA.Cli.Commands;
using QuanTA.Core.Adapters;
using QuanTA.Core.Training;
using QuanTA.MLNet;

namespace QuanTA.Cli.Tests;

/// <summary>
/// Issue 18 items 3–4: the defaults live in <see cref="QuanTAFineTuneOptions"/> (its training-loop fields in
/// <see cref="TrainerOptions"/>), and the catalog methods, the CLI and the trainer agree with a fresh instance; every public
/// settable field has a <c>quanta finetune</c> flag (or a documented exclusion), and every flag reaches its field.
/// </summary>
public sealed class OptionDefaultsTests
{
    const string BaseModel = "/models/base";

    /// <summary>Every public field and settable property of the options: what a user can set.</summary>
    static IEnumerable<MemberInfo> SettableMembers() => typeof(QuanTAFineTuneOptions)
        .GetMembers(BindingFlags.Public | BindingFlags.Instance)
        .Where(m => m is FieldInfo { IsInitOnly: false, IsLiteral: false } || m is PropertyInfo { CanWrite: true, SetMethod.IsPublic: true });

    static object? ValueOf(MemberInfo m, object o) => m is FieldInfo f ? f.GetValue(o) : ((PropertyInfo)m).GetValue(o);

    static Type TypeOf(MemberInfo m) => m is FieldInfo f ? f.FieldType : ((PropertyInfo)m).PropertyType;

    static bool SameValue(object? a, object? b) =>
        a is IEnumerable x && b is IEnumerable y && a is not string ? x.Cast<object?>().SequenceEqual(y.Cast<object?>()) : Equals(a, b);

    /// <summary>The fields whose values differ between two options objects, with both values.</summary>
    static List<string> Differences(QuanTAFineTuneOptions expected, QuanTAFineTuneOptions actual, IEnumerable<string>? skip = null) =>
        SettableMembers().Where(m => skip?.Contains(m.Name) != true && !SameValue(ValueOf(m, expected), ValueOf(m, actual)))
            .Select(m => $"{m.Name}: expected {Show(ValueOf(m, expected))}, got {Show(ValueOf(m, actual))}").ToList();

    static string Show(object? v) => v switch
    {
        null => "null",
        string s => $"\"{s}\"",
        IEnumerable e => $"[{string.Join(", ", e.Cast<object?>().Select(Show))}]",
        _ => Convert.ToString(v, CultureInfo.InvariantCulture)!,
    };

    static QuanTAFineTuneOptions Fresh() => new() { BaseModelPath = BaseModel };

    static ParseResult ParseFineTune(params string[] extra) =>
        FineTuneCommand.Create().Parse(["--base-model", BaseModel, "--train", "train.tsv", "--output", "model.zip", .. extra]);

    static QuanTAFineTuneOptions CliOptions(params string[] extra)
    {
        var parsed = ParseFineTune(extra);
        Assert.Empty(parsed.Errors);
        return FineTuneCommand.OptionsFrom(parsed);
    }

    // ---- item 3: defaults once ----

    public static TheoryData<string> CatalogMethods()
    {
        var data = new TheoryData<string>();
        foreach (var m in typeof(QuanTACatalog).GetMethods(BindingFlags.Public | BindingFlags.Static)
                     .Where(m => m.Name == nameof(QuanTACatalog.QuanTAFineTune) && m.GetParameters().Any(p => p.Name == "baseModelPath")))
            data.Add(m.GetParameters()[0].ParameterType.Name);
        return data;
    }

    static (MethodInfo Method, object Catalog) Catalog(string catalogType, MLContext ml)
    {
        var method = typeof(QuanTACatalog).GetMethods(BindingFlags.Public | BindingFlags.Static).Single(m =>
            m.Name == nameof(QuanTACatalog.QuanTAFineTune) && m.GetParameters().Any(p => p.Name == "baseModelPath") &&
            m.GetParameters()[0].ParameterType.Name == catalogType);
        object catalog = catalogType == nameof(TransformsCatalog) ? ml.Transforms : ml.MulticlassClassification.Trainers;
        return (method, catalog);
    }

    /// <summary>Calls a catalog method with <paramref name="set"/> given and every other optional parameter left out.</summary>
    static QuanTAFineTuneOptions CallCatalog(MethodInfo method, object catalog, string? set = null, object? value = null)
    {
        var args = method.GetParameters().Select((p, i) => i == 0 ? catalog : p.Name == "baseModelPath" ? BaseModel
            : p.Name == set ? value : p.DefaultValue).ToArray();
        return ((QuanTAFineTuneEstimator)method.Invoke(null, BindingFlags.OptionalParamBinding, null, args, CultureInfo.InvariantCulture)!).Options;
    }

    [Theory]
    [MemberData(nameof(CatalogMethods))]
    public void CatalogMethodsRestateNoDefaultAndGiveTheOptionsDefaults(string catalogType)
    {
        var (method, catalog) = Catalog(catalogType, new MLContext(1));
        var optional = method.GetParameters().Where(p => p.IsOptional).ToList();
        Assert.True(optional.Count >= 5, $"{catalogType}: {optional.Count} optional parameters");
        foreach (var p in optional)
            Assert.True(p.DefaultValue is null, $"{catalogType}.{p.Name} restates a default ({p.DefaultValue}); leave it null so the options' applies.");
        var differences = Differences(Fresh(), CallCatalog(method, catalog));
        Assert.True(differences.Count == 0, string.Join("; ", differences));
    }

    [Theory]
    [MemberData(nameof(CatalogMethods))]
    public void EveryCatalogParameterReachesItsOptionsField(string catalogType)
    {
        var ml = new MLContext(1);
        var (method, catalog) = Catalog(catalogType, ml);
        var validation = ml.Data.LoadFromEnumerable(new[] { new { Text = "x" } });
        foreach (var p in method.GetParameters().Where(p => p.IsOptional))
        {
            var field = char.ToUpperInvariant(p.Name![0]) + p.Name[1..];
            var member = typeof(QuanTAFineTuneOptions).GetField(field) ?? throw new Xunit.Sdk.XunitException($"{catalogType}.{p.Name}: no options field {field}");
            object value = member.FieldType == typeof(IDataView) ? validation : OtherValue(member.FieldType, member.GetValue(Fresh()));
            var options = CallCatalog(method, catalog, p.Name, value);
            Assert.True(SameValue(value, member.GetValue(options)), $"{catalogType}.{p.Name} = {Show(value)} gave {field} = {Show(member.GetValue(options))}");
            Assert.Empty(Differences(Fresh(), options, [field]));             // and nothing else changed
        }
    }

    /// <summary>A value of <paramref name="type"/> other than <paramref name="current"/>.</summary>
    static object OtherValue(Type type, object? current)
    {
        var t = Nullable.GetUnderlyingType(type) ?? type;
        if (t == typeof(string)) return (current as string ?? "Column") + "2";
        if (t == typeof(int)) return (current as int? ?? 0) + 3;
        if (t == typeof(double)) return (current as double? ?? 0) + 0.25;
        if (t == typeof(float)) return (current as float? ?? 0) + 0.25f;
        if (t == typeof(bool)) return !(current as bool? ?? false);
        if (t.IsEnum) return Enum.GetValues(t).Cast<object>().First(v => !v.Equals(current));
        throw new NotSupportedException($"no other value for {type}");
    }

    [Fact]
    public void CliDefaultsAreTheOptionsDefaults()
    {
        var differences = Differences(Fresh(), CliOptions());
        Assert.True(differences.Count == 0, string.Join("; ", differences));
        // the verb's own stand-in for a null seed is the trainer's default seed
        Assert.Null(CliOptions().Seed);
        Assert.Equal(1, TrainerOptions.DefaultSeed);
    }

    [Fact]
    public void SweepSharesTheFineTuneDefaults()
    {
        var parsed = SweepCommand.Create().Parse(["--base-model", BaseModel, "--train", "train.tsv", "--output", "out"]);
        Assert.Empty(parsed.Errors);
        var d = new QuanTAFineTuneOptions();
        Assert.Equal(d.Task, FineTuneCommand.ParseTask(parsed.GetValue<string>("--task")!));
        Assert.Equal(d.TextColumnName, parsed.GetValue<string>("--text-column"));
        Assert.Equal(d.LabelColumnName, parsed.GetValue<string>("--label-column"));
        Assert.Equal(d.TargetTextColumnName, parsed.GetValue<string>("--target-column"));
        Assert.Equal(d.BatchSize, parsed.GetValue<int>("--batch-size"));
        Assert.Equal(d.MaxSequenceLength, parsed.GetValue<int>("--max-seq-len"));
        Assert.Equal(d.Seed ?? TrainerOptions.DefaultSeed, parsed.GetValue<int>("--seed"));
    }

    /// <summary>TrainerOptions' name for a QuanTAFineTuneOptions field where the two differ.</summary>
    static readonly Dictionary<string, string> TrainerName = new()
    {
        [nameof(QuanTAFineTuneOptions.CheckpointDirectory)] = nameof(TrainerOptions.CheckpointDir),
        [nameof(QuanTAFineTuneOptions.ResumeFromCheckpoint)] = nameof(TrainerOptions.ResumeFrom),
    };

    [Fact]
    public void TrainerOptionsHoldTheSameDefaults()
    {
        var trainer = new TrainerOptions();
        var options = new QuanTAFineTuneOptions();
        var compared = new List<string>();
        foreach (var m in SettableMembers())
        {
            var property = typeof(TrainerOptions).GetProperty(TrainerName.GetValueOrDefault(m.Name, m.Name));
            if (property is null) continue;
            object? mine = ValueOf(m, options), theirs = property.GetValue(trainer);
            if (m.Name == nameof(QuanTAFineTuneOptions.Seed)) mine ??= TrainerOptions.DefaultSeed;   // null: the MLContext's, else this
            if (mine is IConvertible && theirs is IConvertible && mine is not (string or Enum))
                Assert.True(Convert.ToDouble(mine, CultureInfo.InvariantCulture) == Convert.ToDouble(theirs, CultureInfo.InvariantCulture),
                    $"{m.Name}: QuanTAFineTuneOptions {Show(mine)}, TrainerOptions {Show(theirs)}");
            else Assert.True(SameValue(mine, theirs), $"{m.Name}: QuanTAFineTuneOptions {Show(mine)}, TrainerOptions {Show(theirs)}");
            compared.Add(m.Name);
        }
        string[] shared = ["Epochs", "BatchSize", "GradientAccumulationSteps", "LearningRate", "Schedule", "WarmupRatio", "WeightDecay",
            "MaxGradNorm", "Seed", "CheckpointDirectory", "CheckpointEverySteps", "KeepLastCheckpoints", "ResumeFromCheckpoint",
            "EarlyStoppingPatience", "EarlyStoppingThreshold", "ValidateEverySteps", "RestoreBestAtEnd"];
        Assert.Equal(shared.Order(), compared.Order());
        Assert.False(trainer.RestoreBestAtEnd);                              // HF's load_best_model_at_end default
    }

    [Fact]
    public void AdapterDefaultsAreTheCoreConfigs()
    {
        var o = new QuanTAFineTuneOptions();
        Assert.Equal(new QuanTAConfig().AxisCount, o.AxisCount);
        Assert.Equal(new QuanTAConfig().Rank, o.Rank);
        Assert.Equal(new QuanTAConfig().TensorCount, o.TensorCount);
        Assert.Equal(new QuanTAConfig().Dropout, o.Dropout);
        Assert.Equal(new LoRAConfig().Rank, o.LoRARank);
    }

    // ---- validation once ----

    [Theory]
    [InlineData("Rank", "--rank", "0")]
    [InlineData("TensorCount", "--tensor-count", "0")]
    [InlineData("AxisCount", "--axis-count", "1")]
    [InlineData("Pairs", "--pairs", "1:0")]
    [InlineData("Dropout", "--dropout", "1.5")]
    [InlineData("LoRARank", "--lora-rank", "0")]
    public void AdapterRulesAreTheCoreConfigsAndTheCliNamesTheFlag(string field, string flag, string value)
    {
        var o = CliOptions(flag, value);
        var e = Assert.Throws<ArgumentException>(o.Validate);
        Assert.Equal(field, e.ParamName);
        // the same rule, word for word, as the Core config's own error
        var config = Assert.IsType<ArgumentException>(e.InnerException);
        var reason = e.Message[$"QuanTAFineTuneOptions.{field}: ".Length..^$" (Parameter '{field}')".Length];
        Assert.Contains($": {reason} (Parameter '{config.ParamName}')", config.Message);
        var cli = FineTuneCommand.DescribeWithFlags(e);
        Assert.Equal($"{flag} {reason}", cli);
        Assert.DoesNotContain("QuanTAFineTuneOptions", cli);
    }

    // ---- item 4: every trainer option on the CLI ----

    [Fact]
    public void EverySettableFieldHasAFlagOrADocumentedExclusion()
    {
        var flags = FineTuneCommand.Create().Options.Select(o => o.Name).ToHashSet();
        var fields = SettableMembers().Select(m => m.Name).ToList();
        var missing = fields.Where(f => !FineTuneCommand.FlagOfProperty.ContainsKey(f) && !FineTuneCommand.FieldsWithoutFlag.ContainsKey(f)).ToList();
        Assert.True(missing.Count == 0, $"QuanTAFineTuneOptions fields without a quanta finetune flag: {string.Join(", ", missing)} " +
            "(add a flag and a FlagOfProperty entry, or a FieldsWithoutFlag entry with the reason)");
        Assert.Empty(FineTuneCommand.FlagOfProperty.Keys.Intersect(FineTuneCommand.FieldsWithoutFlag.Keys));
        Assert.Empty(FineTuneCommand.FlagOfProperty.Keys.Concat(FineTuneCommand.FieldsWithoutFlag.Keys).Except(fields));   // no stale entry
        Assert.Empty(FineTuneCommand.FlagOfProperty.Values.Except(flags));                                               // every flag exists
        Assert.All(FineTuneCommand.FieldsWithoutFlag.Values, reason => Assert.True(reason.Length > 20, reason));
        Assert.True(FineTuneCommand.FieldsWithoutFlag.Count <= 3, "an exclusion was added: keep the list short and each reason explicit");
    }

    [Fact]
    public void TheCliPageListsEveryFlagAndExclusion()
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "QuanTA.MLNet.sln"))) root = root.Parent;
        Assert.NotNull(root);
        var page = File.ReadAllText(Path.Combine(root.FullName, "docs", "cli.md"));
        foreach (var (field, flag) in FineTuneCommand.FlagOfProperty)
            Assert.True(page.Contains($"| `{flag}` | `{field}` |", StringComparison.Ordinal), $"docs/cli.md has no row for {flag} → {field}");
        foreach (var field in FineTuneCommand.FieldsWithoutFlag.Keys)
            Assert.True(page.Contains($"| `{field}` |", StringComparison.Ordinal), $"docs/cli.md does not list the exclusion {field}");
    }

    /// <summary>For a field with a flag: the command-line words that set it to a value other than the default, and that value.</summary>
    static (string[] Words, object? Value) NonDefault(MemberInfo m)
    {
        var flag = FineTuneCommand.FlagOfProperty[m.Name];
        var current = ValueOf(m, new QuanTAFineTuneOptions());
        var type = TypeOf(m);
        switch (m.Name)
        {
            case nameof(QuanTAFineTuneOptions.Task):
                return ([flag, "generation"], QuanTATask.TextGeneration);
            case nameof(QuanTAFineTuneOptions.AxisLayout):
                return ([flag, "4,4,2"], new[] { 4, 4, 2 });
            case nameof(QuanTAFineTuneOptions.Pairs):
                return ([flag, "0:1,1:3,0:1"], new[] { (0, 1), (1, 3), (0, 1) });
            case nameof(QuanTAFineTuneOptions.TargetModules):
                return ([flag, "k_proj, o_proj"], new[] { "k_proj", "o_proj" });
            case nameof(QuanTAFineTuneOptions.StopStrings):
                return ([flag, "###", flag, @"\n\nQ:"], new[] { "###", "\n\nQ:" });
        }
        var value = OtherValue(type, current);
        var text = value switch
        {
            Enum e => (string)typeof(EnumFlag).GetMethod(nameof(EnumFlag.Format))!.MakeGenericMethod(e.GetType()).Invoke(null, [e])!,
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            bool b => b ? "true" : "false",
            _ => (string)value,
        };
        return ([flag, text], value);
    }

    [Fact]
    public void EveryFlagReachesItsField()
    {
        string[] setElsewhere = [nameof(QuanTAFineTuneOptions.BaseModelPath), nameof(QuanTAFineTuneOptions.ValidationSet)];
        var checkedFields = 0;
        foreach (var m in SettableMembers().Where(m => FineTuneCommand.FlagOfProperty.ContainsKey(m.Name) && !setElsewhere.Contains(m.Name)))
        {
            var (words, value) = NonDefault(m);
            var o = CliOptions(words);
            Assert.True(SameValue(value, ValueOf(m, o)), $"{string.Join(' ', words)} gave {m.Name} = {Show(ValueOf(m, o))}, not {Show(value)}");
            var others = Differences(Fresh(), o, [m.Name]);
            Assert.True(others.Count == 0, $"{string.Join(' ', words)} also changed {string.Join("; ", others)}");
            checkedFields++;
        }
        Assert.True(checkedFields >= 50, $"{checkedFields} flags checked");
        Assert.Equal(BaseModel, CliOptions().BaseModelPath);
    }

    [Fact]
    public void TheQuanTAFlagsSetTheQuanTAOptions()
    {
        var o = CliOptions("--rank", "4", "--pairs", "0:1,2:3", "--tensor-count", "5", "--classification-mode", "verbalizer",
            "--training-path", "layerwise-uncached", "--truncation", "error", "--greedy", "false", "--restore-best");
        Assert.Equal(4, o.Rank);
        Assert.Equal(new[] { (0, 1), (2, 3) }, o.Pairs!);
        Assert.Equal(5, o.TensorCount);
        Assert.Equal(ClassificationMode.Verbalizer, o.ClassificationMode);
        Assert.Equal(QuanTA.Core.Training.QuanTATrainingPath.LayerwiseUncached, o.TrainingPath);
        Assert.Equal(TruncationPolicy.Error, o.Truncation);
        Assert.False(o.Greedy);
        Assert.True(o.RestoreBestAtEnd);
        Assert.Equal(QuanTA.Core.Training.QuanTATrainingPath.Auto, CliOptions().TrainingPath);   // left out: decided per fit
        Assert.Equal(QuanTA.Core.Training.QuanTATrainingPath.PerLayer, CliOptions("--training-path", "per-layer").TrainingPath);
    }

    [Theory]
    [InlineData("--pairs", "0-1", "'0-1' is not a pair")]
    [InlineData("--pairs", "0:1:2", "'0:1:2' is not a pair")]
    [InlineData("--truncation", "cut", "--truncation 'cut' is not truncate-with-warning or error")]
    [InlineData("--schedule", "step", "--schedule 'step' is not linear, cosine or constant")]
    [InlineData("--adapter", "dora", "--adapter 'dora' is not quanta or lora")]
    public void BadFlagValuesNameTheFlagAndTheChoices(string flag, string value, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => CliOptions(flag, value));
        Assert.Contains(expected, e.Message);
        Assert.Contains(flag, e.Message);
    }
}
