using QuanTA.Core.Generation;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace QuanTA.Core.Models.Llama;

/// <summary>A token-embedding table (state-dict key <c>weight</c>, [vocab, hidden]); can share its weight with a tied lm_head.</summary>
public sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // HF state-dict name
    /// <summary>The embedding matrix, [vocab, hidden] (frozen).</summary>
    public Parameter weight;
#pragma warning restore IDE1006

    /// <summary>Wraps an existing parameter (tied embeddings) or a fresh zero table.</summary>
    public TokenEmbedding(Parameter weight) : base(nameof(TokenEmbedding))
    {
        this.weight = weight;
        RegisterComponents();
    }

    /// <summary>Parks a placeholder in the slot so a module move leaves the shared weight to its other owner.</summary>
    internal void Untie()
    {
        weight = new Parameter(empty(0, dtype: weight.dtype, device: weight.device), requires_grad: false);
        ConditionallyRegisterParameter(nameof(weight), weight);
    }

    /// <summary>Shares <paramref name="shared"/> again (after a move), freeing the placeholder.</summary>
    internal void Tie(Parameter shared)
    {
        var placeholder = weight;
        weight = shared;
        ConditionallyRegisterParameter(nameof(weight), shared);
        if (!ReferenceEquals(placeholder, shared)) placeholder.Dispose();
    }

    /// <summary>ids (B, T) int64 → (B, T, hidden).</summary>
    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        var flat = weight.index_select(0, ids.reshape(-1));                      // (B·T, C)
        return flat.view(ids.shape[0], ids.shape[1], weight.shape[1]).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The LLaMA decoder stack (transformers' <c>LlamaModel</c>): embed_tokens → layers → norm. Also runs Qwen2 and
/// Mistral (their differences are biases and settings in <see cref="HfModelConfig"/>).
/// </summary>
public sealed class LlamaModel : nn.Module
{
#pragma warning disable IDE1006 // HF state-dict names
    /// <summary>embed_tokens.</summary>
    public TokenEmbedding embed_tokens;
    /// <summary>layers.0 … layers.N-1.</summary>
    public ModuleList<LlamaDecoderLayer> layers;
    /// <summary>Final norm.</summary>
    public LlamaRMSNorm norm;
#pragma warning restore IDE1006
    readonly LlamaRotaryEmbedding _rope;

    /// <summary>Creates the stack; <paramref name="embedWeight"/> is the (possibly shared) embedding parameter.</summary>
    public LlamaModel(HfModelConfig c, Parameter embedWeight, ScalarType dtype, Device? device) : base(nameof(LlamaModel))
    {
        Config = c;
        embed_tokens = new TokenEmbedding(embedWeight);
        layers = new ModuleList<LlamaDecoderLayer>(Enumerable.Range(0, c.NumHiddenLayers)
            .Select(i => new LlamaDecoderLayer(c, i, dtype, device)).ToArray());
        norm = new LlamaRMSNorm(c.HiddenSize, c.RmsNormEps, dtype, device);
        _rope = new LlamaRotaryEmbedding(c.HeadDim, c.Rope);
        RegisterComponents();
        foreach (var layer in layers)
        {
            layer.self_attn.Returned = _returned;   // one holder: each backward frees the previous one's
            foreach (var linear in new[] { layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                                           layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj })
                linear.Returned = _returned;        // (quantized layers hand gradients back from a custom backward too)
        }
    }

    // Gradients the checkpointed attention nodes handed to libtorch (freed at the next node's backward or the next forward).
    readonly Runtime.ReturnedGradients _returned = new();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) _returned.ReleaseAll();
        base.Dispose(disposing);
    }

    /// <summary>
    /// Activation (gradient) checkpointing of the decoder layers while training (transformers'
    /// <c>gradient_checkpointing_enable()</c>): each layer keeps only its input between forward and backward and runs again in
    /// the backward (<see cref="DecoderLayerCheckpoint"/>). Less activation memory for one more forward per step; the same
    /// loss and gradients. Applies only to forwards that record a graph without a KV cache. Default off.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    DecoderLayerCheckpoint.Layer[]? _checkpointed;

    /// <summary>Sets <see cref="GradientCheckpointing"/> on every decoder stack in <paramref name="root"/> (LLaMA, Qwen2 and
    /// Mistral models, causal LM or classifier); returns how many decoder layers it now applies to.</summary>
    public static int SetGradientCheckpointing(nn.Module root, bool enabled)
    {
        int layers = 0;
        foreach (var stack in root.modules().OfType<LlamaModel>()) { stack.GradientCheckpointing = enabled; layers += stack.layers.Count; }
        return layers;
    }

    /// <summary>The configuration the stack was built from.</summary>
    public HfModelConfig Config { get; }

    /// <summary>The rotary embedding (its inverse frequencies are exposed for checks).</summary>
    public LlamaRotaryEmbedding RotaryEmbedding => _rope;

    /// <summary>
    /// input_ids (B, T) int64 → hidden states (B, T, C) after the final norm.
    /// <paramref name="attentionMask"/> (B, S) with S = cached + T (1 = real token, 0 = padding), or null for no padding.
    /// Position ids default to <c>cumsum(mask) − 1</c> (padding → 1), as transformers' <c>generate</c> does, so left- and
    /// right-padded rows give the same results as unpadded ones; without a mask they are past … past+T−1.
    /// </summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? positionIds = null, KVCache? cache = null)
    {
        if (inputIds.dim() != 2 || inputIds.dtype != ScalarType.Int64)
            throw new ArgumentException($"input_ids must be a 2-D int64 tensor (B, T); got {inputIds.dtype} [{string.Join(", ", inputIds.shape)}].", nameof(inputIds));
        _returned.ReleaseAll();                                                       // the last backward is over
        using var scope = NewDisposeScope();
        var (B, T) = (inputIds.shape[0], inputIds.shape[1]);
        var past = cache?.SeqLength ?? 0;
        var S = past + T;
        if (Config.SlidingWindow is int w && S > w)
            throw new NotSupportedException($"Sequence length {S} exceeds sliding_window {w}; sliding-window attention is not implemented ({Config.ModelType}).");
        if (cache is not null && cache.NumLayers != layers.Count)
            throw new ArgumentException($"The KV cache has {cache.NumLayers} layers but the model has {layers.Count}.", nameof(cache));
        var device = inputIds.device;

        Tensor? mask = null;                                                          // (B, 1, T, S) bool
        var qIdx = arange(past, S, dtype: ScalarType.Int64, device: device);          // (T)
        var kIdx = arange(0, S, dtype: ScalarType.Int64, device: device);             // (S)
        if (attentionMask is not null)
        {
            if (attentionMask.dim() != 2 || attentionMask.shape[0] != B || attentionMask.shape[1] != S)
                throw new ArgumentException($"attention_mask must be (B, cached + T) = ({B}, {S}); got [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
            var m = attentionMask.to(device).to_type(ScalarType.Int64);
            if (m.eq(1).all().item<bool>()) attentionMask = null;                     // no padding: plain causal
            else
            {
                positionIds ??= (m.cumsum(-1) - 1).masked_fill(m.eq(0), 1)[.., (int)past..];  // (B, T)
                var causal = kIdx.unsqueeze(0) <= qIdx.unsqueeze(1);                   // (T, S)
                var allowed = causal.unsqueeze(0).logical_and(m.ne(0).unsqueeze(1));   // (B, T, S)
                // A padding query with nothing to attend to (left padding) attends to itself instead of producing NaN.
                var diag = kIdx.unsqueeze(0) == qIdx.unsqueeze(1);                     // (T, S)
                var empty = allowed.any(-1, keepdim: true).logical_not();              // (B, T, 1)
                mask = allowed.logical_or(empty.logical_and(diag.unsqueeze(0))).unsqueeze(1);
            }
        }
        if (attentionMask is null && past > 0 && T > 1)
            mask = (kIdx.unsqueeze(0) <= qIdx.unsqueeze(1)).unsqueeze(0).unsqueeze(0).expand(B, 1, T, S);
        positionIds ??= qIdx.unsqueeze(0).expand(B, T);                               // (B, T)

        var x = embed_tokens.forward(inputIds);                                       // (B, T, C)
        var (cos, sin) = _rope.Forward(positionIds.to(device), x.dtype);              // (B, T, hd)
        bool checkpoint = GradientCheckpointing && cache is null && is_grad_enabled();
        if (checkpoint)
            _checkpointed ??= layers.Select(l => new DecoderLayerCheckpoint.Layer(l, (h, c) => l.Forward(h, c[0]!, c[1]!, c[2], null), _returned)).ToArray();
        for (int i = 0; i < layers.Count; i++)
        {
            var next = checkpoint ? DecoderLayerCheckpoint.Forward(_checkpointed![i], x, cos, sin, mask) : layers[i].Forward(x, cos, sin, mask, cache);
            x.Dispose();                                                              // free this wrapper now, not at the scope's end
            x = next;                                                                 // (autograd holds what it saved on its own)
        }
        return norm.forward(x).MoveToOuterDisposeScope();                             // (B, T, C)
    }
}
