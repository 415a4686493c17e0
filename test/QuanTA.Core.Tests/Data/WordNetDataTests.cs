using QuanTA.Core.Data;

namespace QuanTA.Core.Tests.Data;

/// <summary>The embedded WordNet 3.0 data: columns, counts against Princeton's published totals, disjoint splits.</summary>
public class WordNetDataTests
{
    static readonly IReadOnlyList<WordNetSynset> Synsets = WordNetData.LoadSynsets();
    static readonly WordNetSplit[] Splits = [WordNetSplit.Train, WordNetSplit.Validation, WordNetSplit.Test];

    [Fact]
    public void SynsetCountsMatchWordNet30Statistics()
    {
        // Princeton's WordNet 3.0 statistics (wnstats(7WN)): 82,115 noun, 13,767 verb, 18,156 adjective, 3,621 adverb synsets.
        Assert.Equal(117_659, Synsets.Count);
        Assert.Equal(82_115, Synsets.Count(s => s.Pos == "n"));
        Assert.Equal(13_767, Synsets.Count(s => s.Pos == "v"));
        Assert.Equal(18_156, Synsets.Count(s => s.Pos is "a" or "s"));
        Assert.Equal(3_621, Synsets.Count(s => s.Pos == "r"));
        Assert.Equal(Synsets.Count, Synsets.Select(s => s.Id).Distinct().Count());
        Assert.All(Synsets, s => Assert.Contains(s.Lexname, WordNetData.Lexnames));
        Assert.Equal(45, Synsets.Select(s => s.Lexname).Distinct().Count());
        // lexname prefix agrees with the part of speech (adjective satellites live in adj.all)
        Assert.All(Synsets, s => Assert.StartsWith(s.Pos switch { "n" => "noun.", "v" => "verb.", "r" => "adv.", _ => "adj." }, s.Lexname));
    }

    [Fact]
    public void SynsetFieldsAreParsed()
    {
        var dog = Synsets.Single(s => s.Id == "n02084071");
        Assert.Equal(["dog", "domestic dog", "Canis familiaris"], dog.Words);
        Assert.Equal("noun.animal", dog.Lexname);
        Assert.StartsWith("a member of the genus Canis", dog.Definition);
        Assert.Equal(["the dog barked all night"], dog.Examples);
        Assert.Equal(dog.Definition + "; \"the dog barked all night\"", dog.Gloss);
        Assert.All(Synsets, s => Assert.False(string.IsNullOrWhiteSpace(s.Definition) || s.Words.Length == 0, s.Id));
    }

    [Fact]
    public void SplitsAreEightyTenTen()
    {
        var counts = Splits.Select(sp => Synsets.Count(s => s.Split == sp)).ToArray();
        Assert.Equal([94_127, 11_765, 11_767], counts);
    }

    [Fact]
    public void DefaultClassificationSampleHasExpectedColumnsAndCounts()
    {
        int[] perClass = [400, 50, 50];
        for (int i = 0; i < Splits.Length; i++)
        {
            var rows = WordNetData.LoadLexnames(Splits[i]);
            Assert.Equal(perClass[i] * 10, rows.Count);
            var byLabel = rows.GroupBy(r => r.Label).ToDictionary(g => g.Key, g => g.Count());
            Assert.Equal(WordNetData.DefaultClasses.OrderBy(c => c, StringComparer.Ordinal), byLabel.Keys.OrderBy(c => c, StringComparer.Ordinal));
            Assert.All(byLabel.Values, n => Assert.Equal(perClass[i], n));
            Assert.All(rows, r => Assert.Matches("^[^:]+: .+", r.Text));
        }
    }

    [Fact]
    public void DefaultGenerationSampleHasExpectedColumnsAndCounts()
    {
        int[] expected = [4000, 200, 200];
        for (int i = 0; i < Splits.Length; i++)
        {
            var rows = WordNetData.LoadDefinitions(Splits[i]);
            Assert.Equal(expected[i], rows.Count);
            Assert.All(rows, r => Assert.Matches("^[A-Za-z][A-Za-z'-]*:$", r.Prompt));
            Assert.All(rows, r => Assert.InRange(r.Target.Split(' ').Length, 3, 20));
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ClassificationSplitsAreDisjoint(bool full)
    {
        var texts = Splits.Select(sp => WordNetData.LoadLexnames(sp, full).Select(r => r.Text).ToHashSet()).ToArray();
        AssertPairwiseDisjoint(texts);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GenerationSplitsAreDisjoint(bool full)
    {
        var texts = Splits.Select(sp => WordNetData.LoadDefinitions(sp, full)
            .Select(r => r.Prompt + WordNetData.PromptTargetSeparator + r.Target).ToHashSet()).ToArray();
        AssertPairwiseDisjoint(texts);
    }

    [Fact]
    public void DefaultSamplesAreDrawnFromTheSameSplitOfTheFullData()
    {
        foreach (var split in Splits)
        {
            var fullText = WordNetData.LoadLexnames(split, full: true).Select(r => (r.Text, r.Label)).ToHashSet();
            Assert.All(WordNetData.LoadLexnames(split), r => Assert.Contains((r.Text, r.Label), fullText));
            var fullGen = WordNetData.LoadDefinitions(split, full: true).Select(r => (r.Prompt, r.Target)).ToHashSet();
            Assert.All(WordNetData.LoadDefinitions(split), r => Assert.Contains((r.Prompt, r.Target), fullGen));
        }
    }

    [Fact]
    public void FullClassificationUsesAllLexnames()
    {
        var train = WordNetData.LoadLexnames(WordNetSplit.Train, full: true);
        Assert.Equal(94_127, train.Count);
        Assert.Equal(45, train.Select(r => r.Label).Distinct().Count());
    }

    [Fact]
    public void GlossLinesComeFromTheRequestedSplitOnly()
    {
        var lines = WordNetData.GlossLines(WordNetSplit.Validation).ToList();
        Assert.Equal(11_765, lines.Count);
        var validationDefs = Synsets.Where(s => s.Split == WordNetSplit.Validation).Select(s => s.Gloss).ToHashSet();
        Assert.All(lines, l => Assert.Contains(l, validationDefs));
    }

    [Fact]
    public void MissingFolderIsAClearError()
    {
        var dir = Path.Combine(Path.GetTempPath(), "quanta-no-wordnet-" + Guid.NewGuid().ToString("N"));
        var e = Assert.Throws<DirectoryNotFoundException>(() => WordNetData.LoadLexnames(WordNetSplit.Train, directory: dir));
        Assert.Contains(WordNetData.SynsetsFile, e.Message);
    }

    [Fact]
    public void WrongHeaderIsAClearError()
    {
        var dir = Directory.CreateTempSubdirectory("quanta-bad-wordnet-").FullName;
        try
        {
            foreach (var name in new[] { WordNetData.SynsetsFile, "lexname-train.tsv.gz" })
            {
                using var f = File.Create(Path.Combine(dir, name));
                using var gz = new System.IO.Compression.GZipStream(f, System.IO.Compression.CompressionLevel.Fastest);
                using var w = new StreamWriter(gz);
                w.Write("Sentence\tLabel\nx\ty\n");
            }
            var e = Assert.Throws<InvalidDataException>(() => WordNetData.LoadLexnames(WordNetSplit.Train, directory: dir));
            Assert.Contains("Text, Label", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    static void AssertPairwiseDisjoint(HashSet<string>[] sets)
    {
        for (int a = 0; a < sets.Length; a++)
            for (int b = a + 1; b < sets.Length; b++)
                Assert.Empty(sets[a].Intersect(sets[b]));
    }
}
