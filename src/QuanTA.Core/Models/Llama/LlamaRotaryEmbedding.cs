using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>
/// Rotary position embedding (RoPE). Inverse frequencies follow transformers' <c>ROPE_INIT_FUNCTIONS</c>
/// (default, linear, llama3), computed in fp32 the same way; cos/sin are built per forward from position ids.
/// </summary>
public sealed class LlamaRotaryEmbedding
{
    readonly float[] _invFreq; // (hd/2), fp32 exactly as transformers computes it

    /// <summary>Builds the inverse frequencies for a head size and rope settings.</summary>
    public LlamaRotaryEmbedding(int headDim, RopeParameters rope)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        _invFreq = ComputeInvFreq(headDim, rope).data<float>().ToArray();
    }

    /// <summary>The inverse frequencies θ_i (length head_dim/2), after any scaling.</summary>
    public IReadOnlyList<float> InvFreq => _invFreq;

    /// <summary>transformers' inverse frequencies for <paramref name="rope"/> as an fp32 tensor (hd/2).</summary>
    public static Tensor ComputeInvFreq(int headDim, RopeParameters rope)
    {
        using var scope = NewDisposeScope();
        // default: 1 / base^(arange(0, d, 2) / d), in fp32
        var exponent = arange(0, headDim, 2, dtype: ScalarType.Int64).to_type(ScalarType.Float32) / headDim;
        var invFreq = 1.0f / full_like(exponent, rope.Theta).pow(exponent);
        switch (rope.Type)
        {
            case "default":
                break;
            case "linear":
                invFreq = invFreq / rope.Factor;
                break;
            case "llama3":
            {
                // transformers _compute_llama3_parameters: long wavelengths are divided by `factor`, short ones kept,
                // and the band in between is interpolated smoothly.
                double oldLen = rope.OriginalMaxPositionEmbeddings;
                var lowFreqWavelen = oldLen / rope.LowFreqFactor;
                var highFreqWavelen = oldLen / rope.HighFreqFactor;
                var wavelen = 2 * Math.PI / invFreq;
                var llama = where(wavelen > lowFreqWavelen, invFreq / rope.Factor, invFreq);
                var smooth = (oldLen / wavelen - rope.LowFreqFactor) / (rope.HighFreqFactor - rope.LowFreqFactor);
                var smoothed = (1 - smooth) * llama / rope.Factor + smooth * llama;
                var isMedium = (wavelen < highFreqWavelen).logical_not().logical_and((wavelen > lowFreqWavelen).logical_not());
                invFreq = where(isMedium, smoothed, llama);
                break;
            }
            default:
                throw new NotSupportedException($"rope_type \"{rope.Type}\" is not supported (supported: default, linear, llama3).");
        }
        return invFreq.MoveToOuterDisposeScope();
    }

    /// <summary>cos and sin for <paramref name="positionIds"/> (B, T) → each (B, T, head_dim), in <paramref name="dtype"/>.</summary>
    public (Tensor Cos, Tensor Sin) Forward(Tensor positionIds, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var invFreq = tensor(_invFreq, device: positionIds.device);                           // (hd/2)
        var freqs = positionIds.to_type(ScalarType.Float32).unsqueeze(-1) * invFreq;          // (B, T, hd/2)
        var emb = cat([freqs, freqs], -1);                                                    // (B, T, hd)
        var cos = emb.cos().to_type(dtype).MoveToOuterDisposeScope();
        var sin = emb.sin().to_type(dtype).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary>x·cos + rotate_half(x)·sin for x (B, H, T, hd) and cos/sin (B, T, hd).</summary>
    /// <remarks>On a CUDA device the fused kernel runs when available (<see cref="Kernels.KernelAvailability"/>: the same
    /// roundings, one autograd node keeping only cos and sin); otherwise <see cref="LibTorchApply"/>.</remarks>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
        => x.device_type == DeviceType.CUDA && Kernels.RoPEKernel.TryApply(x, cos, sin) is { } y ? y : LibTorchApply(x, cos, sin);

    /// <summary>The libtorch expression (the path on CPU, and on GPUs without the kernel): transformers' apply_rotary_pos_emb.</summary>
    public static Tensor LibTorchApply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        var half = x.shape[^1] / 2;
        var x1 = x[.., .., .., ..(int)half];
        var x2 = x[.., .., .., (int)half..];
        var rotated = cat([-x2, x1], -1);                                                     // rotate_half
        return (x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1)).MoveToOuterDisposeScope();
    }
}
