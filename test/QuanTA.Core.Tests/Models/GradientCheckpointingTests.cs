using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Quantization;
using QuanTA.Core.Tests.Adapters;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;
using QuanTA.Core.Training;

namespace QuanTA.Core.Tests.Models;

/// <summary>Activation checkpointing of the decoder layers (<see cref="LlamaModel.GradientCheckpointing"/>) gives the loss and
/// gradients of the plain graph on every adapter and training path, with padding, dropout and a quantized base.</summary>
[Collection(QuanTA.Core.Tests.Training.TrainingCollection.Name)]   // dropout masks from the global generator (manual_seed): not while other tests draw
public class GradientCheckpointingTests(ITestOutputHelper output)
{
    static GradientCheckpointingTests() => TestUtil.Init();

    public enum Setup { QuanTAPerLayer, QuanTAStacked, QuanTAStackedRecompute, NF4StackedRecompute, QuanTALayerwise, QuanTALayerwiseUncached, LoRA, QuanTADropout, NF4Layerwise, QwenLoRA, LoRAUnpadded }

    /// <summary>Loss and the gradients of everything the optimizer would train, two micro-batches accumulated.</summary>
    static (double Loss, Tensor[] Grads) Run(Setup setup, bool checkpoint)
    {
        string name = setup == Setup.QwenLoRA ? "qwen2-tiny" : "llama-tiny";
        var r = Fixture.Reference(name);
        using var model = CausalLM.FromPretrained(Fixture.Dir(name), quantization: setup is Setup.NF4Layerwise or Setup.NF4StackedRecompute ? BaseQuantization.NF4 : BaseQuantization.None);
        bool lora = setup is Setup.LoRA or Setup.QwenLoRA or Setup.LoRAUnpadded;
        IAdapterConfig config = lora
            ? new LoRAConfig { Rank = 2, Seed = 1 }
            : new QuanTAConfig { Seed = 4, Dropout = setup == Setup.QuanTADropout ? 0.2 : 0 };
        AdapterInjector.Inject(model, config, lora ? TargetModules.All() : TargetModules.Names("q_proj", "v_proj"));
        var gen = new Generator(1);                                 // off the identity / zero start, so every gradient is non-trivial
        using (no_grad()) foreach (var p in model.parameters().Where(p => p.requires_grad)) p.add_(randn(p.shape, generator: gen) * 0.05);
        foreach (var stack in model.modules().OfType<LlamaModel>()) stack.GradientCheckpointing = checkpoint;
        var path = setup switch
        {
            Setup.QuanTAStacked => QuanTATrainingPath.Stacked,
            Setup.QuanTAStackedRecompute or Setup.NF4StackedRecompute => QuanTATrainingPath.StackedRecompute,
            Setup.QuanTALayerwise or Setup.NF4Layerwise => QuanTATrainingPath.Layerwise,
            Setup.QuanTALayerwiseUncached => QuanTATrainingPath.LayerwiseUncached,
            _ => QuanTATrainingPath.PerLayer,
        };
        using var bank = path == QuanTATrainingPath.PerLayer ? null : QuanTABank.Create(model, path, recomputeChunk: 3);   // stacked-recompute: chunks across decoder layers, one short
        model.train();
        manual_seed(7);                                             // dropout masks: the same stream in both runs
        double total = 0;
        for (int micro = 0; micro < 2; micro++)
        {
            using var scope = NewDisposeScope();
            bank?.Materialize(ScalarType.Float32);
            var ids = micro == 0 ? r["input_ids"] : r["input_ids"].flip(1);
            // padded rows: the mask is one of the kept constants; unpadded: the checkpointed GQA attention runs inside the recompute
            var logits = model.forward(ids, setup == Setup.LoRAUnpadded ? null : r["attention_mask"]);
            var loss = logits.log_softmax(-1).pow(2).mean();
            loss.backward();
            total += loss.item<float>();
            bank?.Clear();
        }
        var trained = bank is null ? model.parameters().Where(p => p.requires_grad).ToArray() : bank.OptimizerParameters(model).Select(p => p.Parameter).ToArray();
        return (total, trained.Select(p => p.grad!.clone().DetachFromDisposeScope()).ToArray());
    }

    [Theory]
    [InlineData(Setup.QuanTAPerLayer)]
    [InlineData(Setup.QuanTAStacked)]
    [InlineData(Setup.QuanTAStackedRecompute)]   // a chunk's tensor gradients come back from the recompute of its last layer
    [InlineData(Setup.NF4StackedRecompute)]
    [InlineData(Setup.QuanTALayerwise)]
    [InlineData(Setup.QuanTALayerwiseUncached)]
    [InlineData(Setup.LoRA)]
    [InlineData(Setup.QuanTADropout)]    // the recompute replays the forward's dropout masks
    [InlineData(Setup.NF4Layerwise)]     // quantized base: its own custom backward runs inside the recompute
    [InlineData(Setup.QwenLoRA)]         // biases on q/k/v
    [InlineData(Setup.LoRAUnpadded)]     // no mask: grouped-query attention's own checkpointed node nests in the layer's
    public void CheckpointedLayersGiveThePlainGraphsLossAndGradients(Setup setup)
    {
        var plain = Run(setup, checkpoint: false);
        var checkpointed = Run(setup, checkpoint: true);
        output.WriteLine($"{setup}: loss {plain.Loss:F6} vs {checkpointed.Loss:F6}, {plain.Grads.Length} trained tensors");
        Assert.Equal(plain.Loss, checkpointed.Loss, 5);
        Assert.Equal(plain.Grads.Length, checkpointed.Grads.Length);
        Assert.True(plain.Grads.Length > 0);
        for (int i = 0; i < plain.Grads.Length; i++)
        {
            Assert.True(plain.Grads[i].abs().max().item<float>() > 0, $"tensor {i} has a zero gradient");
            double e = TestUtil.RelErr(checkpointed.Grads[i], plain.Grads[i]);
            Assert.True(e < 1e-5, $"{setup}, tensor {i}: rel err {e:E2}");
        }
    }

    [Fact]
    public void EvaluationAndGenerationAreUntouched()
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        AdapterInjector.Inject(model, new QuanTAConfig { Seed = 4 }, TargetModules.Names("q_proj", "v_proj"));
        using var _ = no_grad();
        using var plain = model.forward(r["input_ids"], r["attention_mask"]);
        model.model.GradientCheckpointing = true;
        using var same = model.forward(r["input_ids"], r["attention_mask"]);   // no graph: the layers run as usual
        Assert.Equal(0.0, Fixture.MaxAbsDiff(plain, same));
    }

    [Fact]
    public void CheckpointedStepsLeaveNoTensorsBehind()
    {
        var r = Fixture.Reference("llama-tiny");
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("llama-tiny"));
        AdapterInjector.Inject(model, new QuanTAConfig { Seed = 4 }, TargetModules.Names("q_proj", "v_proj"));
        model.model.GradientCheckpointing = true;
        using var bank = QuanTABank.Create(model, QuanTATrainingPath.Layerwise);
        using var opt = optim.AdamW(bank.OptimizerParameters(model).Select(p => p.Parameter), lr: 1e-3);
        model.train();
        long Step()
        {
            using (var scope = NewDisposeScope())
            {
                bank.Materialize(ScalarType.Float32);
                model.forward(r["input_ids"], r["attention_mask"]).log_softmax(-1).mean().backward();
                opt.step(); opt.zero_grad();
                bank.Clear();
            }
            return DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        }
        for (int i = 0; i < 3; i++) Step();
        long settled = Step();
        for (int i = 0; i < 10; i++) Step();
        Assert.Equal(settled, Step());
    }
}
