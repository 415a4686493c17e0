namespace QuanTA.Core.Quantization;

/// <summary>
/// How the frozen linear weights of the decoder layers (attention q/k/v/o and MLP gate/up/down projections) are stored while
/// an adapter is trained or run on them. Embeddings, norms and the LM / classification head always stay in the compute dtype,
/// as QLoRA does. See docs/quantization.md.
/// </summary>
public enum BaseQuantization
{
    /// <summary>Weights stay in the compute dtype (fp32 on CPU, bf16 on CUDA). The default. A folder already quantized by
    /// bitsandbytes (<c>…-bnb-4bit</c>) is dequantized at load.</summary>
    None = 0,

    /// <summary>8-bit weight-only: int8 codes with one absmax scale per output row (W ≈ q · absmax_row / 127).
    /// About half the memory of bf16.</summary>
    Int8 = 1,

    /// <summary>4-bit NormalFloat as in QLoRA (Dettmers et al., 2023) and bitsandbytes: blocks of 64 values, each scaled by
    /// its absmax and rounded to the nearest of 16 NF4 levels, two codes per byte; the absmax constants are themselves
    /// quantized to 8 bits in blocks of 256 (double quantization). About a quarter of the memory of bf16.</summary>
    NF4 = 2,
}
