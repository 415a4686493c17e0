namespace QuanTA.MLNet.Tests;

public class GenerationMetricsTests
{
    // expected values from the official SQuAD v1.1 evaluate script's normalize_answer / f1_score
    [Theory]
    [InlineData("The Cat sat.", "cat sat")]
    [InlineData("  an  apple,   a day ", "apple day")]
    [InlineData("Theatre", "theatre")]
    public void NormalizeMatchesSquad(string input, string expected) => Assert.Equal(expected, GenerationMetrics.Normalize(input));

    [Theory]
    [InlineData("the cat sat on the mat", "a cat sat on a mat", 1.0)]
    [InlineData("cat sat", "cat sat on mat", 2 * (1.0 * 0.5) / 1.5)]
    [InlineData("dog", "cat", 0.0)]
    [InlineData("the", "a", 1.0)]            // both normalize to empty
    [InlineData("cat cat", "cat", 2 * (0.5 * 1.0) / 1.5)]
    public void TokenF1MatchesSquad(string prediction, string gold, double expected) =>
        Assert.Equal(expected, GenerationMetrics.TokenF1(prediction, gold), 1e-12);

    [Fact]
    public void ExactMatchIgnoresCaseArticlesAndPunctuation()
    {
        Assert.True(GenerationMetrics.ExactMatch("The Eiffel Tower!", "eiffel tower"));
        Assert.False(GenerationMetrics.ExactMatch("Eiffel", "eiffel tower"));
    }
}
