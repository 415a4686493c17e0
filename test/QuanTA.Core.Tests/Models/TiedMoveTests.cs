using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Models;

/// <summary>Moving a tied model (dtype here; devices take the same path) keeps one shared, valid weight.</summary>
public class TiedMoveTests
{
    [Fact]
    public void TiedModelStaysTiedThroughTo()
    {
        var r = Fixture.Reference("qwen2-tiny");
        using var model = (LlamaForCausalLM)CausalLM.FromPretrained(Fixture.Dir("qwen2-tiny"));
        model.to(ScalarType.Float16);
        Assert.Same(model.lm_head.weight, model.model.embed_tokens.weight);
        Assert.Equal(ScalarType.Float16, model.lm_head.weight.dtype);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float16, p.dtype));
        model.to(ScalarType.Float32).to(CPU);
        Assert.Same(model.lm_head.weight, model.model.embed_tokens.weight);
        Assert.Equal(new long[] { 1024, 128 }, model.model.embed_tokens.weight.shape);
        using var _ = no_grad();
        using var pos = arange(12L).unsqueeze(0).expand(3, -1);
        using var logits = model.forward(r["input_ids"], r["attention_mask"], pos);
        Assert.True(Fixture.MaxAbsDiff(logits, r["logits"]) < 2e-3);                            // after an fp16 round trip
    }
}
