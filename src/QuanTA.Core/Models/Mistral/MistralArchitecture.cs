using System.Text.Json.Nodes;

namespace QuanTA.Core.Models.Mistral;

/// <summary>
/// Mistral is LLaMA (no biases, GQA, optional explicit head_dim) plus sliding-window attention. Sliding windows are
/// not implemented: a forward pass whose total length (past + new tokens) exceeds <c>sliding_window</c> is refused
/// with a clear error, so results are exact whenever they are returned. Runs on the Llama modules.
/// </summary>
public static class MistralArchitecture
{
    /// <summary>Applies Mistral's differences to a config parsed with the LLaMA defaults.</summary>
    public static HfModelConfig Adjust(HfModelConfig cfg, JsonObject o, string source)
        => cfg with { QkvBias = false, OutputBias = false, MlpBias = false, SlidingWindow = HfModelConfig.Int(o, "sliding_window") };
}
