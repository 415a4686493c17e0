using Microsoft.ML.Data;
using Microsoft.ML;

namespace QuanTA.MLNet.Tests;

/// <summary>One fitted generation model shared by <see cref="GenerationPipelineTests"/>.</summary>
public sealed class GenerationFixture : IDisposable
{
    public readonly MLContext Ml = new(seed: 3);
    public readonly IDataView Train;
    public readonly QuanTAFineTuneTransformer Model;
    public readonly string Zip = Path.Combine(Path.GetTempPath(), $"quanta-gen-{Guid.NewGuid():N}.zip");

    public GenerationFixture()
    {
        Train = ToyData.View(Ml, ToyData.Generation(32));
        Model = Ml.Transforms.QuanTAFineTune(new QuanTAFineTuneOptions
        {
            Task = QuanTATask.TextGeneration,
            BaseModelPath = ToyData.Fixture("llama-tiny"),
            AxisLayout = [8, 4, 4],
            TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"],
            Epochs = 8, BatchSize = 8, LearningRate = 1e-2, MaxSequenceLength = 32, MaxNewTokens = 4,
        }).Fit(Train);
        Ml.Model.Save(Model, Train.Schema, Zip);
    }

    public void Dispose()
    {
        Model.Dispose();
        File.Delete(Zip);
    }
}

public class GenerationPipelineTests(GenerationFixture f) : IClassFixture<GenerationFixture>
{
    [Fact]
    public void LossFallsAndTheTargetsAreLearned()
    {
        var losses = f.Model.TrainingLosses;
        // the fixture's lm_head is random and frozen (std 0.02), which caps the achievable loss near ln(1024) − 2.6 ≈ 4.4
        Assert.True(losses.TakeLast(2).Average() < losses.Take(2).Average() - 1.5,
            $"loss fell only from {losses.Take(2).Average():F3} to {losses.TakeLast(2).Average():F3}");
        var scored = f.Model.Transform(f.Train);
        var metrics = GenerationMetrics.Evaluate(scored);
        Assert.Equal(32, metrics.Count);
        Assert.True(metrics.ExactMatch >= 0.75, $"exact match {metrics.ExactMatch:F2}, F1 {metrics.F1:F2}");
        // perplexity on the targets = exp(mean target-token loss): close to the last training losses, far below the start
        double ppl = f.Model.Perplexity(f.Train);
        Assert.InRange(ppl, Math.Exp(losses[^1]) * 0.9, Math.Exp(losses[^1]) * 1.1);
        Assert.True(ppl < Math.Exp(losses[0]) / 4);
    }

    [Fact]
    public void LossIsOnTargetTokensOnly()
    {
        // the training loss equals the mean next-token NLL over target positions only, computed here by hand from the logits
        var o = new QuanTAFineTuneOptions { Task = QuanTATask.TextGeneration, BaseModelPath = ToyData.Fixture("llama-tiny"), AxisLayout = [8, 4, 4] };
        using var model = Engine.FineTuneModel.Create(o, 0, TorchSharp.torch.CPU, seed: 1);
        var rows = new[] { model.EncodeGeneration("word: cat\nkind:", " animal"), model.EncodeGeneration("a longer prompt here:", " tree") };
        Assert.Equal(model.Tokenizer.EosId, rows[0].Ids[^1]);
        using var scope = TorchSharp.torch.NewDisposeScope();
        double loss = model.LanguageModelLoss(rows).item<float>();
        double sum = 0; int n = 0;
        foreach (var r in rows)
        {
            var ids = TorchSharp.torch.tensor(r.Ids.Select(i => (long)i).ToArray(), [1, r.Ids.Length]);
            var logp = TorchSharp.torch.nn.functional.log_softmax(((TorchSharp.torch.nn.Module<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>)model.Module).forward(ids), -1);
            for (int t = r.PromptLength; t < r.Ids.Length; t++) { sum -= logp[0, t - 1, r.Ids[t]].item<float>(); n++; }
        }
        Assert.Equal(sum / n, loss, 1e-4);
        Assert.Equal(" animal".Length > 0 ? rows[0].Ids.Length - rows[0].PromptLength : 0, n - (rows[1].Ids.Length - rows[1].PromptLength));
    }

    [Fact]
    public void PredictionEngineAndSaveLoadAgreeWithTransform()
    {
        var rows = ToyData.Generation(4);
        var batched = f.Model.Transform(ToyData.View(f.Ml, rows)).GetColumn<string>("GeneratedText").ToList();
        var engine = f.Ml.Model.CreatePredictionEngine<PromptRow, GenerationPrediction>(f.Model);
        Assert.Equal(batched, rows.Select(r => engine.Predict(r).GeneratedText));

        var fresh = new MLContext().RegisterQuanTA();
        using var loaded = (QuanTAFineTuneTransformer)fresh.Model.Load(f.Zip, out _);
        Assert.Equal(batched, loaded.Transform(ToyData.View(fresh, rows)).GetColumn<string>("GeneratedText"));
    }

    [Fact]
    public void StopStringsCutTheOutput()
    {
        var o = f.Model.Options;
        Assert.Equal(["\n"], o.StopStrings);
        var texts = f.Model.Transform(f.Train).GetColumn<string>("GeneratedText");
        Assert.All(texts, t => Assert.DoesNotContain("\n", t));
    }
}

/// <summary>The generation penalties as ML.NET options: applied by <c>Transform</c>, validated, and saved with the model.</summary>
public class GenerationPenaltyOptionTests
{
    static (QuanTAFineTuneTransformer Model, List<string> Generated, MLContext Ml, IDataView Data) Fit(float repetitionPenalty)
    {
        var ml = new MLContext(seed: 3);
        var data = ToyData.View(ml, ToyData.Generation(8));
        var model = ml.Transforms.QuanTAFineTune(new QuanTAFineTuneOptions
        {
            Task = QuanTATask.TextGeneration, BaseModelPath = ToyData.Fixture("llama-tiny"), AxisLayout = [8, 4, 4],
            Epochs = 1, BatchSize = 8, LearningRate = 1e-6, MaxSequenceLength = 32, MaxNewTokens = 16, StopStrings = [],   // the base model, which repeats itself
            RepetitionPenalty = repetitionPenalty,
        }).Fit(data);
        return (model, model.Transform(data).GetColumn<string>("GeneratedText").ToList(), ml, data);
    }

    [Fact]
    public void ARepetitionPenaltyChangesWhatTransformGeneratesAndIsSavedWithTheModel()
    {
        var plain = Fit(1f);
        var penalized = Fit(3f);
        using var d1 = plain.Model; using var d2 = penalized.Model;
        Assert.Equal(plain.Model.TrainingLosses, penalized.Model.TrainingLosses);          // training is the same: only decoding differs
        Assert.NotEqual(plain.Generated, penalized.Generated);                              // the tiny model repeats itself unpenalized
        var zip = Path.Combine(Path.GetTempPath(), $"quanta-penalty-{Guid.NewGuid():N}.zip");
        try
        {
            penalized.Ml.Model.Save(penalized.Model, penalized.Data.Schema, zip);
            var fresh = new MLContext();
            using var loaded = (QuanTAFineTuneTransformer)fresh.Model.LoadWithQuanTA(fresh, zip, out _);
            Assert.Equal(3f, loaded.Options.RepetitionPenalty);
            Assert.Equal(penalized.Generated, loaded.Transform(penalized.Data).GetColumn<string>("GeneratedText"));
        }
        finally { File.Delete(zip); }
    }

    [Theory]
    [InlineData(nameof(QuanTAFineTuneOptions.RepetitionPenalty), 0f)]
    [InlineData(nameof(QuanTAFineTuneOptions.FrequencyPenalty), 2.5f)]
    [InlineData(nameof(QuanTAFineTuneOptions.PresencePenalty), -3f)]
    public void AnOutOfRangePenaltyNamesTheOption(string field, float value)
    {
        var o = new QuanTAFineTuneOptions { Task = QuanTATask.TextGeneration, BaseModelPath = ToyData.Fixture("llama-tiny") };
        typeof(QuanTAFineTuneOptions).GetField(field)!.SetValue(o, value);
        var ml = new MLContext();
        var e = Assert.ThrowsAny<ArgumentException>(() => ml.Transforms.QuanTAFineTune(o).Fit(ToyData.View(ml, ToyData.Generation(4))));
        Assert.Equal(field, e.ParamName);
    }
}
