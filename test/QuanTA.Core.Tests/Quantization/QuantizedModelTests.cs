using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Quantization;
using QuanTA.Core.Tests.Adapters;
using QuanTA.Core.Tests.Models;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Core.Tests.Quantization;

/// <summary>Quantized bases on the llama-tiny fixture: logits against the dense model, training, the fused QuanTA paths.</summary>
public class QuantizedModelTests(ITestOutputHelper output)
{
    static QuantizedModelTests() => TestUtil.Init();

    internal static IEnumerable<AdaptableLinear> Projections(LlamaForCausalLM m) => m.model.layers.SelectMany(l => new[]
        { l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj, l.self_attn.o_proj, l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj });

    // Stated tolerances (max |Δlogit| over the reference batch; this random-weight fixture's logits are below 1 in magnitude):
    // NF4 (16 levels per block of 64) 0.3, measured 0.18; Int8 (255 levels per row) 0.03, measured 0.011.
    [Theory]
    [InlineData(BaseQuantization.NF4, 0.3)]
    [InlineData(BaseQuantization.Int8, 0.03)]
    public void QuantizedLogitsStayCloseToTheDenseOnes(BaseQuantization kind, double tolerance)
    {
        var r = Fixture.Reference("llama-tiny");
        using var dense = CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        using var quant = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"), quantization: kind);
        Assert.Equal(kind, quant.Config.Quantization);
        Assert.All(Projections(quant), l => Assert.Equal(kind, l.QuantizedWeight!.Kind));
        Assert.Null(quant.lm_head.QuantizedWeight);                                  // the head stays dense, as in QLoRA
        Assert.Equal(BaseQuantization.None, quant.lm_head.Quantization);
        using var _ = no_grad();
        using var a = dense.forward(r["input_ids"], r["attention_mask"]);
        using var b = quant.forward(r["input_ids"], r["attention_mask"]);
        var err = Fixture.MaxAbsDiff(a, b);
        using var scale = a.abs().max();
        using var agree = a.argmax(-1).eq(b.argmax(-1)).to_type(ScalarType.Float32).mean();
        output.WriteLine($"{kind}: max |Δlogit| {err:F4} (max |logit| {scale.item<float>():F2}), top-1 agreement {agree.item<float>():P1}");
        Assert.True(err < tolerance, $"{kind}: max logit error {err} ≥ {tolerance}");
        Assert.True(err > 1e-5, "the logits did not change: the weights were not quantized");
    }

    [Fact]
    public void AModuleWideDtypeMoveKeepsTheCodesAndChangesTheComputeDtype()
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"), quantization: BaseQuantization.NF4);
        var q = (NF4Weight)model.model.layers[0].mlp.up_proj.QuantizedWeight!;
        using var codesBefore = q.Packed.clone();
        using var _ = no_grad();
        using var fp32 = model.forward(r["input_ids"]);
        model.to(ScalarType.BFloat16);
        Assert.Same(q, model.model.layers[0].mlp.up_proj.QuantizedWeight);
        Assert.Equal(ScalarType.BFloat16, q.ComputeDType);
        Assert.Equal(ScalarType.Byte, q.Packed.dtype);                                // codes are not cast by .to(dtype)
        Assert.Equal(ScalarType.Float32, q.NestedAbsmax!.dtype);
        using (var same = q.Packed.eq(codesBefore).all()) Assert.True(same.item<bool>());
        using var w = model.model.layers[0].mlp.up_proj.DequantizedWeight();
        Assert.Equal(ScalarType.Float32, w.dtype);
        using var bf16 = model.forward(r["input_ids"]);
        Assert.True(Fixture.MaxAbsDiff(bf16, fp32) < 0.5, "bf16 forward on the NF4 base drifted");
    }

    [Theory]
    [InlineData(BaseQuantization.NF4, "quanta")]
    [InlineData(BaseQuantization.NF4, "lora")]
    [InlineData(BaseQuantization.Int8, "quanta")]
    public void TrainingStepsOnAQuantizedBaseLowerTheLoss(BaseQuantization kind, string method)
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"), quantization: kind);
        IAdapterConfig config = method == "quanta" ? new QuanTAConfig { Seed = 3 } : new LoRAConfig { Rank = 4, Seed = 3 };
        AdapterInjector.Inject(model, config, TargetModules.Names("q_proj", "v_proj", "down_proj"));
        model.train();
        var ids = r["input_ids"];
        using var opt = optim.AdamW(model.parameters().Where(p => p.requires_grad), lr: 1e-2);
        float Loss(bool step)
        {
            using var scope = NewDisposeScope();
            var logits = model.forward(ids);                                          // (B, T, V)
            var loss = nn.functional.cross_entropy(logits[.., ..^1].reshape(-1, logits.shape[2]), ids[.., 1..].reshape(-1));
            if (step) { loss.backward(); opt.step(); opt.zero_grad(); }
            return loss.item<float>();
        }
        float before = Loss(false);
        for (int i = 0; i < 5; i++) Loss(true);
        float after = Loss(false);
        output.WriteLine($"{kind} {method}: loss {before:F4} → {after:F4}");
        Assert.True(after < before - 1e-3, $"loss did not go down: {before} → {after}");
        Assert.All(Projections(model), l => Assert.False(l.IsMerged));
    }

    [Theory]
    [InlineData(QuanTATrainingPath.Stacked)]
    [InlineData(QuanTATrainingPath.Layerwise)]
    public void FusedQuanTAPathsOnAQuantizedBaseMatchThePlainPath(QuanTATrainingPath path)
    {
        var r = Fixture.Reference("llama-tiny");
        (float Loss, Tensor[] Grads) Run(bool fused)
        {
            using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"), quantization: BaseQuantization.NF4);
            // No dropout and a private generator: nothing here reads the global RNG, which tests running in parallel also draw from.
            AdapterInjector.Inject(model, new QuanTAConfig { Seed = 4, Dropout = 0f }, TargetModules.Names("q_proj", "v_proj"));
            model.train();
            // Move the adapters off their identity start so ΔW ≠ 0.
            var gen = new Generator(1);
            using (no_grad()) foreach (var p in model.parameters().Where(p => p.requires_grad)) p.add_(randn(p.shape, generator: gen) * 0.05);
            using var bank = fused ? QuanTABank.Create(model, path) : null;
            using var scope = NewDisposeScope();
            bank?.Materialize(ScalarType.Float32);
            var logits = model.forward(r["input_ids"]);
            var loss = logits.pow(2).mean();
            loss.backward();
            bank?.Clear();
            var grads = (bank is null ? model.parameters().Where(p => p.requires_grad) : bank.Parameters)
                .Select(p => p.grad!.clone().DetachFromDisposeScope()).ToArray();
            return (loss.item<float>(), grads);
        }
        var plain = Run(false);
        var fusedRun = Run(true);
        output.WriteLine($"{QuanTATrainingPaths.Name(path)}: loss plain {plain.Loss:F6}, fused {fusedRun.Loss:F6}");
        Assert.Equal(plain.Loss, fusedRun.Loss, 4);
        // The bank stacks the layers' tensors, so compare what does not depend on the layout: the gradients' total squared norm.
        double Norm2((float, Tensor[] Grads) run) => run.Grads.Sum(g => g.pow(2).sum().item<float>());
        double nPlain = Norm2(plain), nFused = Norm2(fusedRun);
        output.WriteLine($"gradient norm² plain {nPlain:E4}, fused {nFused:E4}");
        Assert.True(nPlain > 0);
        Assert.True(Math.Abs(nFused - nPlain) <= 1e-4 * nPlain, $"adapter gradients differ: {nPlain} vs {nFused}");
    }
}
