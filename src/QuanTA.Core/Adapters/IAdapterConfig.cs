using static TorchSharp.torch;

namespace QuanTA.Core.Adapters;

/// <summary>
/// The options of one adapter method (PEFT's <c>XxxConfig</c>): validated once, then used by <see cref="AdapterInjector"/>
/// to create one <see cref="Adapter"/> per targeted linear layer. Implemented by <see cref="QuanTAConfig"/> and <see cref="LoRAConfig"/>.
/// </summary>
public interface IAdapterConfig
{
    /// <summary>Short method name ("quanta", "lora"), also the adapter's state-dict prefix under each layer.</summary>
    string Method { get; }

    /// <summary>Optional seed for the adapters' random initialization; null uses TorchSharp's global generator.</summary>
    int? Seed { get; }

    /// <summary>Creates an adapter for a layer of the given size (initialized from <see cref="Seed"/> when set).</summary>
    Adapter Create(int inFeatures, int outFeatures);

    /// <summary>Creates an adapter drawing its random initialization from <paramref name="generator"/> (null: global generator).</summary>
    Adapter Create(int inFeatures, int outFeatures, Generator? generator);

    /// <summary>Throws a clear exception when an option is out of range.</summary>
    void Validate();

    /// <summary>The options as JSON-serializable values (stored next to exported adapter weights).</summary>
    IReadOnlyDictionary<string, object?> ToDictionary();
}
