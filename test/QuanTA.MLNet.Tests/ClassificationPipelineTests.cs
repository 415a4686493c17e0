using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace QuanTA.MLNet.Tests;

/// <summary>One fitted classification pipeline shared by the tests of <see cref="ClassificationPipelineTests"/>.</summary>
public sealed class ClassificationFixture : IDisposable
{
    public readonly MLContext Ml = new(seed: 7);
    public readonly IDataView Train, Test;
    public readonly ITransformer Model;
    public IEnumerable<ITransformer> Steps => (IEnumerable<ITransformer>)Model;
    public readonly QuanTAFineTuneTransformer QuanTA;
    public readonly List<QuanTAProgress> Progress = [];
    public readonly List<string> Log = [];
    public readonly string LossCurve = Path.Combine(Path.GetTempPath(), $"quanta-loss-{Guid.NewGuid():N}.png");
    public readonly string Zip = Path.Combine(Path.GetTempPath(), $"quanta-cls-{Guid.NewGuid():N}.zip");

    public ClassificationFixture()
    {
        Ml.Log += (_, e) => { if (e.Kind >= ChannelMessageKind.Info && e.Source.Contains("QuanTA")) lock (Log) Log.Add(e.Message); };
        Train = ToyData.View(Ml, ToyData.Classification(48, seed: 1));
        Test = ToyData.View(Ml, ToyData.Classification(30, seed: 2));
        var options = new QuanTAFineTuneOptions
        {
            BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"),
            AxisLayout = [8, 4, 4],        // 128 = 8·4·4 (hidden size of the fixture)
            Epochs = 4, BatchSize = 8, LearningRate = 3e-3, MaxSequenceLength = 32,
            LossCurvePngPath = LossCurve,
            ValidationSet = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(Train).Transform(Test),
            Progress = new SyncProgress<QuanTAProgress>(Progress.Add),
        };
        var pipeline = Ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(Ml.MulticlassClassification.Trainers.QuanTAFineTune(options))
            .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        Model = pipeline.Fit(Train);
        QuanTA = Steps.OfType<QuanTAFineTuneTransformer>().Single();
        Ml.Model.Save(Model, Train.Schema, Zip);
    }

    public void Dispose()
    {
        QuanTA.Dispose();
        File.Delete(LossCurve);
        File.Delete(Zip);
    }
}

/// <summary>An IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

public class ClassificationPipelineTests(ClassificationFixture f) : IClassFixture<ClassificationFixture>
{
    [Fact]
    public void FindInReturnsTheQuanTAStepOfATransformerAChainOrANestedChain()
    {
        Assert.Same(f.QuanTA, QuanTAFineTuneTransformer.FindIn(f.QuanTA));
        Assert.Same(f.QuanTA, QuanTAFineTuneTransformer.FindIn(f.Model));
        var copy = f.Ml.Transforms.CopyColumns("TextCopy", "Text").Fit(f.Train);
        Assert.Same(f.QuanTA, QuanTAFineTuneTransformer.FindIn(new TransformerChain<ITransformer>(copy, f.Model)));   // appended pipelines
        Assert.Null(QuanTAFineTuneTransformer.FindIn(copy));
        Assert.Null(QuanTAFineTuneTransformer.FindIn(new TransformerChain<ITransformer>(copy)));
    }

    [Fact]
    public void TrainingLossFallsAndProgressIsReported()
    {
        var losses = f.QuanTA.TrainingLosses;
        Assert.Equal(4 * 6, losses.Count);   // 48 rows / 8 per batch × 4 epochs
        double first = losses.Take(3).Average(), last = losses.TakeLast(3).Average();
        Assert.True(last < 0.5 * first, $"loss fell only from {first:F3} to {last:F3}");
        var steps = f.Progress.Where(p => p.ValidationLoss is null).ToList();
        Assert.Equal(losses.Count, steps.Count);
        Assert.Equal(Enumerable.Range(1, losses.Count), steps.Select(p => p.Step));
        Assert.True(f.Progress[^1].LearningRate < f.Progress[0].LearningRate);   // linear decay
        Assert.Contains(f.Log, m => m.Contains("step 24/24") && m.Contains("loss") && m.Contains("tokens/s"));
        Assert.True(new FileInfo(f.LossCurve).Length > 1000);
    }

    [Fact]
    public void ValidationLossIsReportedEachEpochAndFalls()
    {
        var v = f.QuanTA.ValidationLosses;
        Assert.Equal(4, v.Count);
        Assert.True(v[^1] < 0.5 * v[0], string.Join(", ", v));
        Assert.Equal(v, f.Progress.Where(p => p.ValidationLoss is not null).Select(p => p.ValidationLoss!.Value));
        Assert.Contains(f.Log, m => m.Contains("validation loss"));
    }

    [Fact]
    public void EstimatorOutputSchemaFeedsDownstreamEstimators()
    {
        var options = new QuanTAFineTuneOptions { BaseModelPath = ToyData.Fixture("llama-tiny-seqcls") };
        var pipeline = f.Ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(f.Ml.Transforms.QuanTAFineTune(options))
            .Append(f.Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var shape = pipeline.GetOutputSchema(Internals.MlNetInternals.ShapeOf(f.Train.Schema));
        var score = shape.Single(c => c.Name == "Score");
        Assert.Equal(SchemaShape.Column.VectorKind.Vector, score.Kind);
        Assert.Equal(NumberDataViewType.Single, score.ItemType);
        Assert.Contains(score.Annotations, a => a.Name == "SlotNames");
        Assert.Contains(shape, c => c.Name == "PredictedLabel" && c.ItemType is TextDataViewType);   // MapKeyToValue accepted it
        // and the fitted model's real schema agrees
        var schema = f.Model.GetOutputSchema(f.Train.Schema);
        Assert.Equal(3, ((VectorDataViewType)schema["Score"].Type).Size);
        Assert.IsType<TextDataViewType>(schema["PredictedLabel"].Type);
    }

    [Fact]
    public void AccuracyIsWellAboveChanceAndEvaluateWorks()
    {
        var scored = f.Model.Transform(f.Test);
        var metrics = f.Ml.MulticlassClassification.Evaluate(scored);
        Assert.True(metrics.MicroAccuracy >= 0.8, $"accuracy {metrics.MicroAccuracy:F3} (chance 0.33)");
        Assert.True(metrics.LogLoss < 1.0, $"log-loss {metrics.LogLoss:F3}");
        var predicted = scored.GetColumn<string>("PredictedLabel").ToList();   // MapKeyToValue worked: original label strings
        Assert.All(predicted, p => Assert.Contains(p, ToyData.Classes.Select(c => c.Label)));
        var slotNames = default(VBuffer<ReadOnlyMemory<char>>);
        scored.Schema["Score"].GetSlotNames(ref slotNames);
        Assert.Equal(["fruit", "water", "sound"], slotNames.DenseValues().Select(s => s.ToString()).OrderBy(s => s == "fruit" ? 0 : s == "water" ? 1 : 2));
    }

    [Fact]
    public void PredictionEngineMatchesBatchedTransform()
    {
        var rows = ToyData.Classification(37, seed: 3);   // crosses the 16-row inference batches
        var batched = f.Model.Transform(ToyData.View(f.Ml, rows));
        var scores = batched.GetColumn<float[]>("Score").ToList();
        var labels = batched.GetColumn<string>("PredictedLabel").ToList();
        var engine = f.Ml.Model.CreatePredictionEngine<TextRow, ClassPrediction>(f.Model);
        for (int i = 0; i < rows.Count; i++)
        {
            var p = engine.Predict(rows[i]);
            Assert.Equal(labels[i], p.PredictedLabel);
            for (int k = 0; k < p.Score.Length; k++) Assert.Equal(scores[i][k], p.Score[k], 1e-5f);
        }
    }

    [Fact]
    public void TransformIsLazyAndSkippedRowsStayAligned()
    {
        var rows = ToyData.Classification(40, seed: 6);
        var all = f.Model.Transform(ToyData.View(f.Ml, rows)).GetColumn<float[]>("Score").ToList();

        // read the scores of every third row only: the look-ahead cursor must skip the rows in between
        var scored = f.Model.Transform(ToyData.View(f.Ml, rows));
        using (var cursor = scored.GetRowCursor(scored.Schema))
        {
            var score = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
            VBuffer<float> v = default;
            for (int i = 0; cursor.MoveNext(); i++)
            {
                if (i % 3 != 0) continue;
                score(ref v);
                Assert.Equal(all[i], v.DenseValues().ToArray());
            }
        }

        // nothing runs before a cursor reads an output column: bad rows only fail then, and pass-through columns never fail
        rows[5].Text = "";
        var lazy = f.Model.Transform(ToyData.View(f.Ml, rows));
        Assert.Equal(rows.Select(r => r.Text), lazy.GetColumn<string>("Text"));
        var ex = Assert.Throws<InvalidDataException>(() => lazy.GetColumn<float[]>("Score").ToList());
        Assert.Contains("'Text' is empty", ex.Message);
    }

    [Fact]
    public void SaveLoadInFreshContextGivesIdenticalPredictions()
    {
        var rows = ToyData.Classification(12, seed: 4);
        var before = f.Model.Transform(ToyData.View(f.Ml, rows)).GetColumn<float[]>("Score").ToList();

        var fresh = new MLContext(seed: 99).RegisterQuanTA();
        var loaded = fresh.Model.Load(f.Zip, out var schema);
        try
        {
            Assert.NotNull(schema.GetColumnOrNull("Text"));
            var after = loaded.Transform(ToyData.View(fresh, rows));
            var afterScores = after.GetColumn<float[]>("Score").ToList();
            for (int i = 0; i < rows.Count; i++) Assert.Equal(before[i], afterScores[i]);
            Assert.Equal(f.Model.Transform(ToyData.View(f.Ml, rows)).GetColumn<string>("PredictedLabel"),
                after.GetColumn<string>("PredictedLabel"));
            var engine = fresh.Model.CreatePredictionEngine<TextRow, ClassPrediction>(loaded);
            Assert.Equal(before[0], engine.Predict(rows[0]).Score);
        }
        finally { ((IEnumerable<ITransformer>)loaded).OfType<QuanTAFineTuneTransformer>().Single().Dispose(); }
    }

    [Fact]
    public void LoadWithoutRegistrationFailsClearly()
    {
        var ex = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(f.Zip, out _));
        // ML.NET cannot find the loader: that is why RegisterQuanTA()/LoadWithQuanTA exist
        Assert.Contains(Flatten(ex), e => e.Message.Contains("Couldn't load model"));
        var ml = new MLContext();
        var loaded = ml.Model.LoadWithQuanTA(ml, f.Zip, out _);
        ((IEnumerable<ITransformer>)loaded).OfType<QuanTAFineTuneTransformer>().Single().Dispose();
    }

    static IEnumerable<Exception> Flatten(Exception? e)
    {
        for (; e is not null; e = e.InnerException) yield return e;
    }

    [Fact]
    public void MergedOutputsEqualUnmergedOutputs()
    {
        var rows = ToyData.View(f.Ml, ToyData.Classification(8, seed: 5));
        Assert.True(f.QuanTA.IsMerged);
        var merged = f.QuanTA.Transform(f.Steps.First().Transform(rows)).GetColumn<float[]>("Score").ToList();
        f.QuanTA.SetMerged(false);
        try
        {
            var unmerged = f.QuanTA.Transform(f.Steps.First().Transform(rows)).GetColumn<float[]>("Score").ToList();
            for (int i = 0; i < merged.Count; i++)
                for (int k = 0; k < merged[i].Length; k++) Assert.Equal(merged[i][k], unmerged[i][k], 1e-5f);
        }
        finally { f.QuanTA.SetMerged(true); }
    }

    [Fact]
    public void AdapterIsOnQueryAndValueProjectionsOnly()
    {
        Assert.Equal(4, f.QuanTA.AdaptedModules.Count);   // 2 layers × (q_proj, v_proj)
        Assert.All(f.QuanTA.AdaptedModules, m => Assert.True(m.EndsWith("q_proj") || m.EndsWith("v_proj"), m));
        Assert.True(f.QuanTA.TrainableParameterCount > 0);
    }

    [Fact]
    public void ExportedAdapterHasSafetensorsAndJson()
    {
        var dir = Directory.CreateTempSubdirectory("quanta-export");
        try
        {
            var path = Path.Combine(dir.FullName, "adapter.safetensors");
            f.QuanTA.ExportAdapter(path);
            Assert.True(File.Exists(path));
            Assert.Contains("\"quanta\"", File.ReadAllText(Path.ChangeExtension(path, ".json")));
            Assert.True(File.Exists(Path.Combine(dir.FullName, "adapter.head.safetensors")));
        }
        finally { dir.Delete(true); }
    }
}
