using QuanTA.Core.Models;

namespace QuanTA.Bench;

/// <summary>The LLaMA shapes of the benchmark (random weights: speed does not depend on their values).</summary>
static class LlamaShapes
{
    public static (HfModelConfig Config, int[] Layout, int Batch) Get(string name) => name switch
    {
        "tinyllama" => (Make(2048, 5632, 22, 32, 4), [16, 8, 4, 4], 8),
        "tiny" => (Make(256, 688, 2, 4, 2) with { VocabSize = 1000 }, [4, 4, 4, 4], 2),   // CPU smoke test
        "llama7b" => (Make(4096, 11008, 32, 32, 32), [16, 8, 8, 4], 4),
        // LLaMA-3-8B's shape (GQA 32/8, vocabulary 128,256): the chunked loss's target; run with --seq 1024 (batch 2 × 1024)
        "llama3-8b" => (Make(4096, 14336, 32, 32, 8) with { VocabSize = 128256 }, [16, 8, 8, 4], 2),
        _ => throw new ArgumentException($"Unknown shape '{name}'. Expected tinyllama, llama7b or llama3-8b."),
    };

    static HfModelConfig Make(int hidden, int inter, int layers, int heads, int kv) => new()
    {
        ModelType = "llama", VocabSize = 32000, HiddenSize = hidden, IntermediateSize = inter, NumHiddenLayers = layers,
        NumAttentionHeads = heads, NumKeyValueHeads = kv, HeadDim = hidden / heads, MaxPositionEmbeddings = 4096,
        RmsNormEps = 1e-5,
    };
}
