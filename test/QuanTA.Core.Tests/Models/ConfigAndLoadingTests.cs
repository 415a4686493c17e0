using System.Text.Json.Nodes;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Models;

/// <summary>config.json layouts (4.x / 5.x), llama3 rope scaling, sharded checkpoints and loading errors.</summary>
public class ConfigAndLoadingTests
{
    static JsonObject Config(string dir) => (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
    static void Write(string dir, JsonObject o) => File.WriteAllText(Path.Combine(dir, "config.json"), o.ToJsonString());

    /// <summary>The llama-tiny folder rewritten in the transformers 4.x layout: top-level rope_theta + rope_scaling.</summary>
    static string OldLayoutCopy(JsonObject? ropeScaling)
    {
        var dir = Fixture.CopyToTemp("llama-tiny");
        var o = Config(dir);
        var theta = o["rope_parameters"]!["rope_theta"]!.GetValue<double>();
        o.Remove("rope_parameters");
        o["rope_theta"] = theta;
        o["rope_scaling"] = ropeScaling;
        o["transformers_version"] = "4.45.0";
        Write(dir, o);
        return dir;
    }

    static float MaxErrAgainstReference(string dir)
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = CausalLM.FromPretrained(dir);
        using var _ = no_grad();
        using var pos = arange(12L).unsqueeze(0).expand(3, -1);
        using var logits = model.forward(r["input_ids"], r["attention_mask"], pos);
        return Fixture.MaxAbsDiff(logits, r["logits"]);
    }

    [Fact]
    public void BothConfigLayoutsParseToTheSameSettings()
    {
        var now = HfModelConfig.Load(Fixture.Dir("llama-tiny"));
        var old = HfModelConfig.Load(OldLayoutCopy(null));
        Assert.Equal(now, old with { EosTokenIds = now.EosTokenIds });
        Assert.Equal(now.EosTokenIds, old.EosTokenIds);
        Assert.Equal(10000.0, old.Rope.Theta);
        Assert.Equal((4, 2, 32), (now.NumAttentionHeads, now.NumKeyValueHeads, now.HeadDim));   // GQA
        var q = HfModelConfig.Load(Fixture.Dir("qwen2-tiny"));
        Assert.Equal((true, false, true, 1_000_000.0), (q.QkvBias, q.OutputBias, q.TieWordEmbeddings, q.Rope.Theta));
        Assert.Equal(32, q.HeadDim);                                                              // no head_dim key: hidden / heads
    }

    [Fact]
    public void OldLayoutWithIdentityLlama3ScalingAndGqaReproducesTheFixture()
    {
        // llama3 scaling with factor 1 leaves every frequency unchanged (both branches and the blend equal θ_i),
        // so a 4.x-layout copy with it must give transformers' logits.
        var dir = OldLayoutCopy(new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 1.0, ["low_freq_factor"] = 1.0,
            ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 64,
        });
        var cfg = HfModelConfig.Load(dir);
        Assert.Equal("llama3", cfg.Rope.Type);
        Assert.True(MaxErrAgainstReference(dir) < 1e-4);

        // Legacy {"type": "linear", "factor": 1.0} spelling too.
        var dir2 = OldLayoutCopy(new JsonObject { ["type"] = "linear", ["factor"] = 1.0 });
        Assert.Equal("linear", HfModelConfig.Load(dir2).Rope.Type);
        Assert.True(MaxErrAgainstReference(dir2) < 1e-4);

        // And a real scaling changes the result (the settings are used, not ignored).
        var dir3 = OldLayoutCopy(new JsonObject
        {
            ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0,
            ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 8,
        });
        Assert.True(MaxErrAgainstReference(dir3) > 1e-4);
    }

    [Theory]
    [InlineData(500000.0, 16, 8.0, 1.0, 4.0, 64)]
    [InlineData(500000.0, 64, 32.0, 1.0, 4.0, 8192)]
    [InlineData(10000.0, 32, 4.0, 2.0, 8.0, 16)]
    public void Llama3FrequenciesFollowTransformersFormula(double theta, int headDim, double factor, double low, double high, int oldLen)
    {
        var rope = new RopeParameters { Theta = theta, Type = "llama3", Factor = factor, LowFreqFactor = low, HighFreqFactor = high, OriginalMaxPositionEmbeddings = oldLen };
        var actual = new LlamaRotaryEmbedding(headDim, rope).InvFreq;
        // transformers.modeling_rope_utils._compute_llama3_parameters, written out per frequency:
        double lowWavelen = oldLen / low, highWavelen = oldLen / high;
        var kinds = new HashSet<string>();
        for (var i = 0; i < headDim / 2; i++)
        {
            var f = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
            var wavelen = 2 * Math.PI / f;
            double expected;
            if (wavelen < highWavelen) { expected = f; kinds.Add("high"); }                     // short wavelengths: unchanged
            else if (wavelen > lowWavelen) { expected = f / factor; kinds.Add("low"); }         // long wavelengths: ÷ factor
            else
            {
                var smooth = (oldLen / wavelen - low) / (high - low);
                expected = (1 - smooth) * f / factor + smooth * f;  kinds.Add("mid");
            }
            Assert.True(Math.Abs(actual[i] - expected) <= 1e-6 * expected + 1e-12, $"θ_{i}: {actual[i]} vs {expected}");
        }
        Assert.True(kinds.Count >= 2, "the case should exercise more than one branch");
    }

    [Fact]
    public void ShardedCheckpointLoadsLikeTheSingleFile()
    {
        var dir = Fixture.CopyToTemp("llama-tiny");
        var sd = Safetensors.LoadStateDict(Path.Combine(dir, "model.safetensors"));
        var keys = sd.Keys.Order(StringComparer.Ordinal).ToList();
        var shards = new[] { keys.Take(keys.Count / 2).ToList(), keys.Skip(keys.Count / 2).ToList() };
        var map = new JsonObject();
        for (var s = 0; s < 2; s++)
        {
            var file = $"model-0000{s + 1}-of-00002.safetensors";
            Safetensors.SaveStateDict(Path.Combine(dir, file), shards[s].ToDictionary(k => k, k => sd[k]));
            foreach (var k in shards[s]) map[k] = file;
        }
        File.Delete(Path.Combine(dir, "model.safetensors"));
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
        Assert.Equal(2, CheckpointLoader.FindWeightFiles(dir).Count);
        Assert.True(MaxErrAgainstReference(dir) < 1e-4);
    }

    [Fact]
    public void UnsupportedModelTypeIsAClearError()
    {
        var dir = Fixture.CopyToTemp("llama-tiny");
        var o = Config(dir); o["model_type"] = "gpt2"; Write(dir, o);
        var e = Assert.Throws<NotSupportedException>(() => CausalLM.FromPretrained(dir));
        Assert.Contains("gpt2", e.Message);
        Assert.Contains("llama", e.Message);
    }

    [Fact]
    public void UnsupportedRopeTypeIsAClearError()
    {
        var dir = OldLayoutCopy(new JsonObject { ["rope_type"] = "yarn", ["factor"] = 4.0 });
        var e = Assert.Throws<NotSupportedException>(() => HfModelConfig.Load(dir));
        Assert.Contains("yarn", e.Message);
    }

    [Fact]
    public void ShapeMismatchNamesTheKeyAndBothShapes()
    {
        var dir = Fixture.CopyToTemp("llama-tiny");
        var o = Config(dir); o["intermediate_size"] = 256; Write(dir, o);
        var e = Assert.Throws<InvalidDataException>(() => CausalLM.FromPretrained(dir));
        // The first mismatching tensor in file order: down_proj is [hidden, intermediate].
        Assert.Contains("'model.layers.0.mlp.down_proj.weight'", e.Message);
        Assert.Contains("[128, 384]", e.Message);
        Assert.Contains("[128, 256]", e.Message);
    }

    [Fact]
    public void MissingAndUnexpectedKeysAreNamed()
    {
        var more = Fixture.CopyToTemp("llama-tiny");
        var o = Config(more); o["num_hidden_layers"] = 3; Write(more, o);
        var e = Assert.Throws<InvalidDataException>(() => CausalLM.FromPretrained(more));
        Assert.Contains("missing", e.Message);
        Assert.Contains("model.layers.2.self_attn.q_proj.weight", e.Message);

        var fewer = Fixture.CopyToTemp("llama-tiny");
        o = Config(fewer); o["num_hidden_layers"] = 1; Write(fewer, o);
        e = Assert.Throws<InvalidDataException>(() => CausalLM.FromPretrained(fewer));
        Assert.Contains("unexpected", e.Message);
        Assert.Contains("model.layers.1.", e.Message);

        var empty = Path.Combine(Path.GetTempPath(), "quanta-test-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(empty);
        File.Copy(Path.Combine(Fixture.Dir("llama-tiny"), "config.json"), Path.Combine(empty, "config.json"));
        Assert.Throws<FileNotFoundException>(() => CausalLM.FromPretrained(empty));
    }

    [Fact]
    public void ClassifierFromABaseCheckpointNeedsConsentAndThenInitializesTheHead()
    {
        var dir = Fixture.CopyToTemp("llama-tiny");
        Assert.Throws<InvalidDataException>(() => LlamaForSequenceClassification.FromPretrained(dir, numLabels: 3));
        using var m = LlamaForSequenceClassification.FromPretrained(dir, numLabels: 3, initializeMissingHead: true, seed: 7);
        using var std = m.score.weight.std();
        Assert.InRange(std.item<float>(), 0.01f, 0.03f);                                          // N(0, 0.02²)
    }

    [Fact]
    public void SlidingWindowIsRefusedWhereItWouldMatter()
    {
        var dir = Fixture.CopyToTemp("llama-tiny");
        var o = Config(dir); o["model_type"] = "mistral"; o["sliding_window"] = 8; Write(dir, o);
        using var model = CausalLM.FromPretrained(dir);
        using var _ = no_grad();
        using var shortIds = ones(1, 8, dtype: ScalarType.Int64);
        using var ok = model.forward(shortIds, null);                                             // within the window: exact
        using var longIds = ones(1, 9, dtype: ScalarType.Int64);
        var e = Assert.Throws<NotSupportedException>(() => model.forward(longIds, null));
        Assert.Contains("sliding_window", e.Message);
    }

    [Fact]
    public void GenerationConfigEosIdsAreAddedToTheModelEos()
    {
        var dir = Fixture.CopyToTemp("llama-tiny");
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), "{\"eos_token_id\": [0, 749], \"pad_token_id\": 1}");
        var cfg = HfModelConfig.Load(dir);
        Assert.Equal(new[] { 0, 749 }, cfg.EosTokenIds);
        using var model = CausalLM.FromPretrained(dir);
        var prompt = Fixture.Reference("llama-tiny")["greedy_prompt_ids"][0].data<long>().ToArray();
        var ids = new QuanTA.Core.Generation.TextGenerator(model).GenerateIds([prompt], new() { MaxNewTokens = 12 })[0];
        Assert.Equal(new long[] { 749 }, ids);                                                     // greedy's first token is 749
    }

    [Fact]
    public void BareDecoderCheckpointWithoutModelPrefixLoads()
    {
        // qwen2-tiny ties lm_head to the embedding, so a LlamaModel-style checkpoint ("layers.0…", no "model.") is complete.
        var dir = Fixture.CopyToTemp("qwen2-tiny");
        var path = Path.Combine(dir, "model.safetensors");
        var sd = Safetensors.LoadStateDict(path);
        Safetensors.SaveStateDict(path, sd.ToDictionary(kv => kv.Key.StartsWith("model.") ? kv.Key["model.".Length..] : kv.Key, kv => kv.Value));
        var r = Fixture.Reference("qwen2-tiny");
        using var model = CausalLM.FromPretrained(dir);
        using var _ = no_grad();
        using var pos = arange(12L).unsqueeze(0).expand(3, -1);
        using var logits = model.forward(r["input_ids"], r["attention_mask"], pos);
        Assert.True(Fixture.MaxAbsDiff(logits, r["logits"]) < 1e-4);
    }
}
