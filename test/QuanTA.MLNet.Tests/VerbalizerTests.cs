using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Tests;

/// <summary>Classification with a causal LM: classes scored by the mean log-probability of their names (the paper's commonsense setup).</summary>
public class VerbalizerTests
{
    [Fact]
    public void CausalLMClassifiesByScoringClassNames()
    {
        var ml = new MLContext(seed: 11);
        var train = ToyData.View(ml, ToyData.Classification(48, seed: 1));
        var test = ToyData.View(ml, ToyData.Classification(30, seed: 2));
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(new QuanTAFineTuneOptions
            {
                BaseModelPath = ToyData.Fixture("llama-tiny"),
                ClassificationMode = ClassificationMode.Verbalizer,
                AxisLayout = [8, 4, 4], TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"],
                Epochs = 4, BatchSize = 8, LearningRate = 1e-2, MaxSequenceLength = 32,
            }))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(train);
        var zip = Path.Combine(Path.GetTempPath(), $"quanta-verb-{Guid.NewGuid():N}.zip");
        try
        {
            var quanta = model.OfType<QuanTAFineTuneTransformer>().Single();
            Assert.True(quanta.TrainingLosses[^1] < quanta.TrainingLosses[0] - 1.0, string.Join(", ", quanta.TrainingLosses));
            var scored = model.Transform(test);
            var metrics = ml.MulticlassClassification.Evaluate(scored);
            Assert.True(metrics.MicroAccuracy >= 0.8, $"accuracy {metrics.MicroAccuracy:F3}");
            var scores = scored.GetColumn<float[]>("Score").ToList();
            Assert.All(scores, s => Assert.Equal(1.0, s.Sum(), 1e-4));

            ml.Model.Save(model, train.Schema, zip);
            var fresh = new MLContext().RegisterQuanTA();
            var loaded = fresh.Model.Load(zip, out var inputSchema);
            using var disposer = (IDisposable)loaded;
            var after = loaded.Transform(ToyData.View(fresh, ToyData.Classification(30, seed: 2))).GetColumn<float[]>("Score").ToList();
            for (int i = 0; i < scores.Count; i++) Assert.Equal(scores[i], after[i]);
        }
        finally
        {
            model.Dispose();
            File.Delete(zip);
        }
    }
}
