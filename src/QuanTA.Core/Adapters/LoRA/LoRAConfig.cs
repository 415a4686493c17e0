using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// Options of a LoRA adapter (Hu et al. 2021; PEFT's <c>LoraConfig</c>): ΔW = (alpha / r) · B · A with A [r, in] and B [out, r].
/// Defaults follow PEFT: r = 8, alpha = 8, no dropout.
/// </summary>
public sealed record LoRAConfig : IAdapterConfig
{
    /// <summary>Rank r of the update (r ≥ 1). Default 8.</summary>
    public int Rank { get; init; } = 8;

    /// <summary>Scaling numerator: the update is multiplied by alpha / r. Default 8 (PEFT's default).</summary>
    public double Alpha { get; init; } = 8;

    /// <summary>Dropout probability on the adapter's input (training mode only). Default 0.</summary>
    public double Dropout { get; init; }

    /// <inheritdoc/>
    public int? Seed { get; init; }

    /// <inheritdoc/>
    public string Method => "lora";

    /// <inheritdoc/>
    /// <remarks>The one home of these rules (<c>QuanTAFineTuneOptions.Validate</c> calls it). An error is an
    /// <see cref="ArgumentException"/> whose ParamName is the property: "LoRAConfig.Rank: must be …".</remarks>
    public void Validate()
    {
        static void Check(bool ok, string property, string problem)
        {
            if (!ok) throw new ArgumentException($"LoRAConfig.{property}: {problem}", property);
        }
        Check(Rank >= 1, nameof(Rank), $"must be positive (got {Rank}).");
        Check(double.IsFinite(Alpha) && Alpha != 0, nameof(Alpha), $"must be a finite non-zero number (got {Alpha}).");
        Check(Dropout is >= 0 and < 1, nameof(Dropout), $"must be in [0, 1) (got {Dropout}).");   // NaN fails too
    }

    /// <inheritdoc/>
    public Adapter Create(int inFeatures, int outFeatures)
    {
        using var g = Seed is int s ? new Generator((ulong)s) : null;
        return Create(inFeatures, outFeatures, g);
    }

    /// <inheritdoc/>
    public Adapter Create(int inFeatures, int outFeatures, Generator? generator)
    {
        Validate();
        return new LoRAAdapter(inFeatures, outFeatures, Rank, Alpha, Dropout, generator);
    }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, object?> ToDictionary() => new Dictionary<string, object?>
    {
        ["method"] = Method,
        ["rank"] = Rank,
        ["alpha"] = Alpha,
        ["dropout"] = Dropout,
        ["seed"] = Seed,
    };
}
