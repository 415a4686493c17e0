using QuanTA.Core.Adapters;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>
/// transformers' <c>LlamaForSequenceClassification</c>: <c>model</c> + a bias-free <c>score</c> head (hidden → num_labels)
/// read at the last non-padding token of each row (the rightmost position whose id is not config.pad_token_id).
/// </summary>
public sealed class LlamaForSequenceClassification : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // HF state-dict names
    /// <summary>The decoder stack.</summary>
    public LlamaModel model;
    /// <summary>score: hidden → num_labels.</summary>
    public AdaptableLinear score;
#pragma warning restore IDE1006

    /// <summary>Creates an unloaded model with <paramref name="numLabels"/> classes (default: config.NumLabels).</summary>
    public LlamaForSequenceClassification(HfModelConfig config, int? numLabels = null, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base(nameof(LlamaForSequenceClassification))
    {
        Config = config;
        NumLabels = numLabels ?? config.NumLabels;
        if (NumLabels < 1) throw new ArgumentOutOfRangeException(nameof(numLabels), NumLabels, "Expected at least one label.");
        var embed = new Parameter(zeros(config.VocabSize, config.HiddenSize, dtype: dtype, device: device), requires_grad: false);
        model = new LlamaModel(config, embed, dtype, device);
        score = new AdaptableLinear(config.HiddenSize, NumLabels, false, dtype, device);
        RegisterComponents();
    }

    /// <summary>The configuration.</summary>
    public HfModelConfig Config { get; }

    /// <summary>Number of classes.</summary>
    public int NumLabels { get; }

    /// <summary>
    /// Loads a Hugging Face folder. A sequence-classification checkpoint loads strictly. With
    /// <paramref name="initializeMissingHead"/>, a base causal-LM checkpoint is accepted too: its lm_head is ignored
    /// and <c>score.weight</c> is drawn from N(0, initializer_range²) (seeded by <paramref name="seed"/>), as transformers does.
    /// <paramref name="quantization"/>: as in <see cref="CausalLM.FromPretrained"/> (the score head always stays dense).
    /// </summary>
    public static LlamaForSequenceClassification FromPretrained(string modelDir, ScalarType? dtype = null, Device? device = null,
        int? numLabels = null, bool initializeMissingHead = false, long seed = 0, Quantization.BaseQuantization? quantization = null)
    {
        var config = HfModelConfig.Load(modelDir).WithQuantization(quantization);
        CheckpointLoader.RefuseConfigLargerThanWeights(config, modelDir);
        var dev = CausalLM.ResolveDevice(device);
        var m = new LlamaForSequenceClassification(config, numLabels, CausalLM.ResolveDType(dtype, dev), dev);
        try
        {
            var loaded = CheckpointLoader.Load(m, modelDir, initializeMissingHead ? ["lm_head.weight"] : [],
                optionalKeys: initializeMissingHead ? ["score.weight"] : []);
            if (!loaded.Contains("score.weight"))
            {
                using var _ = no_grad();
                var gen = new Generator((ulong)seed);
                using var init = normal(0, config.InitializerRange, [m.NumLabels, config.HiddenSize], generator: gen);
                m.score.weight.copy_(init);
            }
        }
        catch { m.Dispose(); throw; }
        m.eval();
        return m;
    }

    /// <summary>Pooled logits (B, num_labels) fp32 for unpadded input_ids (B, T).</summary>
    public override Tensor forward(Tensor inputIds) => forward(inputIds, null);

    /// <summary>Pooled logits (B, num_labels) fp32; padding is located through config.pad_token_id, as in transformers.</summary>
    public Tensor forward(Tensor inputIds, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        var B = inputIds.shape[0];
        var h = model.Forward(inputIds, attentionMask);                               // (B, T, C)
        var logits = score.forward(h);                                                // (B, T, L)
        Tensor last;                                                                  // (B) index of the last real token
        if (Config.PadTokenId is int pad)
        {
            var nonPad = inputIds.ne(pad).to_type(ScalarType.Int64);                  // (B, T)
            var idx = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device);
            last = (idx * nonPad).argmax(-1);
        }
        else if (B == 1) last = full(1, inputIds.shape[1] - 1, dtype: ScalarType.Int64, device: inputIds.device);
        else throw new InvalidOperationException("config.json has no pad_token_id, so batches of more than one row cannot be pooled (transformers refuses this too).");
        var pooled = logits[arange(B, dtype: ScalarType.Int64, device: inputIds.device), last];   // (B, L)
        return pooled.to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }
}
