using System.Diagnostics;
using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Tests.Models;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Generation;

/// <summary>Greedy decoding against transformers' generate, cache vs no cache, batching, sampling, stop conditions.</summary>
public class GeneratorTests(ITestOutputHelper output)
{
    static long[] Row(Tensor t, int row = 0) => t[row].data<long>().ToArray();

    [Theory]
    [InlineData("llama-tiny", true)]
    [InlineData("llama-tiny", false)]
    [InlineData("qwen2-tiny", true)]
    [InlineData("qwen2-tiny", false)]
    public void GreedyTokensMatchTransformersGenerate(string name, bool useCache)
    {
        var r = Fixture.Reference(name);
        var prompt = Row(r["greedy_prompt_ids"]);
        var expected = Row(r["greedy_output_ids"])[prompt.Length..];                             // 12 new tokens
        using var model = CausalLM.FromPretrained(Fixture.Dir(name));
        var gen = new TextGenerator(model).GenerateIds([prompt], new GenerationOptions { MaxNewTokens = 12, UseCache = useCache });
        Assert.Equal(expected, gen[0]);
    }

    [Fact]
    public void CachedAndUncachedLogitsAgreeStepByStep()
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        using var _ = no_grad();
        var ids = r["input_ids"]; var mask = r["attention_mask"];                                // right-padded batch
        using var full = model.forward(ids, mask);                                              // (3, 12, V)
        using var cache = model.CreateCache();
        using var first = model.forward(ids[.., ..7], mask[.., ..7], cache: cache);
        var err = Fixture.MaxAbsDiff(first, full[.., ..7]);
        for (var t = 7; t < 12; t++)
        {
            using var step = model.forward(ids[.., t..(t + 1)], mask[.., ..(t + 1)], cache: cache);
            err = Math.Max(err, Fixture.MaxAbsDiff(step, full[.., t..(t + 1)]));
        }
        Assert.Equal(12, cache.SeqLength);
        Assert.True(err < 1e-5, $"cache path differs by {err}");
    }

    [Fact]
    public void BatchedLeftPaddedGenerationEqualsOneByOne()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var r = Fixture.Reference("llama-tiny");
        var p0 = Row(r["greedy_prompt_ids"]);
        long[] p1 = [372, 269, 266, 264];
        long[] p2 = [84, 300, 266, 351, 542, 644, 27];
        var g = new TextGenerator(model);
        var o = new GenerationOptions { MaxNewTokens = 8 };
        var batched = g.GenerateIds([p0, p1, p2], o);
        Assert.Equal(g.GenerateIds([p0], o)[0], batched[0]);
        Assert.Equal(g.GenerateIds([p1], o)[0], batched[1]);
        Assert.Equal(g.GenerateIds([p2], o)[0], batched[2]);
    }

    [Fact]
    public void SamplingIsSeededAndRespectsTopK()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var prompt = Row(Fixture.Reference("llama-tiny")["greedy_prompt_ids"]);
        var g = new TextGenerator(model);
        var o = new GenerationOptions { MaxNewTokens = 10, Greedy = false, Temperature = 1.5, TopP = 0.9, Seed = 42, EosTokenIds = [] };
        var a = g.GenerateIds([prompt], o)[0];
        Assert.Equal(a, g.GenerateIds([prompt], o)[0]);                                         // same seed, same tokens
        Assert.NotEqual(a, g.GenerateIds([prompt], o with { Seed = 43 })[0]);                   // near-uniform tiny model
        // top-k 1 is greedy whatever the temperature.
        var greedy = g.GenerateIds([prompt], new GenerationOptions { MaxNewTokens = 10 })[0];
        Assert.Equal(greedy, g.GenerateIds([prompt], o with { TopK = 1, TopP = 1.0 })[0]);
    }

    [Fact]
    public void TopPKeepsTheNucleusOnly()
    {
        using var logits = tensor(new float[] { 0f, 1f, 2f, 5f }).log_softmax(0).unsqueeze(0);  // p ≈ .006 .017 .047 .93
        var o = new GenerationOptions { Greedy = false, TopP = 0.9, Seed = 1 };
        using var rng = new torch.Generator(1);
        for (var i = 0; i < 50; i++)
        {
            using var t = LogitsSampler.Next(logits, o, rng);
            Assert.Equal(3L, t.item<long>());
        }
        // A vanishing top_p still keeps the most likely token (never an empty distribution).
        using var logits2 = tensor(new float[] { 3f, 0f, 1f, 2f }).unsqueeze(0);
        using (var t = LogitsSampler.Next(logits2, o with { TopP = 1e-9 }, rng)) Assert.Equal(0L, t.item<long>());
        Assert.Throws<ArgumentException>(() => new GenerationOptions { Greedy = false, TopP = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new GenerationOptions { Greedy = false, Temperature = -1 }.Validate());
    }

    [Fact]
    public void EosStopsARow()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var r = Fixture.Reference("llama-tiny");
        var prompt = Row(r["greedy_prompt_ids"]);
        var greedyNext = Row(r["greedy_output_ids"])[prompt.Length];                             // 749
        var ids = new TextGenerator(model).GenerateIds([prompt], new GenerationOptions { MaxNewTokens = 12, EosTokenIds = [(int)greedyNext] })[0];
        Assert.Equal([greedyNext], ids);
    }

    [Fact]
    public void GenerationLeaksNoTensors()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var prompt = Row(Fixture.Reference("llama-tiny")["greedy_prompt_ids"]);
        var g = new TextGenerator(model);
        long[] p1 = [372, 269, 266];
        g.GenerateIds([prompt, p1], new GenerationOptions { MaxNewTokens = 3 });                 // warm-up
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        g.GenerateIds([prompt, p1], new GenerationOptions { MaxNewTokens = 20, EosTokenIds = [] });
        g.GenerateIds([prompt], new GenerationOptions { MaxNewTokens = 20, UseCache = false, Greedy = false, Seed = 1 });
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(200)]
    public void GenerationSpeedWithAndWithoutCache(int n)
    {
        // A measurement for the record (test output), not a timed assertion.
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var prompt = Row(Fixture.Reference("llama-tiny")["greedy_prompt_ids"]);
        var g = new TextGenerator(model);
        g.GenerateIds([prompt], new GenerationOptions { MaxNewTokens = 4 });                       // warm-up
        foreach (var cache in new[] { true, false })
        {
            var sw = Stopwatch.StartNew();
            var ids = g.GenerateIds([prompt], new GenerationOptions { MaxNewTokens = n, UseCache = cache, EosTokenIds = [] })[0];
            sw.Stop();
            Assert.Equal(n, ids.Length);
            output.WriteLine($"llama-tiny CPU, prompt 10 + {n} new tokens, cache={cache}: {n / sw.Elapsed.TotalSeconds:F0} tokens/s");
        }
    }
}
