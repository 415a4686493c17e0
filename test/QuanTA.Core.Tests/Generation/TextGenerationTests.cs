using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Tokenization;
using QuanTA.Core.Tests.Models;
using System.Text.Json;

namespace QuanTA.Core.Tests.Generation;

/// <summary>Text-level generation with the folder's tokenizer: decoding, streaming, stop strings, batched prompts.</summary>
public class TextGenerationTests
{
    static string Json(string name, string key)
        => JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixture.Dir(name), "reference.json"))).RootElement.GetProperty(key) switch
        {
            { ValueKind: JsonValueKind.Array } a => a[0].GetString()!,
            var e => e.GetString()!,
        };

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public async Task StreamingGenerateAndIdsAgree(string name)
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir(name));
        var codec = HfTokenizer.FromPretrained(Fixture.Dir(name));
        var g = new TextGenerator(model, codec);
        var prompt = Json(name, "prompts");
        var expected = Json(name, "decoded_greedy")[prompt.Length..];                          // transformers' continuation
        var o = new GenerationOptions { MaxNewTokens = 12 };
        Assert.Equal(expected, g.Generate(prompt, o));
        var pieces = new List<string>();
        await foreach (var p in g.StreamAsync(prompt, o)) pieces.Add(p);
        Assert.True(pieces.Count > 1, "streaming should yield several pieces");
        Assert.Equal(expected, string.Concat(pieces));
    }

    [Fact]
    public async Task StopStringsCutTheTextInBothPaths()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var g = new TextGenerator(model, HfTokenizer.FromPretrained(Fixture.Dir("llama-tiny")));
        var prompt = Json("llama-tiny", "prompts");
        var full = g.Generate(prompt, new GenerationOptions { MaxNewTokens = 12 });               // "areare…"
        var stop = full.Substring(3, 3);
        var o = new GenerationOptions { MaxNewTokens = 12, StopStrings = [stop] };
        var cut = full[..full.IndexOf(stop, StringComparison.Ordinal)];
        Assert.Equal(cut, g.Generate(prompt, o));
        var streamed = new List<string>();
        await foreach (var p in g.StreamAsync(prompt, o)) streamed.Add(p);
        Assert.Equal(cut, string.Concat(streamed));
        Assert.True(g.LastTokenCount < 12, "generation should stop early at the stop string");
    }

    [Fact]
    public void BatchedTextPromptsMatchSingleOnes()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("qwen2-tiny"));
        var g = new TextGenerator(model, HfTokenizer.FromPretrained(Fixture.Dir("qwen2-tiny")));
        string[] prompts = ["the cat sat on", "bull: a formal proclamation", "somatosensory: of"];
        var o = new GenerationOptions { MaxNewTokens = 6 };
        var batched = g.Generate(prompts, o);
        for (var i = 0; i < prompts.Length; i++) Assert.Equal(g.Generate(prompts[i], o), batched[i]);
    }
}
