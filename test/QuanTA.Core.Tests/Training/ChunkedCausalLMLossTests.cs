using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Tests.Adapters;
using QuanTA.Core.Tests.Models;
using QuanTA.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Training;

/// <summary>The chunked causal-LM loss equals the loss of the full logits (<see cref="Losses.CausalLM"/>), value and
/// gradients, in every chunking; the model's <see cref="CausalLM.LanguageModelLoss"/> uses it.</summary>
public class ChunkedCausalLMLossTests
{
    static ChunkedCausalLMLossTests() => TestUtil.Init();

    static Tensor Labels(Tensor ids)
    {
        var labels = ids.clone();
        labels[0, ..3] = tensor(Losses.IgnoreIndex);                 // a prompt: no loss there
        labels[1, 5..] = tensor(Losses.IgnoreIndex);                 // padding
        return labels;
    }

    [Theory]
    [InlineData(ScalarType.Float32, 1, true)]       // one row per chunk
    [InlineData(ScalarType.Float32, 7, true)]       // chunks that do not divide B·T
    [InlineData(ScalarType.Float32, 100000, true)]  // one chunk
    [InlineData(ScalarType.Float32, 7, false)]      // a frozen head: no weight gradient
    [InlineData(ScalarType.BFloat16, 5, true)]      // the head's GEMM in bf16, upcast, as lm_head(h).float()
    public void ValueAndGradientsEqualTheFullLogits(ScalarType dtype, int rows, bool headTrains)
    {
        var gen = new Generator(3);
        var h0 = randn([3, 9, 16], generator: gen).to_type(dtype);
        var w0 = (randn([50, 16], generator: gen) * 0.3).to_type(dtype);
        var ids = randint(0, 50, [3, 9], generator: gen);
        var labels = Labels(ids);

        (Tensor Loss, Tensor Gh, Tensor? Gw) Run(bool chunked)
        {
            var h = h0.clone().requires_grad_(true);
            var w = w0.clone().requires_grad_(headTrains);
            var loss = chunked
                ? ChunkedCausalLMLoss.Compute(h, w, labels, rows)
                : Losses.CausalLM(nn.functional.linear(h, w).to_type(ScalarType.Float32), labels, out _);
            (loss * 2.5).backward();                                   // an upstream gradient other than 1
            return (loss.detach(), h.grad!.clone(), headTrains ? w.grad!.clone() : null);
        }
        var full = Run(false);
        var chunks = Run(true);
        Assert.Equal(full.Loss.item<float>(), chunks.Loss.item<float>(), 5);
        double tol = dtype == ScalarType.Float32 ? 1e-5 : 2e-2;       // bf16: the same bf16 gradient, summed in another order
        Assert.True(TestUtil.RelErr(chunks.Gh.to_type(ScalarType.Float32), full.Gh.to_type(ScalarType.Float32)) < tol);
        if (headTrains) Assert.True(TestUtil.RelErr(chunks.Gw!.to_type(ScalarType.Float32), full.Gw!.to_type(ScalarType.Float32)) < tol);
        Assert.True(full.Gh.abs().max().to_type(ScalarType.Float32).item<float>() > 0);
    }

    [Fact]
    public void BadLabelsAreRefusedLikeTheFullLoss()
    {
        var h = randn(2, 4, 8);
        var w = randn(10, 8);
        var none = full(2, 4, Losses.IgnoreIndex, dtype: ScalarType.Int64);
        Assert.Contains("no target token", Assert.Throws<ArgumentException>(() => ChunkedCausalLMLoss.Compute(h, w, none)).Message);
        var outside = zeros(2, 4, dtype: ScalarType.Int64); outside[1, 2] = tensor(10L);
        Assert.Contains("0..9", Assert.Throws<ArgumentException>(() => ChunkedCausalLMLoss.Compute(h, w, outside)).Message);
        Assert.Throws<ArgumentException>(() => ChunkedCausalLMLoss.Compute(h, randn(10, 7), zeros(2, 4, dtype: ScalarType.Int64)));
    }

    [Fact]
    public void TheModelsTrainingLossIsTheFullLogitsLoss()
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        AdapterInjector.Inject(model, new LoRAConfig { Rank = 2, Seed = 1 }, TargetModules.Names("q_proj", "v_proj"));
        var gen = new Generator(2);
        using (no_grad()) foreach (var p in model.parameters().Where(p => p.requires_grad)) p.add_(randn(p.shape, generator: gen) * 0.05);
        model.train();
        var labels = r["input_ids"].masked_fill(r["attention_mask"].eq(0), Losses.IgnoreIndex);
        Tensor[] Grads(Func<Tensor> loss)
        {
            model.zero_grad();
            using var scope = NewDisposeScope();
            loss().backward();
            return model.parameters().Where(p => p.requires_grad).Select(p => p.grad!.clone().DetachFromDisposeScope()).ToArray();
        }
        float viaLogits = 0, viaChunks = 0;
        var a = Grads(() => { var l = Losses.CausalLM(model.forward(r["input_ids"], r["attention_mask"]), labels, out _); viaLogits = l.item<float>(); return l; });
        var b = Grads(() => { var l = model.LanguageModelLoss(r["input_ids"], r["attention_mask"], labels); viaChunks = l.item<float>(); return l; });
        Assert.Equal(viaLogits, viaChunks, 5);
        for (int i = 0; i < a.Length; i++) Assert.True(TestUtil.RelErr(b[i], a[i]) < 1e-5, $"tensor {i}: {TestUtil.RelErr(b[i], a[i]):E2}");
    }
}
