using QuanTA.Core.Generation;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Quantization;
using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models;

/// <summary>
/// A decoder-only language model with a causal-LM head: input_ids (B, T) [+ attention_mask] → fp32 logits (B, T, V).
/// <see cref="FromPretrained"/> loads any supported Hugging Face folder (llama, qwen2, mistral).
/// </summary>
public abstract class CausalLM : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the module under a TorchSharp name.</summary>
    protected CausalLM(string name, HfModelConfig config) : base(name) => Config = config;

    /// <summary>The model's configuration.</summary>
    public HfModelConfig Config { get; }

    /// <summary>
    /// Logits for input_ids (B, T) int64. <paramref name="attentionMask"/> (B, cached + T), 1 = token, 0 = padding.
    /// <paramref name="positionIds"/> (B, T) overrides the mask-derived positions. With a <paramref name="cache"/>, the new
    /// keys/values are appended to it. <paramref name="lastTokenOnly"/> returns (B, 1, V) for the last position only.
    /// </summary>
    public abstract Tensor forward(Tensor inputIds, Tensor? attentionMask, Tensor? positionIds = null, KVCache? cache = null, bool lastTokenOnly = false);

    /// <summary>
    /// The training loss of a causal LM: the mean cross-entropy of each position against the next label, over the labels
    /// that are not <see cref="Training.Losses.IgnoreIndex"/> (as transformers' <c>ForCausalLMLoss</c>). This base computes
    /// the full logits (<see cref="Training.Losses.CausalLM"/>); a model may compute it without them
    /// (<see cref="Training.ChunkedCausalLMLoss"/>), with the same value and gradients.
    /// </summary>
    /// <param name="inputIds">(B, T) int64.</param>
    /// <param name="attentionMask">(B, T), 1 = token, 0 = padding, or null.</param>
    /// <param name="labels">(B, T) int64 aligned with <paramref name="inputIds"/> (not shifted).</param>
    public virtual Tensor LanguageModelLoss(Tensor inputIds, Tensor? attentionMask, Tensor labels)
    {
        using var logits = forward(inputIds, attentionMask);                                  // (B, T, V) fp32
        return Training.Losses.CausalLM(logits, labels, out _);
    }

    /// <summary>Logits (B, T, V) for unpadded input_ids (B, T).</summary>
    public override Tensor forward(Tensor inputIds) => forward(inputIds, null);

    /// <summary>An empty KV cache sized for this model.</summary>
    public KVCache CreateCache() => new(Config.NumHiddenLayers);

    /// <summary>The device of the model's weights.</summary>
    public Device Device => parameters().First().device;

    /// <summary>
    /// Loads a Hugging Face model folder (config.json + model.safetensors or a sharded model.safetensors.index.json).
    /// <paramref name="dtype"/> defaults to fp32 on CPU and bf16 on CUDA; <paramref name="device"/> defaults to CPU.
    /// <paramref name="quantization"/> stores the decoder layers' linear weights quantized (null: as the folder stores them,
    /// i.e. NF4 for a bitsandbytes 4-bit folder, else dense); they are quantized tensor by tensor while the checkpoint is read.
    /// </summary>
    /// <exception cref="NotSupportedException">the model_type or a setting is not supported.</exception>
    /// <exception cref="InvalidDataException">the checkpoint's tensors do not match the config (names the keys and shapes).</exception>
    public static CausalLM FromPretrained(string modelDir, ScalarType? dtype = null, Device? device = null, BaseQuantization? quantization = null)
        => LlamaForCausalLM.FromPretrained(modelDir, dtype, device, quantization);

    /// <summary>fp32 on CPU, bf16 on CUDA (unless asked otherwise); validates the choice.</summary>
    internal static ScalarType ResolveDType(ScalarType? dtype, Device device)
    {
        var t = dtype ?? (device.type == DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32);
        if (t is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentException($"dtype {t} is not supported for model weights; expected Float32, Float16 or BFloat16.", nameof(dtype));
        return t;
    }

    internal static Device ResolveDevice(Device? device)
    {
        TorchRuntime.Initialize();
        return device ?? CPU;
    }
}
