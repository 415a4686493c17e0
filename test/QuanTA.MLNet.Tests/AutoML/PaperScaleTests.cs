using QuanTA.Core.Models;
using QuanTA.MLNet.AutoML;

namespace QuanTA.MLNet.Tests.AutoML;

/// <summary>Parameter counting at the paper's scale (LLaMA-2-7B config, no weights needed) and a 0.1 % constraint there.</summary>
public class PaperScaleTests
{
    // LLaMA-2-7B's config.json (the fields that shape the model)
    const string Llama2_7B = """
        { "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
          "num_attention_heads": 32, "num_key_value_heads": 32, "tie_word_embeddings": false }
        """;

    static readonly ModelShape Shape = ModelShape.FromConfig(HfModelConfig.Parse(Llama2_7B), sequenceClassification: false);

    [Fact]
    public void CountsMatchTheKnownModelSizeAndThePaperTrainablePercent()
    {
        Assert.Equal(6_738_415_616, Shape.BaseParameters);   // Hugging Face's count for Llama-2-7b-hf
        var p = new QuanTASweepParameters { TargetModules = "q_proj,v_proj" };
        p.QuanTA.AxisLayout = "16,8,8,4";                     // the paper's layout
        var quanta = Shape.Count(p.ApplyTo(new QuanTAFineTuneOptions { BaseModelPath = "x" }, 1), trainsHead: false);
        Assert.Equal(64 * 43_008, quanta.Trainable);           // 43,008 per layer (quanta.md), q and v of 32 layers
        Assert.Equal(0.041, Math.Round(100 * quanta.TrainableFraction, 3));   // the paper's "0.041 %"
        var lora = new QuanTASweepParameters { Adapter = "LoRA", TargetModules = "q_proj,v_proj" };
        lora.LoRA.Rank = 8;
        Assert.Equal(4_194_304, Shape.Count(lora.ApplyTo(new QuanTAFineTuneOptions { BaseModelPath = "x" }, 1), false).Trainable);
    }

    [Fact]
    public void ATenthOfAPercentConstraintHoldsForEveryTrial()
    {
        var runner = new FakeRunner();
        var result = new Microsoft.ML.MLContext(1).QuanTASweep(new QuanTAFineTuneOptions { BaseModelPath = "unused", Task = QuanTATask.TextGeneration })
            .SetModelShape(Shape).SetTrialRunner(runner).SetBudget(30).SetConstraint(maxTrainableFraction: 0.001).Run();
        Assert.Equal(30, result.Trials.Count);
        Assert.All(result.Trials, t => Assert.True(t.TrainablePercent <= 0.1, $"{t.Description}: {t.TrainablePercent:F4} %"));
        Assert.NotEmpty(result.Rejected);
        Assert.All(result.Rejected, r => Assert.True(r.Reason.Contains("> 0.1 %"), r.Reason));
        // the generated layouts are factorizations of the widest targeted layer (4096 for attention, 11008 for all-linear's MLP),
        // not of the test fixture's 128, or derived per layer
        foreach (var c in runner.Calls.Where(c => c.Parameters.Adapter == "QuanTA" && c.Parameters.QuanTA.AxisLayout != QuanTASearchSpace.DerivedLayout))
            Assert.Equal(c.Parameters.TargetModules == "all-linear" ? 11008 : 4096,
                QuanTASearchSpace.ParseLayout(c.Parameters.QuanTA.AxisLayout).Aggregate(1, (a, b) => a * b));
    }
}
