using System.Globalization;

namespace QuanTA.Tools.PretrainBaseModel;

/// <summary>Settings of the pre-training run; every one can be given on the command line as <c>--name value</c>.</summary>
public sealed record PretrainOptions
{
    /// <summary>WordNet folder (synsets.tsv.gz); null: found like the samples find it.</summary>
    public string? Data { get; init; }
    /// <summary>Folder with the trained tokenizer (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json).</summary>
    public string Tokenizer { get; init; } = "samples/Models/wordnet-llama-tiny";
    /// <summary>Output model folder (Hugging Face layout). Tokenizer files are copied there if it is another folder.</summary>
    public string Out { get; init; } = "samples/Models/wordnet-llama-tiny";

    // ---- model shape (LLaMA architecture) ----
    /// <summary>hidden_size; 256 = 4·4·4·4 gives QuanTA a 4-axis layout.</summary>
    public int Hidden { get; init; } = 256;
    /// <summary>num_hidden_layers.</summary>
    public int Layers { get; init; } = 4;
    /// <summary>num_attention_heads (head_dim = hidden / heads).</summary>
    public int Heads { get; init; } = 4;
    /// <summary>num_key_value_heads (grouped-query attention).</summary>
    public int KvHeads { get; init; } = 2;
    /// <summary>intermediate_size of the SwiGLU MLP; 768 = 3·256 factors well (4·4·4·12, 8·8·12).</summary>
    public int Intermediate { get; init; } = 768;
    /// <summary>Context length: block size of the packed training stream and max_position_embeddings.</summary>
    public int Context { get; init; } = 128;

    // ---- optimisation ----
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 600;
    /// <summary>Wall-clock budget of the training loop in minutes (0 = none): from step 11 on, the step count is
    /// re-estimated every step to fit it (at most <see cref="Steps"/>), and the cosine schedule follows that count.</summary>
    public double Minutes { get; init; }
    /// <summary>Sequences of <see cref="Context"/> tokens per step.</summary>
    public int Batch { get; init; } = 32;
    /// <summary>Peak learning rate (AdamW, β = 0.9 / 0.95).</summary>
    public double Lr { get; init; } = 2e-3;
    /// <summary>Linear warm-up steps, then cosine decay to <see cref="MinLrRatio"/> · lr.</summary>
    public int Warmup { get; init; } = 40;
    /// <summary>Final learning rate as a fraction of the peak.</summary>
    public double MinLrRatio { get; init; } = 0.1;
    /// <summary>Decoupled weight decay on matrices (not on norm weights).</summary>
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>Gradient-norm clip.</summary>
    public double ClipNorm { get; init; } = 1.0;
    /// <summary>Random seed (initialisation and block order).</summary>
    public int Seed { get; init; } = 1234;
    /// <summary>Device: cpu, cuda or cuda:N (CUDA needs a CUDA libtorch, e.g. QUANTA_LIBTORCH_DIR).</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>CPU threads for libtorch (0 = libtorch's default).</summary>
    public int Threads { get; init; } = 0;
    /// <summary>Evaluate a validation subset every this many steps; the model is saved when that perplexity improves.</summary>
    public int EvalEvery { get; init; } = 100;
    /// <summary>Validation sequences used by the periodic evaluation (the final one uses every line).</summary>
    public int EvalLines { get; init; } = 512;
    /// <summary>Continue from this Hugging Face folder's weights (fresh optimizer and schedule) instead of a random init.</summary>
    public string? InitFrom { get; init; }
    /// <summary>true: no training; reload the model in <see cref="Out"/> and write its evaluation (evaluation.json).</summary>
    public bool EvalOnly { get; init; }
    /// <summary>Stored weight dtype: bfloat16 (half the size) or float32.</summary>
    public string SaveDtype { get; init; } = "bfloat16";

    /// <summary>Parses <c>--name value</c> pairs (names as the properties, case-insensitive, dashes ignored).</summary>
    /// <exception cref="ArgumentException">an unknown name, a missing value or a value of the wrong type.</exception>
    public static PretrainOptions Parse(string[] args)
    {
        var o = new PretrainOptions();
        var props = typeof(PretrainOptions).GetProperties().ToDictionary(p => p.Name.ToLowerInvariant());
        for (int i = 0; i < args.Length; i++)
        {
            var key = args[i].TrimStart('-').Replace("-", "").ToLowerInvariant();
            if (!props.TryGetValue(key, out var prop))
                throw new ArgumentException($"Unknown option '{args[i]}'. Known: {string.Join(", ", props.Values.Select(p => "--" + p.Name))}.");
            if (i + 1 >= args.Length) throw new ArgumentException($"Option '{args[i]}' needs a value.");
            var text = args[++i];
            object value;
            try
            {
                var t = Nullable.GetUnderlyingType(prop.PropertyType) ?? prop.PropertyType;
                value = t == typeof(string) ? text : Convert.ChangeType(text, t, CultureInfo.InvariantCulture);
            }
            catch (FormatException)
            {
                throw new ArgumentException($"Option '{args[i - 1]}' expects a {prop.PropertyType.Name}, got '{text}'.");
            }
            o = o with { };
            prop.SetValue(o, value);
        }
        if (o.Hidden % o.Heads != 0) throw new ArgumentException($"--hidden {o.Hidden} must be divisible by --heads {o.Heads}.");
        if (o.Heads % o.KvHeads != 0) throw new ArgumentException($"--heads {o.Heads} must be a multiple of --kv-heads {o.KvHeads}.");
        if (o.SaveDtype is not ("bfloat16" or "float32")) throw new ArgumentException($"--save-dtype must be bfloat16 or float32, got '{o.SaveDtype}'.");
        return o;
    }
}
