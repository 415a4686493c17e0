using System.Text.Json.Nodes;

namespace QuanTA.Core.Models.Qwen2;

/// <summary>
/// Qwen2 is LLaMA with a bias on the q/k/v projections (never on o_proj) and usually tied embeddings; it runs on the
/// Llama modules (<see cref="Llama.LlamaForCausalLM"/>). Sliding-window layers (<c>use_sliding_window: true</c>) are
/// not implemented: forward passes longer than the window are refused.
/// </summary>
public static class Qwen2Architecture
{
    /// <summary>Applies Qwen2's differences to a config parsed with the LLaMA defaults.</summary>
    public static HfModelConfig Adjust(HfModelConfig cfg, JsonObject o, string source)
    {
        var useSliding = HfModelConfig.Bool(o, "use_sliding_window") ?? false;
        return cfg with
        {
            QkvBias = true,
            OutputBias = false,
            SlidingWindow = useSliding ? HfModelConfig.Int(o, "sliding_window") : null,
        };
    }
}
