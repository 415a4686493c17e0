using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.MLNet.Internals;

namespace QuanTA.MLNet.Tests;

public class MlNetInternalsTests
{
    [Fact]
    public void SelfTestFindsEveryMember() => QuanTACatalog.CheckMlNetCompatibility();

    [Fact]
    public void VersionInfoNeedsAnEightCharSignature() =>
        Assert.Throws<ArgumentException>(() => MlNetInternals.VersionInfo("SHORT", 1, 1, 1, "x", typeof(MlNetInternalsTests).Assembly));

    [Fact]
    public void EnvironmentIsReachableFromBothCatalogs()
    {
        var ml = new MLContext(seed: 5) { FallbackToCpu = false, GpuDeviceId = 2 };
        var env = MlNetInternals.GetEnvironment(ml.Transforms);
        Assert.Same(ml.ComponentCatalog, env.ComponentCatalog);
        Assert.Same(ml.ComponentCatalog, MlNetInternals.GetEnvironment(ml.MulticlassClassification.Trainers).ComponentCatalog);
        Assert.Equal(5, MlNetInternals.Seed(env));
        Assert.Equal(2, MlNetInternals.GpuDeviceId(env));
        Assert.False(MlNetInternals.FallbackToCpu(env));
        Assert.Throws<ArgumentException>(() => MlNetInternals.GetEnvironment("not a catalog"));
    }

    [Fact]
    public void LoaderRegistrationIsPerContextAndIdempotent()
    {
        var a = new MLContext();
        var b = new MLContext();
        Assert.False(MlNetInternals.IsLoaderRegistered(a.ComponentCatalog, QuanTAFineTuneTransformer.LoaderSignature));
        a.RegisterQuanTA().RegisterQuanTA();
        Assert.True(MlNetInternals.IsLoaderRegistered(a.ComponentCatalog, QuanTAFineTuneTransformer.LoaderSignature));
        Assert.False(MlNetInternals.IsLoaderRegistered(b.ComponentCatalog, QuanTAFineTuneTransformer.LoaderSignature));
    }

    [Fact]
    public void SchemaShapeColumnsCarryKeyAndAnnotations()
    {
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable([new TextRow { Text = "a", Label = "x" }]);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        var shape = MlNetInternals.ShapeOf(keyed.Schema);
        var label = shape.Single(c => c.Name == "Label");
        Assert.True(label.IsKey);
        Assert.Equal(NumberDataViewType.UInt32, label.ItemType);
        Assert.Contains(label.Annotations, a => a.Name == "KeyValues");
        // ML.NET's own estimators accept our shapes
        var outShape = ml.Transforms.Conversion.MapKeyToValue("Label").GetOutputSchema(shape);
        Assert.Contains(outShape, c => c.Name == "Label" && c.ItemType is TextDataViewType);
    }
}
