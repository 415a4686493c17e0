using Microsoft.ML.Data;
using Microsoft.ML;

namespace QuanTA.MLNet.Tests;

public sealed class PairRow
{
    public string Premise { get; set; } = "";
    public string Hypothesis { get; set; } = "";
    public string Label { get; set; } = "";
}

public sealed class PairPrediction
{
    public float[] Score { get; set; } = [];
}

/// <summary>LoRA through the same estimator, sentence pairs, accumulation/warm-up/cosine options: fit, save, load, predict.</summary>
public class AdapterAndColumnOptionsTests
{
    static List<PairRow> Pairs(int n, int seed) => ToyData.Classification(n, seed)
        .Select((r, i) => new PairRow { Premise = $"row {i}", Hypothesis = r.Text, Label = r.Label }).ToList();

    [Fact]
    public void LoRAOnSentencePairsRoundTripsThroughSaveAndLoad()
    {
        var ml = new MLContext(seed: 5);
        var train = ToyData.View(ml, Pairs(24, 1));
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(new QuanTAFineTuneOptions
            {
                BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"),
                TextColumnName = "Premise", SecondTextColumnName = "Hypothesis",
                Adapter = AdapterMethod.LoRA, LoRARank = 4, LoRAAlpha = 8,
                Epochs = 2, BatchSize = 4, GradientAccumulationSteps = 2, WarmupRatio = 0.2,
                Schedule = Core.Training.LearningRateSchedule.Cosine, LearningRate = 3e-3, MaxSequenceLength = 32,
            }))
            .Fit(train);
        var zip = Path.Combine(Path.GetTempPath(), $"quanta-lora-{Guid.NewGuid():N}.zip");
        try
        {
            var quanta = model.LastTransformer;
            Assert.Equal(2 * 3, quanta.TrainingLosses.Count);   // 6 micro-batches per epoch / 2 accumulated
            Assert.Equal(AdapterMethod.LoRA, quanta.Options.Adapter);
            // LoRA r=4 on q (128→128) and v (128→64) in 2 layers, plus the 5×128 head
            Assert.Equal(2 * (4 * (128 + 128) + 4 * (128 + 64)) + 5 * 128, quanta.TrainableParameterCount);

            var rows = Pairs(6, 2);
            var before = model.Transform(ToyData.View(ml, rows)).GetColumn<float[]>("Score").ToList();
            var engine = ml.Model.CreatePredictionEngine<PairRow, PairPrediction>(model);
            for (int i = 0; i < rows.Count; i++) Assert.Equal(before[i], engine.Predict(rows[i]).Score, new FloatComparer(1e-5f));

            ml.Model.Save(model, train.Schema, zip);
            var fresh = new MLContext().RegisterQuanTA();
            var loaded = fresh.Model.Load(zip, out _);
            using var disposer = (IDisposable)loaded;
            Assert.Equal(before, loaded.Transform(ToyData.View(fresh, rows)).GetColumn<float[]>("Score"));

            // the second text column is required at prediction time too
            var missing = fresh.Data.LoadFromEnumerable(new[] { new TextRow { Text = "x" } });
            var ex = Assert.Throws<ArgumentOutOfRangeException>(() => loaded.Transform(missing));
            Assert.Contains("'Premise'", ex.Message);
        }
        finally
        {
            model.Dispose();
            File.Delete(zip);
        }
    }

    sealed class FloatComparer(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float x, float y) => Math.Abs(x - y) <= tolerance;
        public int GetHashCode(float obj) => 0;
    }
}
