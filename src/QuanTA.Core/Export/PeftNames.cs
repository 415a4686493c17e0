using System.Globalization;
using QuanTA.Core.Adapters;

namespace QuanTA.Core.Export;

/// <summary>
/// The key names of a PEFT adapter folder (both directions, so writing and loading cannot disagree). PEFT's
/// <c>get_peft_model_state_dict</c> names a tensor <c>base_model.model.</c> + the module's name in the transformers model + the
/// tuner's tensor name with the adapter name removed: LoRA <c>….q_proj.lora_A.weight</c> [r, in] and <c>….lora_B.weight</c>
/// [out, r]; a <c>modules_to_save</c> module (a classifier's <c>score</c>) under its own name, <c>base_model.model.score.weight</c>
/// (PEFT ≥ 0.15; older files used <c>score.modules_to_save.weight</c>, which the loader accepts too). QuanTA follows its official
/// code's parameter names: the trainable tensor of a pair is <c>….quanta_weights.{pair}</c> and its frozen copy
/// <c>….quanta_weights2.{pair}</c>, [d_m, d_n, d_m, d_n], with the pair in the official notation ("-1 -2" = the last two axes).
/// </summary>
public static class PeftNames
{
    /// <summary>Prefix of every PEFT key: PeftModel.base_model (the tuner) . model (the transformers model).</summary>
    public const string Prefix = "base_model.model.";
    /// <summary>The adapter weights file.</summary>
    public const string WeightsFile = "adapter_model.safetensors";
    /// <summary>The adapter config file.</summary>
    public const string ConfigFile = "adapter_config.json";
    /// <summary>What PEFT adds to modules_to_save for task_type SEQ_CLS (PeftModelForSequenceClassification).</summary>
    public static readonly string[] ClassifierModules = ["classifier", "score"];

    /// <summary>LoRA A of a layer.</summary>
    public static string LoraA(string layer) => $"{Prefix}{layer}.lora_A.weight";
    /// <summary>LoRA B of a layer.</summary>
    public static string LoraB(string layer) => $"{Prefix}{layer}.lora_B.weight";

    /// <summary>The key of QuanTA tensor <paramref name="i"/> of a layer: kind "quanta_weights" (T, full rank), "quanta_weights2"
    /// (the frozen S), "quanta_weights_u" / "quanta_weights_v" (the factors of a low-rank T). A pair that appears again later in
    /// the chain gets "#2", "#3", … after its key (the official code has each pair once).</summary>
    public static string QuanTA(string layer, string kind, AxisLayout layout, int i) => $"{Prefix}{layer}.{kind}.{PairKey(layout, i)}";

    /// <summary>The official key of tensor <paramref name="i"/>'s pair, with "#k" for the k-th occurrence of a repeated pair (k ≥ 2).</summary>
    public static string PairKey(AxisLayout layout, int i)
    {
        var pair = layout.Pairs[i];
        int occurrence = layout.Pairs.Take(i + 1).Count(p => p == pair);
        var key = pair.OfficialKey(layout.AxisCount);
        return occurrence == 1 ? key : key + "#" + occurrence.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>The state-dict key of a modules_to_save tensor (e.g. "score.weight").</summary>
    public static string ModuleToSave(string key) => Prefix + key;
}
