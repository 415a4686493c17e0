using Microsoft.ML;
using Microsoft.ML.Data;

namespace QuanTA.MLNet.Tests;

public class BadInputTests
{
    static readonly MLContext Ml = new(seed: 1);

    static QuanTAFineTuneOptions Options(string fixture = "llama-tiny-seqcls") => new()
    {
        BaseModelPath = ToyData.Fixture(fixture), AxisLayout = [8, 4, 4], Epochs = 1, BatchSize = 4, MaxSequenceLength = 32,
    };

    static IDataView Keyed(IEnumerable<TextRow> rows)
    {
        var data = ToyData.View(Ml, rows);
        return Ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
    }

    static IDataView SmallData() => Keyed(ToyData.Classification(6, seed: 1));

    [Fact]
    public void MissingTextColumnIsNamed()
    {
        var o = Options(); o.TextColumnName = "Sentence";
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(SmallData()));
        Assert.Contains("'Sentence'", ex.Message);
        Assert.Contains("not found", ex.Message);
        var ex2 = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Transforms.QuanTAFineTune(o).GetOutputSchema(
            Ml.Transforms.Conversion.MapValueToKey("Label").GetOutputSchema(SchemaShapeOf(ToyData.View(Ml, ToyData.Classification(3, 1))))));
        Assert.Contains("'Sentence'", ex2.Message);
    }

    static SchemaShape SchemaShapeOf(IDataView data) => Internals.MlNetInternals.ShapeOf(data.Schema);

    [Fact]
    public void MistypedColumnsAreNamedWithTheExpectedType()
    {
        var raw = ToyData.View(Ml, ToyData.Classification(6, seed: 1));   // Label is a string, not a key
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Transforms.QuanTAFineTune(Options()).Fit(raw));
        Assert.Contains("'Label'", ex.Message);
        Assert.Contains("MapValueToKey", ex.Message);

        var numeric = Ml.Data.LoadFromEnumerable(new[] { new { Text = 1f, Label = 1u } }.Select(r => new NumRow { Text = r.Text }));
        var ex2 = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Transforms.QuanTAFineTune(Options()).Fit(numeric));
        Assert.Contains("'Text'", ex2.Message);
        Assert.Contains("Text (string)", ex2.Message);
    }

    public sealed class NumRow { public float Text { get; set; } }

    [Fact]
    public void EmptyTextIsRejectedNamingTheRow()
    {
        var rows = ToyData.Classification(6, seed: 1);
        rows[2].Text = "  ";
        var ex = Assert.Throws<InvalidDataException>(() => Ml.Transforms.QuanTAFineTune(Options()).Fit(Keyed(rows)));
        Assert.Contains("Row 2", ex.Message);
        Assert.Contains("empty", ex.Message);
    }

    [Fact]
    public void OverlongInputTruncatesWithWarningOrThrows()
    {
        var rows = ToyData.Classification(4, seed: 1);
        rows[1].Text = string.Join(' ', Enumerable.Repeat("garden window", 40));
        var o = Options(); o.Truncation = TruncationPolicy.Error;
        var ex = Assert.Throws<InvalidDataException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(Keyed(rows)));
        Assert.Contains("Row 1", ex.Message);
        Assert.Contains("MaxSequenceLength = 32", ex.Message);

        var warnings = new List<string>();
        var ml = new MLContext(seed: 1);
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
        var data = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ToyData.View(ml, rows)).Transform(ToyData.View(ml, rows));
        using var model = ml.Transforms.QuanTAFineTune(Options()).Fit(data);
        Assert.Contains(warnings, w => w.Contains("1 rows were longer than MaxSequenceLength = 32"));
    }

    [Fact]
    public void UnknownLabelAtPredictionStillPredictsAKnownClass()
    {
        var train = ToyData.View(Ml, ToyData.Classification(6, seed: 1));
        var pipeline = Ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(Ml.Transforms.QuanTAFineTune(Options()))
            .Append(Ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var model = pipeline.Fit(train);
        try
        {
            var unseen = ToyData.View(Ml, [new TextRow { Text = "apple garden", Label = "never-seen" }]);
            var predicted = model.Transform(unseen).GetColumn<string>("PredictedLabel").Single();
            Assert.Contains(predicted, ToyData.Classes.Select(c => c.Label));
            // ... and a training row whose label is missing from the key dictionary is refused, naming the row
            var keyed = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(
                ToyData.View(Ml, ToyData.Classification(3, seed: 2).Append(new TextRow { Text = "apple", Label = "never-seen" })));
            var ex = Assert.Throws<InvalidDataException>(() => Ml.Transforms.QuanTAFineTune(Options()).Fit(keyed));
            Assert.Contains("Row 3", ex.Message);
            Assert.Contains("no value", ex.Message);
        }
        finally { model.OfType<QuanTAFineTuneTransformer>().Single().Dispose(); }
    }

    [Fact]
    public void CancellationStopsFitAndDisposeFreesTheModel()
    {
        var o = Options(); o.CancellationToken = new CancellationToken(canceled: true);
        Assert.ThrowsAny<OperationCanceledException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(SmallData()));

        var data = ToyData.View(Ml, ToyData.Classification(4, seed: 1));
        var chain = Ml.Transforms.Conversion.MapValueToKey("Label").Append(Ml.Transforms.QuanTAFineTune(Options())).Fit(data);
        var quanta = chain.LastTransformer;
        chain.Dispose();   // TransformerChain disposes its steps
        Assert.Throws<ObjectDisposedException>(() => quanta.Transform(data));
    }

    [Fact]
    public void LayoutThatCannotCoverATargetIsNamed()
    {
        var o = Options(); o.AxisLayout = [4, 4, 4];   // 64 < 128
        var ex = Assert.Throws<ArgumentException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(SmallData()));
        Assert.Contains("q_proj", ex.Message);
        Assert.Contains("AxisLayout", ex.Message);
    }

    [Fact]
    public void UnknownTargetModuleIsNamed()
    {
        var o = Options(); o.TargetModules = ["q_proj", "query"];
        var ex = Assert.Throws<ArgumentException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(SmallData()));
        Assert.Contains("'query'", ex.Message);
        Assert.Contains("v_proj", ex.Message);   // the available names are listed
    }

    [Fact]
    public void MissingBaseFolderIsNamed()
    {
        var o = Options(); o.BaseModelPath = "/nonexistent/model";
        var ex = Assert.Throws<DirectoryNotFoundException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(SmallData()));
        Assert.Contains("/nonexistent/model", ex.Message);
    }

    [Fact]
    public void BadOptionsAreNamed()
    {
        Assert.Contains("BaseModelPath", Assert.Throws<ArgumentException>(() => Ml.Transforms.QuanTAFineTune(new QuanTAFineTuneOptions())).Message);
        var o = Options(); o.LearningRate = -1;
        Assert.Contains("LearningRate", Assert.Throws<ArgumentException>(() => Ml.Transforms.QuanTAFineTune(o)).Message);
        o = Options(); o.Pairs = [(0, 3)];
        Assert.Contains("Pairs", Assert.Throws<ArgumentException>(() => Ml.Transforms.QuanTAFineTune(o)).Message);
        o = Options(); o.Task = QuanTATask.TextGeneration;
        Assert.Throws<ArgumentException>(() => Ml.MulticlassClassification.Trainers.QuanTAFineTune(o));
    }

    [Fact]
    public void LoadChecksTheBaseModel()
    {
        // copy the base model, fine-tune on the copy, then remove / alter it
        var dir = Directory.CreateTempSubdirectory("quanta-base");
        var zip = Path.Combine(dir.FullName, "model.zip");
        try
        {
            var baseDir = Path.Combine(dir.FullName, "base");
            Directory.CreateDirectory(baseDir);
            foreach (var file in Directory.GetFiles(ToyData.Fixture("llama-tiny-seqcls")))
                File.Copy(file, Path.Combine(baseDir, Path.GetFileName(file)));
            var o = Options(); o.BaseModelPath = baseDir;
            var data = SmallData();
            using (var model = Ml.Transforms.QuanTAFineTune(o).Fit(data)) Ml.Model.Save(model, data.Schema, zip);

            // altered weights: fingerprint mismatch
            using (var s = File.Open(Path.Combine(baseDir, "model.safetensors"), FileMode.Open))
            {
                s.Seek(-4, SeekOrigin.End);
                s.WriteByte(0x3f);
            }
            var ml = new MLContext();
            var ex = Assert.Throws<InvalidDataException>(() => ml.Model.LoadWithQuanTA(ml, zip, out _));
            Assert.Contains("not the one this QuanTA model was fine-tuned from", ex.Message);
            // plain Model.Load: ML.NET wraps the same exception
            var wrapped = Assert.ThrowsAny<Exception>(() => new MLContext().RegisterQuanTA().Model.Load(zip, out _));
            Assert.Contains(Chain(wrapped), e => e is InvalidDataException && e.Message.Contains("fine-tuned from"));

            // missing folder
            Directory.Delete(baseDir, true);
            var ex2 = Assert.Throws<DirectoryNotFoundException>(() => ml.Model.LoadWithQuanTA(ml, zip, out _));
            Assert.Contains(baseDir, ex2.Message);
            Assert.Contains("RegisterQuanTA(baseModelPath", ex2.Message);

            // the original fixture is a different copy of the same files: accepted through the override
            using var loaded = (QuanTAFineTuneTransformer)new MLContext().RegisterQuanTA(ToyData.Fixture("llama-tiny-seqcls")).Model.Load(zip, out _);
            Assert.Equal(Path.GetFullPath(ToyData.Fixture("llama-tiny-seqcls")), loaded.Options.BaseModelPath);
            Assert.Equal(3, loaded.ClassNames.Count);
        }
        finally { dir.Delete(true); }
    }

    static IEnumerable<Exception> Chain(Exception? e)
    {
        for (; e is not null; e = e.InnerException) yield return e;
    }
}
