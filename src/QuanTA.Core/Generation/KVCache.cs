using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Generation;

/// <summary>
/// Per-layer key/value cache for incremental decoding (transformers' <c>DynamicCache</c>): each layer keeps
/// K and V of shape (B, n_kv_heads, S, head_dim) for all positions seen so far. The cache owns its tensors
/// (they live outside every dispose scope) and frees them on <see cref="Dispose"/>.
/// </summary>
public sealed class KVCache : IDisposable
{
    readonly Tensor?[] _keys;
    readonly Tensor?[] _values;

    /// <summary>Creates an empty cache for <paramref name="numLayers"/> decoder layers.</summary>
    public KVCache(int numLayers)
    {
        if (numLayers <= 0) throw new ArgumentOutOfRangeException(nameof(numLayers), numLayers, "Expected at least one layer.");
        _keys = new Tensor?[numLayers];
        _values = new Tensor?[numLayers];
    }

    /// <summary>Number of decoder layers.</summary>
    public int NumLayers => _keys.Length;

    /// <summary>Positions already cached (S), taken from the first layer; 0 when empty.</summary>
    public long SeqLength => _keys[0]?.shape[2] ?? 0;

    /// <summary>
    /// Appends this step's k, v (B, n_kv, T, hd) to layer <paramref name="layer"/> and returns the full (B, n_kv, S+T, hd)
    /// tensors. The returned tensors belong to the cache: do not dispose them.
    /// </summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor k, Tensor v)
    {
        if ((uint)layer >= (uint)_keys.Length)
            throw new ArgumentOutOfRangeException(nameof(layer), layer, $"The cache has {_keys.Length} layers.");
        _keys[layer] = Append(_keys[layer], k);
        _values[layer] = Append(_values[layer], v);
        return (_keys[layer]!, _values[layer]!);
    }

    static Tensor Append(Tensor? old, Tensor x)
    {
        var full = old is null ? x.detach().clone() : cat([old, x.detach()], 2);
        full.DetachFromDisposeScope();
        old?.Dispose();
        return full;
    }

    /// <summary>Frees every cached tensor and empties the cache.</summary>
    public void Clear()
    {
        for (var i = 0; i < _keys.Length; i++)
        {
            _keys[i]?.Dispose(); _keys[i] = null;
            _values[i]?.Dispose(); _values[i] = null;
        }
    }

    /// <inheritdoc/>
    public void Dispose() => Clear();
}
