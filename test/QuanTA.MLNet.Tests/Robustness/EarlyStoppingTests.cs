using Microsoft.ML;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary>Validation during Fit (loss or accuracy) and early stopping with patience.</summary>
public class EarlyStoppingTests
{
    static (QuanTAFineTuneTransformer Model, List<QuanTAProgress> Reports) FitWithValidation(Action<QuanTAFineTuneOptions> set)
    {
        var ml = new MLContext(seed: 3);
        var train = RobustFit.Train(ml);
        var key = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var o = RobustFit.Options(false);
        o.ValidationSet = key.Transform(ToyData.View(ml, ToyData.Classification(9, 7)));
        var reports = new List<QuanTAProgress>();
        o.Progress = new RobustFit.SyncProgress(reports.Add);
        set(o);
        return (RobustFit.Fit(o, train), reports);
    }

    [Fact]
    public void EarlyStoppingStopsAfterPatienceValidationsWithoutImprovement()
    {
        // An improvement must beat the best by 1e6, so only the first validation counts: stop after 1 + patience validations.
        var (model, _) = FitWithValidation(o => { o.ValidateEverySteps = 1; o.EarlyStoppingPatience = 2; o.EarlyStoppingThreshold = 1e6; });
        using var _ = model;
        Assert.Equal(3, model.TrainingLosses.Count);
        Assert.Equal(3, model.ValidationLosses.Count);
        Assert.All(model.ValidationLosses, v => Assert.True(double.IsFinite(v) && v > 0));
    }

    [Fact]
    public void AccuracyValidationIsAFractionOfTheValidationRows()
    {
        // The first validation always counts as an improvement, so with two epochs and patience 1 all 12 steps run.
        var (model, reports) = FitWithValidation(o => { o.EarlyStoppingPatience = 1; o.ValidationMetric = ValidationMetric.Accuracy; });
        using var _ = model;
        Assert.Equal(RobustFit.TotalSteps, model.TrainingLosses.Count);
        Assert.Equal(2, model.ValidationLosses.Count);
        Assert.All(model.ValidationLosses, a => Assert.True(a >= 0 && a <= 1 && Math.Abs(a * 9 - Math.Round(a * 9)) < 1e-9, $"accuracy {a}"));
        Assert.Equal(2, reports.Count(r => r.ValidationLoss is not null));
    }

    [Fact]
    public void EarlyStoppingNeedsAValidationSet()
    {
        var o = RobustFit.Options(false);
        o.EarlyStoppingPatience = 2;
        var e = Assert.Throws<ArgumentException>(() => new MLContext().Transforms.QuanTAFineTune(o));
        Assert.Contains("EarlyStoppingPatience", e.Message);
        Assert.Contains("ValidationSet", e.Message);
    }
}
