using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Tests;

/// <summary>Head-mode classification on a causal-LM checkpoint (no score head): a new head is initialized and trained with
/// the adapter, as transformers' AutoModelForSequenceClassification does, and it survives Save/Load.</summary>
public class NewHeadOnCausalBaseTests
{
    [Fact]
    public void ACausalBaseGetsANewTrainedHeadThatRoundTrips()
    {
        var ml = new MLContext(seed: 2);
        var messages = new List<string>();
        ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var train = ToyData.View(ml, ToyData.Classification(30, 1));
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(new QuanTAFineTuneOptions
            {
                BaseModelPath = ToyData.Fixture("llama-tiny"), AxisLayout = [8, 4, 4],   // LlamaForCausalLM: no score head
                Epochs = 4, BatchSize = 6, LearningRate = 1e-2, MaxSequenceLength = 32,
            }))
            .Fit(train);
        Assert.Contains(messages, m => m.Contains("no classification head"));
        var quanta = model.LastTransformer;
        Assert.True(quanta.TrainingLosses[^1] < quanta.TrainingLosses[0], string.Join(", ", quanta.TrainingLosses));

        var test = ToyData.View(ml, ToyData.Classification(30, 2));
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        Assert.True(metrics.MicroAccuracy > 0.6, $"accuracy {metrics.MicroAccuracy} (chance 0.33)");

        var zip = Path.Combine(Path.GetTempPath(), $"quanta-newhead-{Guid.NewGuid():N}.zip");
        try
        {
            var before = model.Transform(test).GetColumn<float[]>("Score").ToList();
            ml.Model.Save(model, train.Schema, zip);
            var fresh = new MLContext().RegisterQuanTA();
            var loaded = fresh.Model.Load(zip, out _);
            using var disposer = (IDisposable)loaded;
            Assert.Equal(before, loaded.Transform(ToyData.View(fresh, ToyData.Classification(30, 2))).GetColumn<float[]>("Score"));
        }
        finally { quanta.Dispose(); File.Delete(zip); }
    }
}
