using System.Collections.Concurrent;
using Microsoft.ML;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary>
/// One fitted transformer used from many threads at once — a PredictionEngine per thread, a shared pool of engines
/// (PredictionEnginePool style) and parallel Transform calls — gives the answers a single thread gets. Bounded: 8 threads × 20
/// predictions each.
/// </summary>
public class ConcurrencyTests : IClassFixture<ConcurrencyTests.Fitted>
{
    const int Threads = 8, PerThread = 20;

    public sealed class Fitted : IDisposable
    {
        public MLContext Ml { get; } = new(seed: 3);
        public ITransformer Model { get; }
        public List<TextRow> Rows { get; } = ToyData.Classification(PerThread, 11);
        public List<ClassPrediction> Expected { get; }

        public Fitted()
        {
            var o = RobustFit.Options(false);
            o.Epochs = 1;
            var train = RobustFit.Train(Ml);
            Model = Ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(Ml.MulticlassClassification.Trainers.QuanTAFineTune(o))
                .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
                .Fit(train);
            var engine = Ml.Model.CreatePredictionEngine<TextRow, ClassPrediction>(Model);
            Expected = Rows.Select(r => Clone(engine.Predict(r))).ToList();
        }

        public void Dispose() => ((IEnumerable<ITransformer>)Model).OfType<QuanTAFineTuneTransformer>().Single().Dispose();
    }

    readonly Fitted _f;
    public ConcurrencyTests(Fitted f) => _f = f;

    static ClassPrediction Clone(ClassPrediction p) => new() { Score = [.. p.Score], PredictedLabel = p.PredictedLabel };

    void AssertSame(ClassPrediction expected, ClassPrediction actual, string where)
    {
        Assert.Equal(expected.PredictedLabel, actual.PredictedLabel);
        Assert.Equal(expected.Score.Length, actual.Score.Length);
        for (int c = 0; c < expected.Score.Length; c++)
            Assert.True(Math.Abs(expected.Score[c] - actual.Score[c]) <= 1e-6f, $"{where} class {c}: {expected.Score[c]} vs {actual.Score[c]}");
    }

    [Fact]
    public void PredictionEnginePerThreadMatchesOneThread()
    {
        var errors = new ConcurrentQueue<Exception>();
        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            try
            {
                var engine = _f.Ml.Model.CreatePredictionEngine<TextRow, ClassPrediction>(_f.Model);
                var order = Enumerable.Range(0, PerThread).OrderBy(i => (i * 7 + t * 3) % PerThread).ToList();   // different order per thread
                foreach (var i in order) AssertSame(_f.Expected[i], engine.Predict(_f.Rows[i]), $"thread {t} row {i}");
            }
            catch (Exception e) { errors.Enqueue(e); }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Empty(errors);
    }

    [Fact]
    public void SharedEnginePoolMatchesOneThread()
    {
        var pool = new ConcurrentBag<PredictionEngine<TextRow, ClassPrediction>>();
        Parallel.For(0, Threads * PerThread, new ParallelOptions { MaxDegreeOfParallelism = Threads }, k =>
        {
            if (!pool.TryTake(out var engine)) engine = _f.Ml.Model.CreatePredictionEngine<TextRow, ClassPrediction>(_f.Model);
            try { AssertSame(_f.Expected[k % PerThread], engine.Predict(_f.Rows[k % PerThread]), $"request {k}"); }
            finally { pool.Add(engine); }
        });
        Assert.InRange(pool.Count, 1, Threads);
    }

    [Fact]
    public void ParallelTransformCallsMatchOneThread()
    {
        var view = ToyData.View(_f.Ml, _f.Rows);
        var single = _f.Ml.Data.CreateEnumerable<ClassPrediction>(_f.Model.Transform(view), reuseRowObject: false).ToList();
        for (int i = 0; i < PerThread; i++) AssertSame(_f.Expected[i], single[i], $"batched row {i}");
        var results = new List<ClassPrediction>[Threads];
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, t =>
            results[t] = _f.Ml.Data.CreateEnumerable<ClassPrediction>(_f.Model.Transform(view), reuseRowObject: false).ToList());
        for (int t = 0; t < Threads; t++)
            for (int i = 0; i < PerThread; i++) AssertSame(single[i], results[t][i], $"transform {t} row {i}");
    }
}

/// <summary>Greedy generation from many threads (an engine per thread) gives the single-thread texts.</summary>
public class GenerationConcurrencyTests
{
    [Fact]
    public void GenerationFromManyThreadsMatchesOneThread()
    {
        var ml = new MLContext(seed: 3);
        using var model = ml.Transforms.QuanTAFineTune(new QuanTAFineTuneOptions
        {
            Task = QuanTATask.TextGeneration, BaseModelPath = ToyData.Fixture("llama-tiny"), AxisLayout = [8, 4, 4],
            Epochs = 2, BatchSize = 8, LearningRate = 1e-2, MaxSequenceLength = 32, MaxNewTokens = 4, Seed = 5,
        }).Fit(ToyData.View(ml, ToyData.Generation(16)));
        var prompts = ToyData.Generation(8);
        var one = ml.Model.CreatePredictionEngine<PromptRow, GenerationPrediction>(model);
        var expected = prompts.Select(p => one.Predict(p).GeneratedText).ToList();
        var errors = new ConcurrentQueue<string>();
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, t =>
        {
            var engine = ml.Model.CreatePredictionEngine<PromptRow, GenerationPrediction>(model);
            for (int k = 0; k < 5; k++)
            {
                int i = (t + k) % prompts.Count;
                var got = engine.Predict(prompts[i]).GeneratedText;
                if (got != expected[i]) errors.Enqueue($"thread {t} prompt {i}: '{got}' vs '{expected[i]}'");
            }
        });
        Assert.Empty(errors);
    }
}
