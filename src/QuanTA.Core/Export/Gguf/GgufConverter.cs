using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using QuanTA.Core.Models;

namespace QuanTA.Core.Export.Gguf;

/// <summary>The storage type of a GGUF file's matrices (llama.cpp's <c>general.file_type</c>, <c>--outtype</c> of its converter).</summary>
public enum GgufFileType
{
    /// <summary>Everything fp32 (file_type 0).</summary>
    F32 = 0,
    /// <summary>Matrices fp16, norms fp32 (file_type 1).</summary>
    F16 = 1,
    /// <summary>Matrices Q8_0 (rows whose length is not a multiple of 32 fall back to fp16), norms fp32 (file_type 7).</summary>
    Q8_0 = 7,
    /// <summary>Matrices bf16, norms fp32 (file_type 32).</summary>
    BF16 = 32,
}

/// <summary>Settings of <see cref="GgufConverter.Convert"/>.</summary>
public sealed record GgufConversionOptions
{
    /// <summary>Storage type of the matrices. Default <see cref="GgufFileType.F16"/> (llama.cpp's converter defaults to it for fp16/fp32 checkpoints).</summary>
    public GgufFileType FileType { get; init; } = GgufFileType.F16;
    /// <summary><c>general.name</c>; default: the model folder's name.</summary>
    public string? Name { get; init; }
    /// <summary>
    /// Values read, encoded and written per piece of a tensor (a multiple of 32, the Q8_0 block): bounds the converter's memory
    /// whatever a tensor's size. 4 Mi values (16 MiB as fp32) by default; tests make it tiny.
    /// </summary>
    internal int ChunkValues { get; init; } = GgufConverter.DefaultChunkValues;
}

/// <summary>What <see cref="GgufConverter.Convert"/> wrote: one entry per tensor, in file order.</summary>
/// <param name="Path">The GGUF file.</param>
/// <param name="Architecture"><c>general.architecture</c> (<c>llama</c> or <c>qwen2</c>).</param>
/// <param name="Tensors">Name, shape (outermost first) and type of every tensor.</param>
public sealed record GgufConversionResult(string Path, string Architecture, IReadOnlyList<(string Name, long[] Shape, GgmlType Type)> Tensors);

/// <summary>
/// Converts a Hugging Face causal-LM folder (config.json + safetensors + tokenizer files; model types llama, mistral, qwen2)
/// into a GGUF v3 file that llama.cpp loads, following llama.cpp's <c>convert_hf_to_gguf.py</c>: architecture <c>llama</c>
/// (LLaMA and Mistral) or <c>qwen2</c>; <c>general.*</c> and <c>&lt;arch&gt;.*</c> hyper-parameters; the tokenizer as
/// <c>tokenizer.ggml.*</c> (<see cref="GgufTokenizerMetadata"/>); tensors renamed to ggml's names (<c>token_embd</c>,
/// <c>blk.N.attn_q</c>, …, <c>output_norm</c>, <c>output</c>) with LLaMA's q/k rows permuted from Hugging Face's rotate-half
/// order to ggml's interleaved RoPE order (Qwen2 uses NeoX RoPE in llama.cpp and is not permuted). Tied embeddings write no
/// <c>output</c> tensor (llama.cpp then reuses <c>token_embd</c>). 1-D tensors and norms stay fp32.
/// Tensors are streamed one at a time, in chunks of <see cref="DefaultChunkValues"/> values (read, permuted, encoded, written),
/// so no tensor has to fit in one array; the file appears only when complete.
/// </summary>
public static class GgufConverter
{
    /// <summary>Values per chunk when a tensor is streamed into the file: 4 Mi (16 MiB as fp32), a multiple of the Q8_0 block.</summary>
    public const int DefaultChunkValues = 4 << 20;

    /// <summary>Converts <paramref name="modelDir"/> into the GGUF file <paramref name="outputPath"/>.</summary>
    /// <exception cref="FileNotFoundException">config.json, the weights or the tokenizer are missing.</exception>
    /// <exception cref="NotSupportedException">a model type, dtype, tokenizer or rope scaling GGUF export does not handle; the message names it.</exception>
    /// <exception cref="InvalidDataException">a checkpoint tensor that has no GGUF name or the wrong shape; the message names it.</exception>
    public static GgufConversionResult Convert(string modelDir, string outputPath, GgufConversionOptions? options = null)
    {
        var (arch, kv, tensors) = Plan(modelDir, options ?? new GgufConversionOptions());
        GgufWriter.Write(outputPath, kv, tensors);
        return new GgufConversionResult(Path.GetFullPath(outputPath), arch, tensors.Select(t => (t.Name, t.Shape.ToArray(), t.Type)).ToList());
    }

    /// <summary>What <see cref="Convert"/> writes: the architecture, the metadata and the tensors (each streams itself when written).</summary>
    internal static (string Architecture, List<KeyValuePair<string, GgufValue>> Metadata, List<GgufTensor> Tensors) Plan(string modelDir, GgufConversionOptions options)
    {
        var cfg = HfModelConfig.Load(modelDir);
        var rawConfig = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(modelDir, "config.json")))!;
        var arch = cfg.ModelType == "qwen2" ? "qwen2" : "llama";
        var weights = new SafetensorsTensorReader(modelDir);

        var kv = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue v) => kv.Add(new(key, v));
        Add("general.architecture", GgufValue.Str(arch));
        Add("general.type", GgufValue.Str("model"));
        Add("general.name", GgufValue.Str(options.Name ?? new DirectoryInfo(Path.GetFullPath(modelDir)).Name));
        Add("general.file_type", GgufValue.U32((uint)options.FileType));
        Add("general.quantization_version", GgufValue.U32(2));
        Add($"{arch}.block_count", GgufValue.U32((uint)cfg.NumHiddenLayers));
        Add($"{arch}.context_length", GgufValue.U32((uint)cfg.MaxPositionEmbeddings));
        Add($"{arch}.embedding_length", GgufValue.U32((uint)cfg.HiddenSize));
        Add($"{arch}.feed_forward_length", GgufValue.U32((uint)cfg.IntermediateSize));
        Add($"{arch}.attention.head_count", GgufValue.U32((uint)cfg.NumAttentionHeads));
        Add($"{arch}.attention.head_count_kv", GgufValue.U32((uint)cfg.NumKeyValueHeads));
        Add($"{arch}.rope.freq_base", GgufValue.F32((float)cfg.Rope.Theta));
        Add($"{arch}.attention.layer_norm_rms_epsilon", GgufValue.F32((float)cfg.RmsNormEps));
        if (rawConfig["head_dim"] is not null)
        {
            Add($"{arch}.attention.key_length", GgufValue.U32((uint)cfg.HeadDim));
            Add($"{arch}.attention.value_length", GgufValue.U32((uint)cfg.HeadDim));
        }
        Add($"{arch}.vocab_size", GgufValue.U32((uint)cfg.VocabSize));
        Add($"{arch}.rope.dimension_count", GgufValue.U32((uint)cfg.HeadDim));
        if (cfg.Rope.Type == "linear")
        {
            Add($"{arch}.rope.scaling.type", GgufValue.Str("linear"));
            Add($"{arch}.rope.scaling.factor", GgufValue.F32((float)cfg.Rope.Factor));
        }
        kv.AddRange(GgufTokenizerMetadata.Build(modelDir, cfg.VocabSize));

        CheckRequiredWeights(weights, cfg, modelDir);
        var tensors = new List<GgufTensor>();
        if (cfg.Rope.Type == "llama3")
        {
            var factors = Llama3RopeFactors(cfg);
            tensors.Add(new GgufTensor("rope_freqs.weight", [factors.Length], GgmlType.F32, () => GgmlTensorEncoding.Encode(factors, GgmlType.F32)));
        }
        foreach (var hfName in OrderedNames(weights, cfg))
        {
            var ggufName = GgufName(hfName)
                ?? throw new InvalidDataException($"Checkpoint tensor '{hfName}' in '{modelDir}' has no GGUF name (GGUF export handles the LLaMA/Mistral/Qwen2 causal-LM layout only).");
            if (ggufName == "output.weight" && cfg.TieWordEmbeddings) continue;
            var shape = weights.Shape(hfName);
            var type = ChooseType(ggufName, shape, options.FileType);
            var permuteHeads = arch != "llama" ? 0
                : Regex.IsMatch(hfName, @"\.q_proj\.(weight|bias)$") ? cfg.NumAttentionHeads
                : Regex.IsMatch(hfName, @"\.k_proj\.(weight|bias)$") ? cfg.NumKeyValueHeads : 0;
            var name = hfName;
            tensors.Add(new GgufTensor(ggufName, shape, type, output =>
            {
                using var source = weights.OpenValues(name);
                var rows = shape.Length == 0 ? 1 : shape[0];
                var rowLength = rows == 0 ? 0 : source.Count / rows;
                GgmlTensorEncoding.EncodeChunked(output, source.Count, type, options.ChunkValues,
                    (first, values) => ReadRows(source, first, values, rows, rowLength, permuteHeads));
            }));
        }
        return (arch, kv, tensors);
    }

    /// <summary>
    /// Fills <paramref name="values"/> with the output tensor's values from element <paramref name="first"/> on: each output row
    /// (or the part of it inside this chunk) is read from its source row, which the q/k permutation picks
    /// (<see cref="SourceRowForGgmlRope"/>; the identity when <paramref name="permuteHeads"/> is 0).
    /// </summary>
    static void ReadRows(SafetensorsTensorReader.TensorValues source, long first, Span<float> values, long rows, long rowLength, int permuteHeads)
    {
        if (permuteHeads == 0) { source.Read(first, values); return; }
        for (var done = 0; done < values.Length;)
        {
            var row = (first + done) / rowLength;
            var column = (first + done) % rowLength;
            var n = (int)Math.Min(rowLength - column, values.Length - done);
            source.Read(SourceRowForGgmlRope(row, rows, permuteHeads) * rowLength + column, values.Slice(done, n));
            done += n;
        }
    }

    /// <summary>
    /// llama.cpp's <c>LlamaModel.permute</c>: per head, rows [x0..x(d/2−1), y0..y(d/2−1)] (Hugging Face's rotate-half order) become
    /// [x0, y0, x1, y1, …] (ggml's pairwise RoPE order). <paramref name="heads"/> is the head count of this projection
    /// (query heads for q, key/value heads for k).
    /// </summary>
    public static float[] PermuteRowsForGgmlRope(float[] values, IReadOnlyList<long> shape, int heads)
    {
        var rows = (int)shape[0];
        var rowLength = values.Length / rows;
        var result = new float[values.Length];
        for (var row = 0; row < rows; row++)
            Array.Copy(values, SourceRowForGgmlRope(row, rows, heads) * rowLength, result, (long)row * rowLength, rowLength);
        return result;
    }

    /// <summary>
    /// The row of the Hugging Face tensor that lands at <paramref name="outputRow"/> under <see cref="PermuteRowsForGgmlRope"/>:
    /// output row h·d + 2i + j (head h, d rows per head) comes from source row h·d + j·d/2 + i.
    /// </summary>
    /// <exception cref="InvalidDataException">the rows do not split into <paramref name="heads"/> heads of an even number of rows.</exception>
    public static long SourceRowForGgmlRope(long outputRow, long rows, int heads)
    {
        if (heads <= 0 || rows % heads != 0 || rows / heads % 2 != 0)
            throw new InvalidDataException($"Cannot permute {rows} rows for {heads} heads (need an even number of rows per head).");
        var perHead = rows / heads;
        var (head, inHead) = Math.DivRem(outputRow, perHead);
        var (i, j) = Math.DivRem(inHead, 2);
        return head * perHead + j * (perHead / 2) + i;
    }

    /// <summary>The ggml name of a Hugging Face causal-LM tensor, or null when it has none.</summary>
    public static string? GgufName(string hfName)
    {
        switch (hfName)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        var m = Regex.Match(hfName, @"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$");
        if (!m.Success) return null;
        var part = m.Groups[2].Value switch
        {
            "input_layernorm" => "attn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "post_attention_layernorm" => "ffn_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => null,
        };
        return part is null ? null : $"blk.{m.Groups[1].Value}.{part}.{m.Groups[3].Value}";
    }

    /// <summary>Every weight the model needs is in the checkpoint, and q/k have the rows the permutation expects.</summary>
    static void CheckRequiredWeights(SafetensorsTensorReader weights, HfModelConfig cfg, string modelDir)
    {
        var required = new List<string> { "model.embed_tokens.weight", "model.norm.weight" };
        if (!cfg.TieWordEmbeddings) required.Add("lm_head.weight");
        for (var i = 0; i < cfg.NumHiddenLayers; i++)
            foreach (var p in new[] { "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" })
                required.Add($"model.layers.{i}.{p}.weight");
        var missing = required.Where(n => !weights.Contains(n)).ToList();
        if (missing.Count > 0)
            throw new InvalidDataException($"The checkpoint in '{modelDir}' lacks {missing.Count} tensor(s) that config.json's model needs: " +
                string.Join(", ", missing.Take(6)) + (missing.Count > 6 ? ", …" : "") + ".");
        for (var i = 0; i < cfg.NumHiddenLayers; i++)
            foreach (var (proj, heads) in new[] { ("q_proj", cfg.NumAttentionHeads), ("k_proj", cfg.NumKeyValueHeads) })
            {
                var name = $"model.layers.{i}.self_attn.{proj}.weight";
                var rows = weights.Shape(name)[0];
                if (rows != (long)heads * cfg.HeadDim)
                    throw new InvalidDataException($"Checkpoint tensor '{name}' has {rows} rows; config.json says {heads} heads × head_dim {cfg.HeadDim} = {(long)heads * cfg.HeadDim}.");
            }
    }

    /// <summary>The converter's rule: 1-D tensors and norms fp32; Q8_0 only for rows that are a multiple of 32 long, else fp16.</summary>
    static GgmlType ChooseType(string ggufName, long[] shape, GgufFileType fileType)
    {
        if (shape.Length <= 1 || ggufName.EndsWith("_norm.weight", StringComparison.Ordinal)) return GgmlType.F32;
        return fileType switch
        {
            GgufFileType.F32 => GgmlType.F32,
            GgufFileType.F16 => GgmlType.F16,
            GgufFileType.BF16 => GgmlType.BF16,
            GgufFileType.Q8_0 => shape[^1] % GgmlTensorEncoding.Q8_0BlockSize == 0 ? GgmlType.Q8_0 : GgmlType.F16,
            _ => throw new ArgumentOutOfRangeException(nameof(fileType), fileType, "unknown GGUF file type"),
        };
    }

    /// <summary>Embedding, then each layer's tensors in the order of the module, then the final norm and the head; inv_freq buffers are skipped.</summary>
    static IEnumerable<string> OrderedNames(SafetensorsTensorReader weights, HfModelConfig cfg)
    {
        string[] layerParts = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                               "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
        var order = new List<string> { "model.embed_tokens.weight" };
        for (var i = 0; i < cfg.NumHiddenLayers; i++)
            foreach (var p in layerParts)
                order.AddRange([$"model.layers.{i}.{p}.weight", $"model.layers.{i}.{p}.bias"]);
        order.AddRange(["model.norm.weight", "lm_head.weight"]);
        var rank = order.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i);
        return weights.Names.Where(n => !n.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal))
            .OrderBy(n => rank.TryGetValue(n, out var r) ? r : int.MaxValue).ThenBy(n => n, StringComparer.Ordinal);
    }

    /// <summary>
    /// LLaMA-3.1 rope scaling as the per-frequency factors llama.cpp reads from <c>rope_freqs.weight</c> (the converter's
    /// <c>generate_extra_tensors</c>), computed in fp32 like its torch code.
    /// </summary>
    static float[] Llama3RopeFactors(HfModelConfig cfg)
    {
        var dim = cfg.HeadDim;
        var r = cfg.Rope;
        var lowWavelen = (float)(r.OriginalMaxPositionEmbeddings / r.LowFreqFactor);
        var highWavelen = (float)(r.OriginalMaxPositionEmbeddings / r.HighFreqFactor);
        var factors = new float[dim / 2];
        for (var k = 0; k < factors.Length; k++)
        {
            var freq = 1f / MathF.Pow((float)r.Theta, 2f * k / dim);
            var wavelen = (float)(2 * Math.PI) / freq;
            factors[k] = wavelen < highWavelen ? 1f
                : wavelen > lowWavelen ? (float)r.Factor
                : 1f / ((1f - Smooth(wavelen)) / (float)r.Factor + Smooth(wavelen));
        }
        return factors;

        float Smooth(float wavelen) => (r.OriginalMaxPositionEmbeddings / wavelen - (float)r.LowFreqFactor) / (float)(r.HighFreqFactor - r.LowFreqFactor);
    }
}
