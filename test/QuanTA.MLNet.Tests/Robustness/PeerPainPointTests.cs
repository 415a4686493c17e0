using System.Runtime.InteropServices;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Core.Training;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary>Issue 17 item 7: ML.NET users' pain points as named tests — loading a saved model while the fitted one is alive and
/// after it is disposed (ML.NET #6941: "Tensor invalid -- empty handle"), and an out-of-memory step reached through Fit.</summary>
public class PeerPainPointTests
{
    static float[][] Scores(MLContext ml, ITransformer model, List<TextRow> rows) =>
        model.Transform(ToyData.View(ml, rows)).GetColumn<float[]>("Score").ToArray();

    static void DisposeQuanTA(ITransformer model) =>
        ((IEnumerable<ITransformer>)model).OfType<QuanTAFineTuneTransformer>().Single().Dispose();

    [Fact]
    public void ModelLoadWhileTheFittedModelIsAliveAndAfterItIsDisposed_MlNet6941()
    {
        var dir = RobustFit.TempDir();
        try
        {
            var ml = new MLContext(seed: 3).RegisterQuanTA();
            var train = RobustFit.Train(ml);
            var o = RobustFit.Options(false);
            o.Epochs = 1;
            ITransformer fitted = ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(ml.MulticlassClassification.Trainers.QuanTAFineTune(o)).Fit(train);
            var zip = Path.Combine(dir, "model.zip");
            ml.Model.Save(fitted, train.Schema, zip);
            var rows = ToyData.Classification(10, seed: 4);
            var expected = Scores(ml, fitted, rows);

            // 1. the fitted model is still alive (same context, and a fresh one)
            var whileAlive = ml.Model.Load(zip, out _);
            var fresh = new MLContext(seed: 99).RegisterQuanTA();
            var whileAliveFresh = fresh.Model.Load(zip, out _);
            Assert.Equal(expected, Scores(ml, whileAlive, rows));
            Assert.Equal(expected, Scores(fresh, whileAliveFresh, rows));
            Assert.Equal(expected, Scores(ml, fitted, rows));          // loading did not disturb the fitted model

            // 2. the fitted model is disposed: the loaded ones keep working, and a new load works
            DisposeQuanTA(fitted);
            Assert.Equal(expected, Scores(ml, whileAlive, rows));
            var afterDispose = ml.Model.Load(zip, out _);
            Assert.Equal(expected, Scores(ml, afterDispose, rows));

            // 3. every loaded copy disposed, then loaded once more
            DisposeQuanTA(whileAlive); DisposeQuanTA(whileAliveFresh); DisposeQuanTA(afterDispose);
            var last = new MLContext(seed: 5).RegisterQuanTA();
            var again = last.Model.Load(zip, out _);
            try { Assert.Equal(expected, Scores(last, again, rows)); }
            finally { DisposeQuanTA(again); }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData(false)]   // per-layer path (CPU default): the hint points to the stacked-recompute and layerwise paths
    [InlineData(true)]    // stacked path on CPU: the same
    public void SimulatedOutOfMemoryThroughFitNamesTheOptionsAndFlagsToChange(bool fused)
    {
        var o = RobustFit.Options(fused);
        // what libtorch's CUDA caching allocator throws, as TorchSharp surfaces it, in the 3rd optimizer step
        TrainingFaults.BeforeMicroBatch = step => { if (step == 3) throw new ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB"); };
        OutOfMemoryOnDeviceException e;
        try { e = Assert.Throws<OutOfMemoryOnDeviceException>(() => RobustFit.Fit(o)); }
        finally { TrainingFaults.BeforeMicroBatch = null; }
        Assert.Equal(3, e.Step);
        Assert.Contains("during optimizer step 3 (batch size 4, gradient accumulation 1)", e.Message);
        Assert.Contains("Lower the batch size (e.g. 2) and raise gradient accumulation (e.g. 2)", e.Message);
        Assert.Contains("QuanTAFineTuneOptions.BatchSize (CLI: --batch-size, now 4)", e.Message);
        Assert.Contains("GradientAccumulationSteps (CLI: --grad-accum, now 1)", e.Message);
        Assert.Contains("MaxSequenceLength (CLI: --max-seq-len, now 32)", e.Message);
        Assert.Contains("TrainingPath = StackedRecompute (CLI: --training-path stacked-recompute)", e.Message);
        Assert.Contains("or Layerwise (CLI: --training-path layerwise)", e.Message);
        Assert.Contains("CUDA out of memory", e.InnerException!.Message);
    }
}
