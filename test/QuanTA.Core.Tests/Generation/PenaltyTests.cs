using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Tests.Models;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Generation;

/// <summary>
/// Repetition (transformers), frequency and presence (OpenAI) penalties: the logits against the formulas written out here
/// independently, their place before temperature and argmax, their effect on the tiny model, cache/no-cache agreement.
/// </summary>
public class PenaltyTests(ITestOutputHelper output)
{
    // One row of hand-made logits, positive, negative and zero; the prompt holds tokens 1 and 4; the generated text holds
    // token 2 once, token 3 three times, token 4 once (also in the prompt) and token 6 once. Tokens 0, 5, 7: never seen.
    static readonly float[] Logits = [2.0f, -1.5f, 0.5f, -0.25f, 3.0f, 0.0f, -2.0f, 1.0f];
    static readonly long[] Prompt = [1, 4, 4];
    static readonly long[] Generated = [3, 2, 3, 4, 6, 3];

    /// <summary>The reference: OpenAI's frequency/presence definition and transformers' repetition penalty, in vLLM's order.</summary>
    static double[] Reference(float[] logits, long[] prompt, long[] generated, double r, double f, double p)
    {
        var result = new double[logits.Length];
        for (var v = 0; v < logits.Length; v++)
        {
            int count = generated.Count(t => t == v);
            bool seen = count > 0 || prompt.Contains(v);
            double x = logits[v];
            if (seen) x = x < 0 ? x * r : x / r;                  // CTRL: once per token, whatever its count
            x -= f * count;                                        // frequency: per occurrence in the completion
            x -= p * (count > 0 ? 1 : 0);                          // presence: once if it occurred in the completion
            result[v] = x;
        }
        return result;
    }

    /// <summary>Runs the stateful path: the prompt at construction, the generated tokens one step at a time.</summary>
    static float[] Penalize(GenerationOptions o, float[] logits, long[] prompt, long[] generated)
    {
        using var scope = NewDisposeScope();
        using var penalties = new TokenPenalties([prompt], o);
        var x = tensor(logits).unsqueeze(0);                                                    // (1, V)
        penalties.Apply(x);                                                                     // first step: creates the state
        foreach (var t in generated) penalties.Record(tensor(new[] { t }));
        return penalties.Apply(x)[0].data<float>().ToArray();
    }

    [Theory]
    [InlineData(1.5, 0.0, 0.0)]
    [InlineData(0.8, 0.0, 0.0)]
    [InlineData(1.0, 0.5, 0.0)]
    [InlineData(1.0, 0.0, 0.25)]
    [InlineData(1.0, -0.7, -1.1)]
    [InlineData(1.5, 0.5, 0.25)]
    [InlineData(1.3, 2.0, -2.0)]
    public void PenaltiesChangeTheLogitsAsTheFormulasSay(double r, double f, double p)
    {
        var o = new GenerationOptions { RepetitionPenalty = r, FrequencyPenalty = f, PresencePenalty = p };
        var got = Penalize(o, Logits, Prompt, Generated);
        var want = Reference(Logits, Prompt, Generated, r, f, p);
        for (var v = 0; v < Logits.Length; v++)
            Assert.True(Math.Abs(got[v] - want[v]) < 1e-6, $"token {v}: got {got[v]}, want {want[v]} (r {r}, f {f}, p {p})");
    }

    [Fact]
    public void HandWorkedValues()
    {
        var got = Penalize(new GenerationOptions { RepetitionPenalty = 1.5, FrequencyPenalty = 0.5, PresencePenalty = 0.25 }, Logits, Prompt, Generated);
        Assert.Equal(2.0f, got[0]);                                 // count 0, not in the prompt: untouched
        Assert.Equal(-2.25f, got[1]);                               // prompt only, negative: −1.5 · 1.5
        Assert.Equal(0.5f / 1.5f - 0.5f - 0.25f, got[2], 6);        // count 1, positive: ÷ 1.5, − 0.5, − 0.25
        Assert.Equal(-0.375f - 1.5f - 0.25f, got[3], 6);            // count 3, negative: × 1.5, − 3 · 0.5, − 0.25
        Assert.Equal(2.0f - 0.5f - 0.25f, got[4], 6);               // prompt and count 1: divided once, not twice
        Assert.Equal(0f, got[5]);
        Assert.Equal(-3.0f - 0.75f, got[6], 6);
    }

    [Fact]
    public void PenaltiesComeBeforeTemperatureAndArgmax()
    {
        var o = new GenerationOptions { RepetitionPenalty = 1.5, FrequencyPenalty = 0.5, PresencePenalty = 0.25 };
        using var penalties = new TokenPenalties([Prompt], o);
        using var x = tensor(Logits).unsqueeze(0);
        using (penalties.Apply(x)) { }
        foreach (var t in Generated) using (var id = tensor(new[] { t })) penalties.Record(id);
        var want = Reference(Logits, Prompt, Generated, 1.5, 0.5, 0.25);

        // Sampling: (penalized logits) / T, then softmax — not penalties applied to logits / T.
        using var scores = LogitsSampler.Scores(x, o with { Greedy = false, Temperature = 2.0 }, penalties);
        var s = scores[0].data<float>().ToArray();
        for (var v = 0; v < Logits.Length; v++) Assert.True(Math.Abs(s[v] - want[v] / 2.0) < 1e-6, $"token {v}: {s[v]} vs {want[v] / 2.0}");

        // Greedy: token 4 (3.0) wins alone; penalized (2.0 − 0.75 = 1.25) it loses to token 0 (2.0).
        using (var plain = LogitsSampler.Next(x, new GenerationOptions(), null)) Assert.Equal(4L, plain.item<long>());
        using (var next = LogitsSampler.Next(x, o, null, penalties)) Assert.Equal(0L, next.item<long>());
        // top-k 1 after the penalties keeps the penalized argmax only.
        using var rng = new torch.Generator(3);
        using (var sampled = LogitsSampler.Next(x, o with { Greedy = false, TopK = 1 }, rng, penalties)) Assert.Equal(0L, sampled.item<long>());
    }

    [Theory]
    [InlineData(nameof(GenerationOptions.FrequencyPenalty), 3.0)]
    [InlineData(nameof(GenerationOptions.FrequencyPenalty), double.NaN)]
    [InlineData(nameof(GenerationOptions.PresencePenalty), -2.5)]
    [InlineData(nameof(GenerationOptions.RepetitionPenalty), 0.0)]
    [InlineData(nameof(GenerationOptions.RepetitionPenalty), -1.0)]
    [InlineData(nameof(GenerationOptions.RepetitionPenalty), double.PositiveInfinity)]
    public void OutOfRangePenaltiesAreRefusedByName(string option, double value)
    {
        var o = option switch
        {
            nameof(GenerationOptions.FrequencyPenalty) => new GenerationOptions { FrequencyPenalty = value },
            nameof(GenerationOptions.PresencePenalty) => new GenerationOptions { PresencePenalty = value },
            _ => new GenerationOptions { RepetitionPenalty = value },
        };
        var e = Assert.Throws<ArgumentException>(o.Validate);
        Assert.Contains(option, e.Message);
        new GenerationOptions { FrequencyPenalty = 2, PresencePenalty = -2, RepetitionPenalty = 0.5 }.Validate();   // the bounds are allowed
    }

    static int Repeats(long[] ids) => ids.Length - ids.Distinct().Count();

    [Fact]
    public void RepetitionPenaltyMakesTheTinyModelRepeatItselfLess()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var prompt = Fixture.Reference("llama-tiny")["greedy_prompt_ids"][0].data<long>().ToArray();
        var g = new TextGenerator(model);
        var o = new GenerationOptions { MaxNewTokens = 40, EosTokenIds = [] };
        var plain = g.GenerateIds([prompt], o)[0];
        var penalized = g.GenerateIds([prompt], o with { RepetitionPenalty = 1.5 })[0];
        var frequency = g.GenerateIds([prompt], o with { FrequencyPenalty = 1.0 })[0];
        output.WriteLine($"repeated tokens in 40 greedy tokens: plain {Repeats(plain)}, repetition_penalty 1.5 {Repeats(penalized)}, frequency_penalty 1 {Repeats(frequency)}");
        output.WriteLine($"plain:     {string.Join(' ', plain)}");
        output.WriteLine($"penalized: {string.Join(' ', penalized)}");
        Assert.True(Repeats(plain) >= 10, $"the fixture should loop without a penalty; it repeated {Repeats(plain)} tokens");
        Assert.True(Repeats(penalized) < Repeats(plain), $"{Repeats(penalized)} repeats with the penalty vs {Repeats(plain)} without");
        Assert.True(Repeats(frequency) < Repeats(plain), $"{Repeats(frequency)} repeats with frequency_penalty vs {Repeats(plain)} without");
        // A penalty below 1 rewards what was seen: at least as repetitive as plain greedy.
        Assert.True(Repeats(g.GenerateIds([prompt], o with { RepetitionPenalty = 0.7 })[0]) >= Repeats(penalized));
    }

    [Fact]
    public void CacheNoCacheAndBatchingAgreeWithPenalties()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var p0 = Fixture.Reference("llama-tiny")["greedy_prompt_ids"][0].data<long>().ToArray();
        long[] p1 = [372, 269, 266, 264];
        var g = new TextGenerator(model);
        var o = new GenerationOptions { MaxNewTokens = 16, EosTokenIds = [], RepetitionPenalty = 1.3, FrequencyPenalty = 0.4, PresencePenalty = 0.3 };
        var cached = g.GenerateIds([p0, p1], o);
        var uncached = g.GenerateIds([p0, p1], o with { UseCache = false });
        Assert.Equal(cached[0], uncached[0]);
        Assert.Equal(cached[1], uncached[1]);
        // p1 is left-padded in the batch; its penalties see its own tokens only, so it decodes as it does alone.
        Assert.Equal(g.GenerateIds([p1], o)[0], cached[1]);
        Assert.NotEqual(g.GenerateIds([p0], o with { RepetitionPenalty = 1, FrequencyPenalty = 0, PresencePenalty = 0 })[0], cached[0]);
    }

    [Fact]
    public void PenaltiesLeakNoTensors()
    {
        using var model = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        var prompt = Fixture.Reference("llama-tiny")["greedy_prompt_ids"][0].data<long>().ToArray();
        var g = new TextGenerator(model);
        var o = new GenerationOptions { MaxNewTokens = 3, RepetitionPenalty = 1.2, FrequencyPenalty = 0.5, PresencePenalty = 0.5 };
        g.GenerateIds([prompt], o);                                                              // warm-up
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        g.GenerateIds([prompt, [372, 269, 266]], o with { MaxNewTokens = 12, EosTokenIds = [] });
        g.GenerateIds([prompt], o with { MaxNewTokens = 12, Greedy = false, Seed = 1, UseCache = false });
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
