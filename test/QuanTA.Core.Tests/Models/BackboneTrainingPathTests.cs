using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Models;

/// <summary>The backbone as the trainer uses it: gradients reach injected adapters only, through the padded-mask path.</summary>
public class BackboneTrainingPathTests
{
    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void GradientsReachAdaptersOnly(string name)
    {
        var r = Fixture.Reference(name);
        using var model = CausalLM.FromPretrained(Fixture.Dir(name));
        var report = AdapterInjector.Inject(model, new LoRAConfig { Rank = 2, Seed = 1 }, TargetModules.All());
        Assert.Equal(14, report.Layers.Count);                                                    // 7 per layer ("all-linear" leaves lm_head out, as PEFT does)
        model.train();
        using (var scope = NewDisposeScope())
        {
            var logits = model.forward(r["input_ids"], r["attention_mask"]);                      // (3, 12, V)
            var loss = logits.log_softmax(-1).mean();
            loss.backward();
        }
        foreach (var (pname, p) in model.named_parameters())
        {
            if (p.requires_grad)
            {
                Assert.NotNull(p.grad);
                Assert.True(p.grad!.isfinite().all().item<bool>(), pname);
            }
            else Assert.Null(p.grad);
        }
        // LoRA's B starts at zero, so A's gradient is zero but B's must not be.
        var anyNonZero = model.named_parameters().Where(p => p.parameter.requires_grad).Any(p => p.parameter.grad!.abs().sum().item<float>() > 0);
        Assert.True(anyNonZero);
    }

    [Fact]
    public void ClassifierBackwardThroughPooling()
    {
        var r = Fixture.Reference("llama-tiny-seqcls");
        using var model = LlamaForSequenceClassification.FromPretrained(Fixture.Dir("llama-tiny-seqcls"));
        AdapterInjector.Inject(model, new QuanTAConfig { Seed = 2 }, TargetModules.Names("q_proj", "v_proj"));
        model.train();
        using var scope = NewDisposeScope();
        var logits = model.forward(r["input_ids"], r["attention_mask"]);                          // (3, 5)
        var loss = nn.functional.cross_entropy(logits, tensor(new long[] { 0, 1, 2 }));
        loss.backward();
        Assert.All(model.parameters().Where(p => p.requires_grad), p => Assert.True(p.grad is not null && p.grad.isfinite().all().item<bool>()));
    }
}
