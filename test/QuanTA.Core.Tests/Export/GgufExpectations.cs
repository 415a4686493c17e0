using System.Text.Json.Nodes;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Export;

/// <summary>
/// What a GGUF converted from a Hugging Face folder must contain, worked out here from the folder's JSON files and weights
/// with TorchSharp — not with the converter's code — following llama.cpp's convert_hf_to_gguf.py and the GGUF specification.
/// </summary>
internal static class GgufExpectations
{
    public const int U32 = 4, I32 = 5, F32 = 6, Bool = 7, Str = 8, Arr = 9;
    public const int GgmlF32 = 0, GgmlF16 = 1, GgmlQ8_0 = 8, GgmlBF16 = 30;

    public static JsonObject Json(string path) => (JsonObject)JsonNode.Parse(File.ReadAllText(path))!;

    /// <summary>HF name → GGUF name, written out (convert_hf_to_gguf.py's tensor map for LLaMA/Qwen2).</summary>
    public static string GgufName(string hf)
    {
        if (hf == "model.embed_tokens.weight") return "token_embd.weight";
        if (hf == "model.norm.weight") return "output_norm.weight";
        if (hf == "lm_head.weight") return "output.weight";
        var parts = hf.Split('.');                    // model.layers.N.<module path>.<weight|bias>
        var module = string.Join('.', parts[3..^1]);
        var table = new Dictionary<string, string>
        {
            ["input_layernorm"] = "attn_norm", ["post_attention_layernorm"] = "ffn_norm",
            ["self_attn.q_proj"] = "attn_q", ["self_attn.k_proj"] = "attn_k", ["self_attn.v_proj"] = "attn_v", ["self_attn.o_proj"] = "attn_output",
            ["mlp.gate_proj"] = "ffn_gate", ["mlp.up_proj"] = "ffn_up", ["mlp.down_proj"] = "ffn_down",
        };
        return $"blk.{parts[2]}.{table[module]}.{parts[^1]}";
    }

    /// <summary>The ggml type of a tensor for an --outtype (norms and 1-D fp32; Q8_0 needs rows of a multiple of 32).</summary>
    public static int TypeFor(string ggufName, long[] shape, string outType)
    {
        if (shape.Length == 1 || ggufName.EndsWith("_norm.weight")) return GgmlF32;
        return outType switch { "f32" => GgmlF32, "f16" => GgmlF16, "bf16" => GgmlBF16, _ => shape[^1] % 32 == 0 ? GgmlQ8_0 : GgmlF16 };
    }

    public static long ByteSize(int type, long elements) => type switch
    {
        GgmlF32 => 4 * elements, GgmlF16 or GgmlBF16 => 2 * elements, _ => elements / 32 * 34,
    };

    /// <summary>
    /// The expected tensor data: the HF weight (as fp32), rows of LLaMA's q/k permuted like llama.cpp's
    /// <c>w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)</c>, then encoded with torch's own
    /// fp16/bf16 casts, or with Q8_0 computed here in torch (d = absmax/127, q = roundf(x / d) via floor(|x·id| + ½) in fp64).
    /// </summary>
    public static byte[] ExpectedBytes(Tensor hfWeight, int type, int permuteHeads)
    {
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        var w = hfWeight.to_type(ScalarType.Float32);
        if (permuteHeads > 0)
        {
            var shape = w.shape;
            var rest = shape.Skip(1).ToArray();
            w = w.reshape([permuteHeads, 2, shape[0] / permuteHeads / 2, .. rest]).swapaxes(1, 2).reshape(shape).contiguous();
        }
        switch (type)
        {
            case GgmlF32: return w.contiguous().bytes.ToArray();
            case GgmlF16: return w.to_type(ScalarType.Float16).contiguous().bytes.ToArray();
            case GgmlBF16: return w.to_type(ScalarType.BFloat16).contiguous().bytes.ToArray();
        }
        var blocks = w.reshape(-1, 32);
        var amax = blocks.abs().amax([1], keepdim: true);
        var d = amax / 127f;
        var id = where(d.eq(0), zeros_like(d), d.reciprocal());
        var x = (blocks * id).to_type(ScalarType.Float64);
        var q = (x.sign() * (x.abs() + 0.5).floor()).to_type(ScalarType.Int8);
        var dBytes = d.to_type(ScalarType.Float16).contiguous().bytes.ToArray();
        var qBytes = q.contiguous().bytes.ToArray();
        var n = (int)blocks.shape[0];
        var result = new byte[n * 34];
        for (var b = 0; b < n; b++)
        {
            Array.Copy(dBytes, 2 * b, result, 34 * b, 2);
            Array.Copy(qBytes, 32 * b, result, 34 * b + 2, 32);
        }
        return result;
    }

    /// <summary>The HF checkpoint of a folder (single file), loaded by TorchSharp.PyBridge.</summary>
    public static Dictionary<string, Tensor> LoadWeights(string dir)
    {
        TorchRuntime.Initialize();
        return Safetensors.LoadStateDict(Path.Combine(dir, "model.safetensors"));
    }

    /// <summary>
    /// The model hyper-parameter keys for <paramref name="arch"/> as (key → GGUF type, value), from config.json
    /// (convert_hf_to_gguf.py's TextModel/LlamaModel.set_gguf_parameters).
    /// </summary>
    public static Dictionary<string, (int Type, JsonNode Value)> ModelKeys(JsonObject config, string arch)
    {
        var rope = config["rope_parameters"] as JsonObject;
        var theta = (double?)rope?["rope_theta"] ?? (double?)config["rope_theta"] ?? 10000.0;
        var headDim = (int?)config["head_dim"] ?? (int)config["hidden_size"]! / (int)config["num_attention_heads"]!;
        var keys = new Dictionary<string, (int, JsonNode)>
        {
            [$"{arch}.block_count"] = (U32, config["num_hidden_layers"]!.DeepClone()),
            [$"{arch}.context_length"] = (U32, config["max_position_embeddings"]!.DeepClone()),
            [$"{arch}.embedding_length"] = (U32, config["hidden_size"]!.DeepClone()),
            [$"{arch}.feed_forward_length"] = (U32, config["intermediate_size"]!.DeepClone()),
            [$"{arch}.attention.head_count"] = (U32, config["num_attention_heads"]!.DeepClone()),
            [$"{arch}.attention.head_count_kv"] = (U32, config["num_key_value_heads"]!.DeepClone()),
            [$"{arch}.rope.freq_base"] = (F32, JsonValue.Create(theta)),
            [$"{arch}.attention.layer_norm_rms_epsilon"] = (F32, config["rms_norm_eps"]!.DeepClone()),
            [$"{arch}.vocab_size"] = (U32, config["vocab_size"]!.DeepClone()),
            [$"{arch}.rope.dimension_count"] = (U32, JsonValue.Create(headDim)),
        };
        if (config["head_dim"] is not null)
        {
            keys[$"{arch}.attention.key_length"] = (U32, JsonValue.Create(headDim));
            keys[$"{arch}.attention.value_length"] = (U32, JsonValue.Create(headDim));
        }
        return keys;
    }

    /// <summary>
    /// Special-token keys as gguf-py's SpecialVocab finds them: tokenizer_config.json's <c>*_token</c> strings looked up in
    /// tokenizer.json's added tokens, then config.json's <c>*_token_id</c>; plus <c>tokenizer.chat_template</c>.
    /// </summary>
    public static Dictionary<string, (int Type, JsonNode Value)> SpecialKeys(string dir)
    {
        var tok = Json(Path.Combine(dir, "tokenizer.json"));
        var tc = Json(Path.Combine(dir, "tokenizer_config.json"));
        var config = Json(Path.Combine(dir, "config.json"));
        var added = ((JsonArray)tok["added_tokens"]!).Select(a => ((string)a!["content"]!, (int)a["id"]!)).ToList();
        var names = new Dictionary<string, string> { ["bos"] = "bos_token_id", ["eos"] = "eos_token_id", ["unk"] = "unknown_token_id", ["pad"] = "padding_token_id" };
        var keys = new Dictionary<string, (int, JsonNode)>();
        foreach (var (typ, key) in names)
        {
            int? id = tc[$"{typ}_token"] is JsonValue s && added.Any(a => a.Item1 == (string)s!) ? added.First(a => a.Item1 == (string)s!).Item2
                : (int?)config[$"{typ}_token_id"];
            if (id is int i) keys[$"tokenizer.ggml.{key}"] = (U32, JsonValue.Create(i));
        }
        if (tc["chat_template"] is JsonValue t) keys["tokenizer.chat_template"] = (Str, t.DeepClone());
        return keys;
    }
}
