using QuanTA.Core.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>One pre-norm transformer block: x + attn(norm(x)), then h + mlp(norm(h)).</summary>
public sealed class LlamaDecoderLayer : nn.Module
{
#pragma warning disable IDE1006 // HF state-dict names
    /// <summary>self_attn.</summary>
    public LlamaAttention self_attn;
    /// <summary>mlp.</summary>
    public LlamaMLP mlp;
    /// <summary>input_layernorm (before attention).</summary>
    public LlamaRMSNorm input_layernorm;
    /// <summary>post_attention_layernorm (before the MLP).</summary>
    public LlamaRMSNorm post_attention_layernorm;
#pragma warning restore IDE1006

    /// <summary>Creates layer <paramref name="layerIdx"/>.</summary>
    public LlamaDecoderLayer(HfModelConfig c, int layerIdx, ScalarType dtype, Device? device) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(c, layerIdx, dtype, device);
        mlp = new LlamaMLP(c, dtype, device);
        input_layernorm = new LlamaRMSNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        post_attention_layernorm = new LlamaRMSNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        RegisterComponents();
    }

    /// <summary>x (B, T, C) → (B, T, C); see <see cref="LlamaAttention.Forward"/> for the other arguments.</summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KVCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = x + self_attn.Forward(input_layernorm.forward(x), cos, sin, mask, cache);
        var y = h + mlp.forward(post_attention_layernorm.forward(h));
        return y.MoveToOuterDisposeScope();
    }
}
