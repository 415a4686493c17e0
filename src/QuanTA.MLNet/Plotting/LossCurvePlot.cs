using QuanTA.Core.Training;

namespace QuanTA.MLNet.Plotting;

/// <summary>
/// Draws a training history as a PNG with ScottPlot: the per-step training loss (thin), its exponential moving average
/// (thick), and the validation metric (markers, right axis) when validation ran. Kept out of QuanTA.Core so the core
/// library has no plotting dependency.
/// </summary>
public static class LossCurvePlot
{
    /// <summary>
    /// Writes <paramref name="history"/> to <paramref name="path"/> (a .png; written to a temporary file, then renamed).
    /// </summary>
    /// <param name="path">Output file; its folder is created if needed.</param>
    /// <param name="history">The trainer's history (<see cref="TrainingResult.History"/>).</param>
    /// <param name="title">Plot title.</param>
    /// <param name="width">Pixels.</param>
    /// <param name="height">Pixels.</param>
    /// <param name="smoothing">EMA factor of the smoothed curve in [0, 1); 0 draws no smoothed curve. Default 0.9.</param>
    /// <exception cref="ArgumentException">empty history, bad size or smoothing.</exception>
    public static void SavePng(string path, TrainingHistory history, string title = "Training loss", int width = 900, int height = 500, double smoothing = 0.9)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(history);
        if (history.Steps.Count == 0) throw new ArgumentException("The training history has no steps to plot.", nameof(history));
        if (width < 100 || height < 100) throw new ArgumentException($"Plot size {width}×{height} is too small: expected at least 100×100 pixels.");
        if (smoothing is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(smoothing), smoothing, "Smoothing must lie in [0, 1).");

        var steps = history.Steps.Select(s => (double)s.Step).ToArray();
        var loss = history.Steps.Select(s => s.Loss).ToArray();

        var plot = new ScottPlot.Plot();
        var raw = plot.Add.ScatterLine(steps, loss);
        raw.LegendText = "training loss";
        raw.LineWidth = 1;
        if (smoothing > 0 && loss.Length > 1)
        {
            var ema = Ema(loss, smoothing);
            var smooth = plot.Add.ScatterLine(steps, ema);
            smooth.LegendText = $"EMA ({smoothing:0.##})";
            smooth.LineWidth = 2.5f;
        }
        if (history.Validations.Count > 0)
        {
            var val = plot.Add.Scatter(history.Validations.Select(v => (double)v.Step).ToArray(), history.Validations.Select(v => v.Metric).ToArray());
            val.LegendText = "validation metric";
            val.MarkerSize = 8;
            val.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "validation metric";
        }
        plot.Title(title);
        plot.XLabel("optimizer step");
        plot.YLabel("loss");
        plot.ShowLegend();

        PngFile.Save(plot, path, width, height);
    }

    /// <summary>Exponential moving average with bias correction (as TensorBoard's smoothing).</summary>
    internal static double[] Ema(IReadOnlyList<double> values, double smoothing)
    {
        var result = new double[values.Count];
        double last = 0, weight = 0;
        for (var i = 0; i < values.Count; i++)
        {
            if (!double.IsFinite(values[i])) { result[i] = double.NaN; continue; }
            last = last * smoothing + (1 - smoothing) * values[i];
            weight = weight * smoothing + (1 - smoothing);
            result[i] = last / weight;
        }
        return result;
    }
}
