using System.Text.Json.Nodes;
using QuanTA.Core.Data;
using QuanTA.Core.Export.Gguf;
using static QuanTA.Core.Tests.Export.GgufExpectations;

namespace QuanTA.Core.Tests.Export;

/// <summary>
/// Converts the tiny LLaMA and Qwen2 fixtures and the embedded default base to GGUF, reads each file with
/// <c>@huggingface/gguf</c> (<see cref="OutsideGgufReader"/>) and checks every metadata key (type and value), every tensor info
/// (name, shape, type, offset) and every tensor's bytes against expectations computed in <see cref="GgufExpectations"/>.
/// </summary>
public sealed class GgufConverterTests : IDisposable
{
    readonly string _tmp = Path.Combine(Path.GetTempPath(), "quanta-gguf-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_tmp)) Directory.Delete(_tmp, recursive: true);
    }

    static string ModelDir(string fixture) => fixture == "embedded"
        ? EmbeddedDefaults.BaseModelDirectory()
        : Path.Combine(AppContext.BaseDirectory, "fixtures", fixture);

    [Theory]
    [InlineData("llama-tiny", "f32")]
    [InlineData("llama-tiny", "f16")]
    [InlineData("llama-tiny", "bf16")]
    [InlineData("llama-tiny", "q8_0")]
    [InlineData("qwen2-tiny", "f16")]
    [InlineData("qwen2-tiny", "q8_0")]
    [InlineData("embedded", "bf16")]
    [InlineData("embedded", "q8_0")]
    public void Converted_fixture_reads_back_in_the_outside_reader_with_every_key_tensor_and_byte_as_expected(string fixture, string outType)
    {
        var dir = ModelDir(fixture);
        var fileType = outType switch { "f32" => GgufFileType.F32, "f16" => GgufFileType.F16, "bf16" => GgufFileType.BF16, _ => GgufFileType.Q8_0 };
        var path = Path.Combine(_tmp, $"{fixture}-{outType}.gguf");
        GgufConverter.Convert(dir, path, new GgufConversionOptions { FileType = fileType, Name = "tiny " + fixture });
        Assert.Empty(Directory.GetFiles(_tmp, "*.quanta-tmp"));

        var file = OutsideGgufReader.Read(path);
        var meta = (JsonObject)file["metadata"]!;
        Assert.Equal(3, (int)file["version"]!);
        Assert.True((bool)file["littleEndian"]!);
        Assert.Equal(meta.Count, long.Parse((string)file["kvCount"]!));

        var config = Json(Path.Combine(dir, "config.json"));
        var arch = (string)config["model_type"]! == "qwen2" ? "qwen2" : "llama";
        var expected = new Dictionary<string, (int Type, JsonNode Value)>
        {
            ["general.architecture"] = (Str, arch),
            ["general.type"] = (Str, "model"),
            ["general.name"] = (Str, "tiny " + fixture),
            ["general.alignment"] = (U32, 32),
            ["general.file_type"] = (U32, outType switch { "f32" => 0, "f16" => 1, "q8_0" => 7, _ => 32 }),
            ["general.quantization_version"] = (U32, 2),
            ["tokenizer.ggml.model"] = (Str, "gpt2"),
            ["tokenizer.ggml.pre"] = (Str, "gpt-2"),
        };
        foreach (var (k, v) in ModelKeys(config, arch)) expected[k] = v;
        foreach (var (k, v) in SpecialKeys(dir)) expected[k] = v;
        var arrays = new[] { "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges" };
        Assert.Equal(expected.Keys.Concat(arrays).Order(), meta.Select(kv => kv.Key).Order());
        foreach (var (key, (type, value)) in expected)
        {
            Assert.True((int)meta[key]!["type"]! == type, $"{key}: type {meta[key]!["type"]}, expected {type}");
            if (type == F32) Assert.Equal((float)(double)value, (float)(double)meta[key]!["value"]!);
            else Assert.True(JsonNode.DeepEquals(value, meta[key]!["value"]), $"{key}: {meta[key]!["value"]!.ToJsonString()}, expected {value.ToJsonString()}");
        }
        CheckByteLevelVocabulary(dir, (int)config["vocab_size"]!, meta);
        CheckTensors(dir, path, file, config, arch, outType);
    }

    /// <summary>tokens = tokenizer.json's vocabulary and added tokens by id; types normal / control (special); merges "a b".</summary>
    static void CheckByteLevelVocabulary(string dir, int vocabSize, JsonObject meta)
    {
        var tok = Json(Path.Combine(dir, "tokenizer.json"));
        var byId = new Dictionary<int, string>();
        foreach (var (t, id) in (JsonObject)tok["model"]!["vocab"]!) byId[(int)id!] = t;
        var special = new HashSet<int>();
        foreach (var a in (JsonArray)tok["added_tokens"]!) { byId[(int)a!["id"]!] = (string)a["content"]!; if ((bool)a["special"]!) special.Add((int)a["id"]!); }
        var tokens = ((JsonArray)meta["tokenizer.ggml.tokens"]!["value"]!).Select(t => (string)t!).ToList();
        var types = ((JsonArray)meta["tokenizer.ggml.token_type"]!["value"]!).Select(t => (int)t!).ToList();
        Assert.Equal((Arr, Str), ((int)meta["tokenizer.ggml.tokens"]!["type"]!, (int)meta["tokenizer.ggml.tokens"]!["subType"]!));
        Assert.Equal((Arr, I32), ((int)meta["tokenizer.ggml.token_type"]!["type"]!, (int)meta["tokenizer.ggml.token_type"]!["subType"]!));
        Assert.Equal(Enumerable.Range(0, vocabSize).Select(i => byId.TryGetValue(i, out var t) ? t : $"[PAD{i}]"), tokens);
        Assert.Equal(Enumerable.Range(0, vocabSize).Select(i => !byId.ContainsKey(i) ? 5 : special.Contains(i) ? 3 : 1), types);
        var merges = ((JsonArray)tok["model"]!["merges"]!).Select(m => m is JsonArray p ? $"{p[0]} {p[1]}" : (string)m!);
        Assert.Equal(merges, ((JsonArray)meta["tokenizer.ggml.merges"]!["value"]!).Select(m => (string)m!));
    }

    internal static void CheckTensors(string dir, string path, JsonObject file, JsonObject config, string arch, string outType)
    {
        var weights = LoadWeights(dir);
        try
        {
            var tied = (bool?)config["tie_word_embeddings"] ?? false;
            var heads = (int)config["num_attention_heads"]!;
            var kvHeads = (int)config["num_key_value_heads"]!;
            var expected = weights.Where(kv => !(tied && kv.Key == "lm_head.weight"))
                .ToDictionary(kv => GgufName(kv.Key), kv => kv);
            var infos = ((JsonArray)file["tensors"]!).Select(t => t!.AsObject()).ToList();
            Assert.Equal(expected.Keys.Order(), infos.Select(t => (string)t["name"]!).Order());
            Assert.Equal(tied, !infos.Any(t => (string)t["name"]! == "output.weight"));

            var dataStart = long.Parse((string)file["tensorDataOffset"]!);
            Assert.Equal(0, dataStart % 32);
            long nextOffset = 0;
            using var stream = File.OpenRead(path);
            foreach (var info in infos.OrderBy(t => long.Parse((string)t["offset"]!)))
            {
                var name = (string)info["name"]!;
                var (hfName, weight) = expected[name];
                var shape = weight.shape;
                var type = TypeFor(name, shape, outType);
                Assert.Equal(Enumerable.Reverse(shape).Select(d => d.ToString()), ((JsonArray)info["shape"]!).Select(d => (string)d!));
                Assert.True(type == (int)info["type"]!, $"{name}: ggml type {info["type"]}, expected {type}");
                var offset = long.Parse((string)info["offset"]!);
                Assert.Equal(nextOffset, offset);
                var size = ByteSize(type, weight.numel());
                nextOffset = (offset + size + 31) / 32 * 32;

                var permute = arch == "llama" && hfName.Contains(".q_proj.") ? heads : arch == "llama" && hfName.Contains(".k_proj.") ? kvHeads : 0;
                var want = ExpectedBytes(weight, type, permute);
                var got = new byte[size];
                stream.Position = dataStart + offset;
                stream.ReadExactly(got);
                Assert.True(want.AsSpan().SequenceEqual(got), $"{name} ({hfName}): the bytes differ from the independently encoded weight");
            }
            Assert.Equal(dataStart + nextOffset, stream.Length);
        }
        finally { foreach (var t in weights.Values) t.Dispose(); }
    }

    [Fact]
    public void Q_and_k_rows_are_interleaved_per_head_for_llama_and_left_alone_for_qwen2()
    {
        // The permutation checked on its own: row r of head h in HF order (x-half then y-half) lands at 2·(r mod d/2) + (r div d/2).
        float[] rows = [0, 1, 2, 3, 10, 11, 12, 13];                                   // 2 heads × 4 rows of length 1
        Assert.Equal([0f, 2, 1, 3, 10, 12, 11, 13], GgufConverter.PermuteRowsForGgmlRope(rows, [8, 1], heads: 2));

        var qwen = Path.Combine(_tmp, "qwen.gguf");
        var result = GgufConverter.Convert(ModelDir("qwen2-tiny"), qwen, new GgufConversionOptions { FileType = GgufFileType.F32 });
        Assert.Equal("qwen2", result.Architecture);
        Assert.Contains(result.Tensors, t => t.Name == "blk.0.attn_q.bias");
        Assert.DoesNotContain(result.Tensors, t => t.Name == "output.weight");
    }

    string CopyWithRope(string rope)
    {
        var dir = Path.Combine(_tmp, "rope-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(ModelDir("llama-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = Json(Path.Combine(dir, "config.json"));
        config["rope_parameters"] = JsonNode.Parse(rope);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    [Fact]
    public void Linear_rope_scaling_is_written_as_keys_and_llama3_scaling_as_the_rope_freqs_tensor()
    {
        var linear = Path.Combine(_tmp, "linear.gguf");
        GgufConverter.Convert(CopyWithRope("""{"rope_theta": 10000.0, "rope_type": "linear", "factor": 4.0}"""), linear);
        var meta = (JsonObject)OutsideGgufReader.Read(linear)["metadata"]!;
        Assert.Equal("linear", (string)meta["llama.rope.scaling.type"]!["value"]!);
        Assert.Equal(4.0, (double)meta["llama.rope.scaling.factor"]!["value"]!);

        // LLaMA-3.1's rule (transformers' _compute_llama3_parameters), here in fp64: wavelengths below
        // original/high_freq_factor keep factor 1, above original/low_freq_factor get `factor`, in between a smooth blend.
        var llama3 = Path.Combine(_tmp, "llama3.gguf");
        GgufConverter.Convert(CopyWithRope("""{"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}"""), llama3);
        var file = OutsideGgufReader.Read(llama3);
        var info = ((JsonArray)file["tensors"]!).Single(t => (string)t!["name"]! == "rope_freqs.weight")!;
        Assert.Equal(("[\"16\"]", 0), (info["shape"]!.ToJsonString(), (int)info["type"]!));
        Assert.Null(file["metadata"]!["llama.rope.scaling.type"]);
        var bytes = File.ReadAllBytes(llama3);
        var start = long.Parse((string)file["tensorDataOffset"]!) + long.Parse((string)info["offset"]!);
        var got = Enumerable.Range(0, 16).Select(i => BitConverter.ToSingle(bytes, (int)start + 4 * i)).ToArray();
        var want = Enumerable.Range(0, 16).Select(k =>
        {
            var wavelen = 2 * Math.PI * Math.Pow(500000.0, 2.0 * k / 32);
            if (wavelen < 64 / 4.0) return 1.0;
            if (wavelen > 64 / 1.0) return 8.0;
            var smooth = (64 / wavelen - 1.0) / (4.0 - 1.0);
            return 1 / ((1 - smooth) / 8.0 + smooth);
        }).ToArray();
        for (var k = 0; k < 16; k++) Assert.True(Math.Abs(got[k] - want[k]) <= 1e-5 * want[k], $"rope factor {k}: {got[k]} vs {want[k]}");
        Assert.Contains(got, f => f > 1f && f < 8f);                                  // the blend region is exercised
    }

    [Fact]
    public void Unknown_or_missing_checkpoint_tensor_is_refused_with_its_name_and_nothing_is_written()
    {
        var dir = Path.Combine(_tmp, "model");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(ModelDir("llama-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var weights = LoadWeights(dir);
        weights["model.layers.0.self_attn.q_norm.weight"] = TorchSharp.torch.ones(32);
        TorchSharp.PyBridge.Safetensors.SaveStateDict(Path.Combine(dir, "model.safetensors"), weights);
        foreach (var t in weights.Values) t.Dispose();

        var output = Path.Combine(_tmp, "out.gguf");
        var e = Assert.Throws<InvalidDataException>(() => GgufConverter.Convert(dir, output));
        Assert.Contains("model.layers.0.self_attn.q_norm.weight", e.Message);
        Assert.False(File.Exists(output));
        Assert.Empty(Directory.GetFiles(_tmp, "*.quanta-tmp"));

        weights = LoadWeights(dir);
        weights.Remove("model.layers.0.self_attn.q_norm.weight", out var extra);
        weights.Remove("model.layers.1.mlp.down_proj.weight", out var dropped);
        extra!.Dispose(); dropped!.Dispose();
        TorchSharp.PyBridge.Safetensors.SaveStateDict(Path.Combine(dir, "model.safetensors"), weights);
        foreach (var t in weights.Values) t.Dispose();
        var missing = Assert.Throws<InvalidDataException>(() => GgufConverter.Convert(dir, output));
        Assert.Contains("model.layers.1.mlp.down_proj.weight", missing.Message);
        Assert.False(File.Exists(output));
    }
}
