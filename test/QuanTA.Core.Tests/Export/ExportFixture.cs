using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Export;

/// <summary>Fixture models with trained-looking adapters, and the helpers the export tests share.</summary>
internal static class ExportFixture
{
    public static string Dir(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    public static string TempDir() => Path.Combine(Path.GetTempPath(), $"quanta-export-{Guid.NewGuid():N}", "out");

    /// <summary>The causal llama-tiny fixture with adapters on q_proj and v_proj, every adapter parameter moved off its init so ΔW ≠ 0.</summary>
    public static CausalLM Causal(IAdapterConfig adapter, params string[] targets)
    {
        var model = CausalLM.FromPretrained(Dir("llama-tiny"));
        Adapt(model, adapter, targets);
        return model;
    }

    /// <summary>The llama-tiny-seqcls fixture (5 labels) with adapters and a trainable head, all moved off their init.</summary>
    public static LlamaForSequenceClassification Classifier(IAdapterConfig adapter, params string[] targets)
    {
        var model = LlamaForSequenceClassification.FromPretrained(Dir("llama-tiny-seqcls"));
        Adapt(model, adapter, targets);
        using (no_grad()) model.get_parameter("score.weight")!.add_(0.1);
        return model;
    }

    static void Adapt(nn.Module model, IAdapterConfig adapter, string[] targets)
    {
        AdapterInjector.Inject(model, adapter, TargetModules.Names(targets.Length == 0 ? ["q_proj", "v_proj"] : targets));
        using (no_grad())
        {
            var gen = new torch.Generator(11);
            foreach (var p in model.parameters().Where(p => p.requires_grad))   // a trained-looking, non-zero ΔW
                p.add_(randn(p.shape, generator: gen) * 0.05);
        }
        model.eval();
    }

    /// <summary>Token ids of two rows of different lengths, right-padded with pad id 1, and their mask.</summary>
    public static (Tensor Ids, Tensor Mask) Batch() =>
        (tensor(new long[] { 0, 17, 230, 41, 99, 5, 0, 301, 12, 7, 1, 1 }, [2, 6]), tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 }, [2, 6]));

    public static Tensor Logits(nn.Module model)
    {
        var (ids, mask) = Batch();
        using var _ = no_grad();
        return model switch
        {
            CausalLM lm => lm.forward(ids, mask),                                      // (2, 6, V)
            LlamaForSequenceClassification c => c.forward(ids, mask),                   // (2, labels)
            _ => throw new ArgumentException(model.GetType().Name),
        };
    }

    /// <summary>The raw bytes of a tensor (bit-for-bit comparisons).</summary>
    public static byte[] Bits(Tensor t) => t.cpu().contiguous().bytes.ToArray();
}
