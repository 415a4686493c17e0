using System.IO.Compression;
using System.Text;

namespace QuanTA.Core.Data;

/// <summary>Which fixed-seed split of the WordNet data (80 / 10 / 10 of the synsets).</summary>
public enum WordNetSplit
{
    /// <summary>Training split (the tiny base model and its tokenizer were trained on this split only).</summary>
    Train,
    /// <summary>Validation split.</summary>
    Validation,
    /// <summary>Test split.</summary>
    Test,
}

/// <summary>One row of the gloss → lexicographer-file classification task.</summary>
public sealed class LexnameExample
{
    /// <summary><c>"&lt;first lemma&gt;: &lt;definition&gt;"</c>, e.g. <c>"mandolin: a stringed instrument related to the lute, ..."</c>.</summary>
    public string Text { get; init; } = "";

    /// <summary>The lexicographer file name, e.g. <c>noun.artifact</c> (one of <see cref="WordNetData.Lexnames"/>).</summary>
    public string Label { get; init; } = "";
}

/// <summary>One row of the word → definition generation task (definition modelling).</summary>
public sealed class DefinitionExample
{
    /// <summary><c>"&lt;lemma&gt;:"</c>, e.g. <c>"muchness:"</c>.</summary>
    public string Prompt { get; init; } = "";

    /// <summary>The definition; a causal LM sees <c>Prompt + <see cref="WordNetData.PromptTargetSeparator"/> + Target</c>.</summary>
    public string Target { get; init; } = "";
}

/// <summary>One WordNet 3.0 synset as stored in <c>synsets.tsv.gz</c>.</summary>
public sealed class WordNetSynset
{
    /// <summary>Part-of-speech letter of the data file + 8-digit byte offset, e.g. <c>n02084071</c>; unique.</summary>
    public string Id { get; init; } = "";
    /// <summary>The split this synset belongs to.</summary>
    public WordNetSplit Split { get; init; }
    /// <summary>WordNet <c>ss_type</c>: n, v, a, s (adjective satellite) or r.</summary>
    public string Pos { get; init; } = "";
    /// <summary>Lexicographer file name, e.g. <c>noun.animal</c>.</summary>
    public string Lexname { get; init; } = "";
    /// <summary>The synset's lemmas, underscores replaced by spaces; the first one is used by the tasks.</summary>
    public string[] Words { get; init; } = [];
    /// <summary>The gloss up to its first quoted example.</summary>
    public string Definition { get; init; } = "";
    /// <summary>The gloss's quoted usage examples, without quotes.</summary>
    public string[] Examples { get; init; } = [];

    /// <summary>The original WordNet gloss: <c>definition; "example"; "example"</c>.</summary>
    public string Gloss => Examples.Length == 0
        ? Definition
        : Definition + "; " + string.Join("; ", Examples.Select(e => "\"" + e + "\""));
}

/// <summary>
/// Reads the embedded WordNet 3.0 data (<c>samples/Data/wordnet</c>, derived by <c>tools/wordnet/derive.py</c>) as
/// plain rows. The default samples are small (10 balanced classes, 4,000 training rows); <c>full: true</c> gives
/// every synset of the split (45 classes). For ML.NET: <c>mlContext.Data.LoadFromEnumerable(WordNetData.LoadLexnames(WordNetSplit.Train))</c>.
/// </summary>
public static class WordNetData
{
    /// <summary>File with every synset and its split.</summary>
    public const string SynsetsFile = "synsets.tsv.gz";

    /// <summary>What joins <see cref="DefinitionExample.Prompt"/> and <see cref="DefinitionExample.Target"/> into the text a causal LM sees.</summary>
    public const string PromptTargetSeparator = " ";

    /// <summary>The 45 WordNet 3.0 lexicographer files, indexed by file number (lexnames(5WN)).</summary>
    public static IReadOnlyList<string> Lexnames { get; } =
    [
        "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
        "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
        "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
        "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
        "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
        "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
        "verb.social", "verb.stative", "verb.weather", "adj.ppl",
    ];

    /// <summary>The 10 classes of the default classification sample.</summary>
    public static IReadOnlyList<string> DefaultClasses { get; } =
    [
        "noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.location", "noun.person", "noun.plant",
        "noun.substance", "verb.communication", "verb.motion",
    ];

    static readonly string[] SynsetColumns = ["Id", "Split", "Pos", "Lexname", "Words", "Definition", "Examples"];
    const string ListSeparator = " | ";

    /// <summary>
    /// Classification rows of <paramref name="split"/>: the default 10-class sample (4,000 / 500 / 500 rows), or with
    /// <paramref name="full"/> every synset of the split (45 classes).
    /// </summary>
    /// <param name="split">Which split.</param>
    /// <param name="full">false: the default sample file; true: derived from <c>synsets.tsv.gz</c>.</param>
    /// <param name="directory">The WordNet folder; null finds it (<see cref="EmbeddedDefaults.WordNetDirectory"/>).</param>
    public static IReadOnlyList<LexnameExample> LoadLexnames(WordNetSplit split, bool full = false, string? directory = null)
    {
        if (full)
            return LoadSynsets(directory).Where(s => s.Split == split)
                .Select(s => new LexnameExample { Text = s.Words[0] + ": " + s.Definition, Label = s.Lexname }).ToList();
        return ReadTsv(Path.Combine(EmbeddedDefaults.WordNetDirectory(directory), $"lexname-{SplitName(split)}.tsv.gz"),
                ["Text", "Label"])
            .Select(r => new LexnameExample { Text = r[0], Label = r[1] }).ToList();
    }

    /// <summary>
    /// Generation rows of <paramref name="split"/>: the default sample (4,000 / 200 / 200 rows of one-word lemmas with
    /// definitions of 3–20 words), or with <paramref name="full"/> every synset of the split (first lemma).
    /// </summary>
    /// <param name="split">Which split.</param>
    /// <param name="full">false: the default sample file; true: derived from <c>synsets.tsv.gz</c>.</param>
    /// <param name="directory">The WordNet folder; null finds it (<see cref="EmbeddedDefaults.WordNetDirectory"/>).</param>
    public static IReadOnlyList<DefinitionExample> LoadDefinitions(WordNetSplit split, bool full = false, string? directory = null)
    {
        if (full)
            return LoadSynsets(directory).Where(s => s.Split == split)
                .Select(s => new DefinitionExample { Prompt = s.Words[0] + ":", Target = s.Definition }).ToList();
        return ReadTsv(Path.Combine(EmbeddedDefaults.WordNetDirectory(directory), $"definition-{SplitName(split)}.tsv.gz"),
                ["Prompt", "Target"])
            .Select(r => new DefinitionExample { Prompt = r[0], Target = r[1] }).ToList();
    }

    /// <summary>Every synset (117,659), in <c>Id</c> order.</summary>
    /// <param name="directory">The WordNet folder; null finds it (<see cref="EmbeddedDefaults.WordNetDirectory"/>).</param>
    public static IReadOnlyList<WordNetSynset> LoadSynsets(string? directory = null)
    {
        var path = Path.Combine(EmbeddedDefaults.WordNetDirectory(directory), SynsetsFile);
        return ReadTsv(path, SynsetColumns).Select(r => new WordNetSynset
        {
            Id = r[0],
            Split = ParseSplit(r[1], path),
            Pos = r[2],
            Lexname = r[3],
            Words = r[4].Split(ListSeparator),
            Definition = r[5],
            Examples = r[6].Length == 0 ? [] : r[6].Split(ListSeparator),
        }).ToList();
    }

    /// <summary>
    /// The pre-training text of the tiny base model: one line per synset of <paramref name="split"/>, its full gloss
    /// (definition and quoted examples). The <c>word:</c> prompt format of the generation task is deliberately absent.
    /// </summary>
    public static IEnumerable<string> GlossLines(WordNetSplit split, string? directory = null)
        => LoadSynsets(directory).Where(s => s.Split == split).Select(s => s.Gloss);

    /// <summary>The file-name form of a split: train, validation, test.</summary>
    public static string SplitName(WordNetSplit split) => split switch
    {
        WordNetSplit.Train => "train",
        WordNetSplit.Validation => "validation",
        WordNetSplit.Test => "test",
        _ => throw new ArgumentOutOfRangeException(nameof(split), split, "expected Train, Validation or Test"),
    };

    static WordNetSplit ParseSplit(string value, string path) => value switch
    {
        "train" => WordNetSplit.Train,
        "validation" => WordNetSplit.Validation,
        "test" => WordNetSplit.Test,
        _ => throw new InvalidDataException($"{path}: Split '{value}' is not one of train, validation, test."),
    };

    /// <summary>Reads a gzip-compressed TSV with a header line, checking the columns; yields the data rows.</summary>
    static IEnumerable<string[]> ReadTsv(string path, string[] expectedColumns)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"WordNet file '{path}' is missing (regenerate with tools/wordnet/derive.py).", path);
        using var file = File.OpenRead(path);
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var reader = new StreamReader(gzip, Encoding.UTF8);
        var header = reader.ReadLine();
        if (header is null || header != string.Join('\t', expectedColumns))
            throw new InvalidDataException(
                $"{path}: header '{header}' does not match the expected columns '{string.Join(", ", expectedColumns)}'.");
        var rows = new List<string[]>();
        int lineNo = 1;
        for (var line = reader.ReadLine(); line is not null; line = reader.ReadLine())
        {
            lineNo++;
            var fields = line.Split('\t');
            if (fields.Length != expectedColumns.Length)
                throw new InvalidDataException(
                    $"{path}:{lineNo}: {fields.Length} fields, expected {expectedColumns.Length} ({string.Join(", ", expectedColumns)}).");
            rows.Add(fields);
        }
        return rows;
    }
}
