using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Adapters;
using QuanTA.Core.Quantization;

namespace QuanTA.MLNet.Tests;

/// <summary>QuanTAFineTuneOptions.BaseQuantization through Fit, save, load and predict.</summary>
public class QuantizedBaseTests
{
    static AdaptableLinear[] QuantizedLayers(QuanTAFineTuneTransformer t) =>
        t.Model.Module.modules().OfType<AdaptableLinear>().Where(l => l.QuantizedWeight is not null).ToArray();

    [Theory]
    [InlineData(BaseQuantization.NF4)]
    [InlineData(BaseQuantization.Int8)]
    public void AQuantizedClassifierSavesAndLoadsToBitIdenticalPredictions(BaseQuantization kind)
    {
        var ml = new MLContext(seed: 1).RegisterQuanTA();
        var train = ToyData.View(ml, ToyData.Classification(24, seed: 1));
        var options = new QuanTAFineTuneOptions
        {
            BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), AxisLayout = [8, 4, 4], BaseQuantization = kind,
            Epochs = 1, BatchSize = 8, LearningRate = 3e-3, MaxSequenceLength = 32,
        };
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(options)).Fit(train);
        var zip = Path.Combine(Path.GetTempPath(), $"quanta-{kind}-{Guid.NewGuid():N}.zip");
        var step = ((IEnumerable<ITransformer>)model).OfType<QuanTAFineTuneTransformer>().Single();
        ITransformer? loaded = null;
        try
        {
            Assert.Equal(14, QuantizedLayers(step).Length);                             // 2 layers × 7 projections
            Assert.All(QuantizedLayers(step), l => Assert.Equal(kind, l.QuantizedWeight!.Kind));
            Assert.Equal(0, step.Model.Module.modules().OfType<AdaptableLinear>().Count(l => l.IsMerged));   // adapters run unmerged
            var rows = ToyData.Classification(10, seed: 4);
            var before = model.Transform(ToyData.View(ml, rows)).GetColumn<float[]>("Score").ToList();
            ml.Model.Save(model, train.Schema, zip);

            var fresh = new MLContext(seed: 5).RegisterQuanTA();
            loaded = fresh.Model.Load(zip, out _);
            var loadedStep = ((IEnumerable<ITransformer>)loaded).OfType<QuanTAFineTuneTransformer>().Single();
            Assert.Equal(kind, loadedStep.Options.BaseQuantization);                    // recorded in the saved model
            Assert.Equal(14, QuantizedLayers(loadedStep).Length);                       // and the base quantized again at load
            var after = loaded.Transform(ToyData.View(fresh, rows)).GetColumn<float[]>("Score").ToList();
            for (int i = 0; i < rows.Count; i++) Assert.Equal(before[i], after[i]);     // bit for bit
        }
        finally
        {
            step.Dispose();
            if (loaded is not null) ((IEnumerable<ITransformer>)loaded).OfType<QuanTAFineTuneTransformer>().Single().Dispose();
            File.Delete(zip);
        }
    }

    [Fact]
    public void TheBitsAndBytesFixtureTrainsAndGeneratesWithItsNF4Weights()
    {
        var ml = new MLContext(seed: 1).RegisterQuanTA();
        var train = ToyData.View(ml, ToyData.Generation(8));
        var options = new QuanTAFineTuneOptions
        {
            Task = QuanTATask.TextGeneration, BaseModelPath = ToyData.Fixture("llama-tiny-bnb-nf4"), AxisLayout = [8, 4, 4],
            BaseQuantization = BaseQuantization.NF4, Epochs = 1, BatchSize = 4, LearningRate = 3e-3, MaxSequenceLength = 32, MaxNewTokens = 4,
        };
        using var t = ml.Transforms.QuanTAFineTune(options).Fit(train);
        Assert.Equal(14, QuantizedLayers(t).Length);
        Assert.All(QuantizedLayers(t), l => Assert.True(((NF4Weight)l.QuantizedWeight!).DoubleQuantized));
        Assert.True(t.TrainingLosses.All(double.IsFinite));
        var generated = t.Transform(ToyData.View(ml, ToyData.Generation(2))).GetColumn<string>("GeneratedText").ToList();
        Assert.Equal(2, generated.Count);
    }
}
