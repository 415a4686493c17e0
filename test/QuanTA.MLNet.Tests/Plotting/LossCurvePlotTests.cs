using QuanTA.Core.Training;
using QuanTA.MLNet.Plotting;

namespace QuanTA.MLNet.Tests.Plotting;

public class LossCurvePlotTests
{
    static TrainingHistory History(int n, bool withValidation)
    {
        var h = new TrainingHistory();
        for (var s = 1; s <= n; s++) h.Steps.Add(new TrainingStepRecord(s, 0, 3.0 / s + 0.1 * Math.Sin(s), 1e-4, 1.0, 64));
        if (withValidation) for (var s = 10; s <= n; s += 10) h.Validations.Add(new ValidationRecord(s, 0, 0.5 + s / (2.0 * n)));
        return h;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void WritesAPngOfTheRequestedSize(bool withValidation)
    {
        var dir = Path.Combine(Path.GetTempPath(), "quanta-plot-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var path = Path.Combine(dir, "sub", "loss.png");
            LossCurvePlot.SavePng(path, History(50, withValidation), width: 640, height: 360);
            var bytes = File.ReadAllBytes(path);
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
            // IHDR: width and height, big-endian, at bytes 16..23
            Assert.Equal(640, (bytes[16] << 24) | (bytes[17] << 16) | (bytes[18] << 8) | bytes[19]);
            Assert.Equal(360, (bytes[20] << 24) | (bytes[21] << 16) | (bytes[22] << 8) | bytes[23]);
            Assert.True(bytes.Length > 5000, $"suspiciously small PNG ({bytes.Length} bytes)");
            Assert.Single(Directory.GetFiles(Path.Combine(dir, "sub")));   // no temporary file left
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    [Fact]
    public void EmptyHistoryIsAClearError()
        => Assert.Contains("no steps", Assert.Throws<ArgumentException>(() => LossCurvePlot.SavePng("x.png", new TrainingHistory())).Message);

    [Fact]
    public void SmoothingIsABiasCorrectedMovingAverage()
    {
        var ema = LossCurvePlot.Ema(new[] { 2.0, 4.0 }, 0.5);
        Assert.Equal(2.0, ema[0], 12);                       // first value unbiased
        Assert.Equal((0.25 * 2 + 0.5 * 4) / 0.75, ema[1], 12);
    }
}
