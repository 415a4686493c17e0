using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Models;

/// <summary>Reads a fixture folder (tiny HF checkpoint + reference outputs computed by transformers).</summary>
internal static class Fixture
{
    public static string Dir(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    /// <summary>reference.safetensors: input_ids, attention_mask, logits, greedy_prompt_ids, greedy_output_ids.</summary>
    public static Dictionary<string, Tensor> Reference(string name)
    {
        TorchRuntime.Initialize();
        return Safetensors.LoadStateDict(Path.Combine(Dir(name), "reference.safetensors"));
    }

    /// <summary>Copies a fixture into a fresh temp folder (to edit its config or weights).</summary>
    public static string CopyToTemp(string name)
    {
        var dst = Path.Combine(Path.GetTempPath(), "quanta-test-" + Guid.NewGuid().ToString("N")[..8], name);
        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(Dir(name))) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    public static float MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a.to_type(ScalarType.Float32) - b.to_type(ScalarType.Float32)).abs().max();
        return d.item<float>();
    }
}
