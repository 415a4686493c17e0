using QuanTA.Core.Adapters;
using QuanTA.Core.Generation;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>
/// Multi-head self-attention with grouped-query attention (n_kv_heads ≤ n_heads: k/v heads are repeated), rotary
/// embeddings, an optional KV cache, and <c>scaled_dot_product_attention</c> (scale 1/√head_dim). While training with plain
/// causal attention, grouped-query layers run as one checkpointed node (<see cref="CheckpointedGroupedAttention"/>) that
/// keeps the unrepeated k and v for the backward instead of the repeated ones.
/// </summary>
public sealed class LlamaAttention : nn.Module
{
#pragma warning disable IDE1006 // HF state-dict names
    /// <summary>q_proj: hidden → n_heads·head_dim.</summary>
    public AdaptableLinear q_proj;
    /// <summary>k_proj: hidden → n_kv_heads·head_dim.</summary>
    public AdaptableLinear k_proj;
    /// <summary>v_proj: hidden → n_kv_heads·head_dim.</summary>
    public AdaptableLinear v_proj;
    /// <summary>o_proj: n_heads·head_dim → hidden.</summary>
    public AdaptableLinear o_proj;
#pragma warning restore IDE1006
    readonly int _nHeads, _nKv, _headDim, _layerIdx;

    /// <summary>Creates the block for decoder layer <paramref name="layerIdx"/> (weights zero until loaded).</summary>
    public LlamaAttention(HfModelConfig c, int layerIdx, ScalarType dtype, Device? device) : base(nameof(LlamaAttention))
    {
        _nHeads = c.NumAttentionHeads; _nKv = c.NumKeyValueHeads; _headDim = c.HeadDim; _layerIdx = layerIdx;
        q_proj = new AdaptableLinear(c.HiddenSize, _nHeads * _headDim, c.QkvBias, dtype, device, c.Quantization);
        k_proj = new AdaptableLinear(c.HiddenSize, _nKv * _headDim, c.QkvBias, dtype, device, c.Quantization);
        v_proj = new AdaptableLinear(c.HiddenSize, _nKv * _headDim, c.QkvBias, dtype, device, c.Quantization);
        o_proj = new AdaptableLinear(_nHeads * _headDim, c.HiddenSize, c.OutputBias, dtype, device, c.Quantization);
        RegisterComponents();
    }

    /// <summary>
    /// x (B, T, C); cos/sin (B, T, hd); mask (B, 1, T, S) boolean (true = may attend) or null for plain causal
    /// attention without a cache; returns (B, T, C).
    /// </summary>
    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KVCache? cache)
    {
        using var scope = NewDisposeScope();
        var (B, T) = (x.shape[0], x.shape[1]);
        var q = q_proj.forward(x).view(B, T, _nHeads, _headDim).transpose(1, 2);   // (B, nh, T, hd)
        var k = k_proj.forward(x).view(B, T, _nKv, _headDim).transpose(1, 2);      // (B, nkv, T, hd)
        var v = v_proj.forward(x).view(B, T, _nKv, _headDim).transpose(1, 2);      // (B, nkv, T, hd)
        q = LlamaRotaryEmbedding.Apply(q, cos, sin);
        k = LlamaRotaryEmbedding.Apply(k, cos, sin);
        if (cache is not null) (k, v) = cache.Update(_layerIdx, k, v);             // (B, nkv, S, hd)
        Tensor y;
        if (CheckpointGroupedAttention && mask is null && cache is null && _nHeads != _nKv && T > 1 && is_grad_enabled()
            && (q.requires_grad || k.requires_grad || v.requires_grad))
            y = CheckpointedGroupedAttention.Apply(q, k, v, _nHeads / _nKv, Returned);   // (B, nh, T, hd), repeated k/v not kept
        else
        {
            k = RepeatKV(k, _nHeads / _nKv);                                        // (B, nh, S, hd)
            v = RepeatKV(v, _nHeads / _nKv);
            y = mask is null
                ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: T > 1)
                : nn.functional.scaled_dot_product_attention(q, k, v, mask);        // (B, nh, T, hd)
        }
        y = y.transpose(1, 2).reshape(B, T, _nHeads * _headDim);                    // (B, T, nh·hd)
        return o_proj.forward(y).MoveToOuterDisposeScope();                         // (B, T, C)
    }

    /// <summary>Whether training with plain causal attention checkpoints grouped-query layers (on by default; the benchmark
    /// turns it off to measure the plain graph).</summary>
    internal static bool CheckpointGroupedAttention { get; set; } = true;

    /// <summary>Where the checkpointed node's returned gradients wait until libtorch has taken them; the model shares one
    /// holder among its layers and empties it at each forward.</summary>
    internal Runtime.ReturnedGradients Returned { get; set; } = new();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) Returned.ReleaseAll();
        base.Dispose(disposing);
    }

    /// <summary>(B, n_kv, S, hd) → (B, n_kv·nRep, S, hd), each kv head repeated for its group of query heads.</summary>
    public static Tensor RepeatKV(Tensor x, int nRep)
    {
        if (nRep == 1) return x;
        var (B, nKv, S, hd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        return x.unsqueeze(2).expand(B, nKv, nRep, S, hd).reshape(B, nKv * nRep, S, hd);
    }
}
