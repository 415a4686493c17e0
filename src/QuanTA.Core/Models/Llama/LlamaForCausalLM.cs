using QuanTA.Core.Adapters;
using QuanTA.Core.Generation;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>
/// transformers' <c>LlamaForCausalLM</c> (also Qwen2ForCausalLM / MistralForCausalLM): <c>model</c> + <c>lm_head</c>.
/// With tie_word_embeddings the lm_head and model.embed_tokens share one weight parameter, and stay tied through
/// <c>.to(device / dtype)</c>.
/// </summary>
public sealed class LlamaForCausalLM : CausalLM
{
#pragma warning disable IDE1006 // HF state-dict names
    /// <summary>The decoder stack.</summary>
    public LlamaModel model;
    /// <summary>lm_head: hidden → vocab.</summary>
    public AdaptableLinear lm_head;
#pragma warning restore IDE1006

    /// <summary>Creates an unloaded model (zero weights) of the given shape, on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public LlamaForCausalLM(HfModelConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null)
        : base(nameof(LlamaForCausalLM), config)
    {
        lm_head = new AdaptableLinear(config.HiddenSize, config.VocabSize, false, dtype, device);
        var embed = config.TieWordEmbeddings
            ? lm_head.weight
            : new Parameter(zeros(config.VocabSize, config.HiddenSize, dtype: dtype, device: device), requires_grad: false);
        model = new LlamaModel(config, embed, dtype, device);
        RegisterComponents();
    }

    /// <summary>Loads a Hugging Face folder; see <see cref="CausalLM.FromPretrained"/>.</summary>
    public static new LlamaForCausalLM FromPretrained(string modelDir, ScalarType? dtype = null, Device? device = null,
        Quantization.BaseQuantization? quantization = null)
    {
        var config = HfModelConfig.Load(modelDir).WithQuantization(quantization);
        CheckpointLoader.RefuseConfigLargerThanWeights(config, modelDir);
        var dev = ResolveDevice(device);
        var m = new LlamaForCausalLM(config, ResolveDType(dtype, dev), dev);
        try
        {
            // A tied checkpoint has no lm_head.weight (or a duplicate of the embedding, which transformers ignores).
            CheckpointLoader.Load(m, modelDir, config.TieWordEmbeddings ? ["lm_head.weight"] : []);
        }
        catch { m.Dispose(); throw; }
        m.eval();
        return m;
    }

    // Moving a module moves (and frees) each registered parameter once per owner; a shared weight has two owners, so the
    // embedding's slot is emptied during the move and pointed at lm_head's moved weight afterwards.
    /// <inheritdoc/>
    protected override nn.Module _to(Device device, ScalarType dtype, bool non_blocking) => KeepTied(() => base._to(device, dtype, non_blocking));
    /// <inheritdoc/>
    protected override nn.Module _to(DeviceType deviceType, int deviceIndex, bool non_blocking) => KeepTied(() => base._to(deviceType, deviceIndex, non_blocking));
    /// <inheritdoc/>
    protected override nn.Module _to(ScalarType dtype, bool non_blocking) => KeepTied(() => base._to(dtype, non_blocking));

    nn.Module KeepTied(Func<nn.Module> move)
    {
        if (!Config.TieWordEmbeddings) return move();
        model.embed_tokens.Untie();
        move();
        model.embed_tokens.Tie(lm_head.weight);
        return this;
    }

    /// <inheritdoc/>
    /// <remarks>With a plain head (no adapter on lm_head, not quantized, no bias) the loss is computed from the hidden states a
    /// chunk of rows at a time (<see cref="Training.ChunkedCausalLMLoss"/>): the fp32 (B, T, V) logits never exist.</remarks>
    public override Tensor LanguageModelLoss(Tensor inputIds, Tensor? attentionMask, Tensor labels)
    {
        if (lm_head.Adapter is not null || lm_head.Quantization != Quantization.BaseQuantization.None || lm_head.bias is not null)
            return base.LanguageModelLoss(inputIds, attentionMask, labels);
        using var scope = NewDisposeScope();
        var h = model.Forward(inputIds, attentionMask);                                // (B, T, C)
        return Training.ChunkedCausalLMLoss.Compute(h, lm_head.weight, labels).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor inputIds, Tensor? attentionMask, Tensor? positionIds = null, KVCache? cache = null, bool lastTokenOnly = false)
    {
        using var scope = NewDisposeScope();
        var h = model.Forward(inputIds, attentionMask, positionIds, cache);          // (B, T, C)
        if (lastTokenOnly) h = h[.., ^1..];                                          // (B, 1, C)
        var logits = lm_head.forward(h).to_type(ScalarType.Float32);                  // (B, T, V) fp32
        return logits.MoveToOuterDisposeScope();
    }
}
