using QuanTA.MLNet.Plotting;

namespace QuanTA.MLNet.AutoML;

/// <summary>
/// The QuanTA paper's Figure-4 view of a sweep as a PNG (ScottPlot): the metric of every succeeded trial against its trainable
/// parameters (log10 axis), QuanTA and LoRA in two series, and the Pareto front as a step line.
/// </summary>
public static class SweepPlot
{
    /// <summary>Writes the plot of <paramref name="result"/> to <paramref name="path"/> (temporary file, then rename).</summary>
    /// <exception cref="ArgumentException">no succeeded trial to plot, or a bad size.</exception>
    public static void SavePng(string path, QuanTASweepResult result, int width = 900, int height = 560)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(result);
        var ok = result.Leaderboard;
        if (ok.Count == 0) throw new ArgumentException("The sweep has no succeeded trial to plot.", nameof(result));
        if (width < 100 || height < 100) throw new ArgumentException($"Plot size {width}×{height} is too small: expected at least 100×100 pixels.");

        var plot = new ScottPlot.Plot();
        foreach (var group in ok.GroupBy(t => t.Adapter).OrderBy(g => g.Key))
        {
            var s = plot.Add.ScatterPoints(group.Select(t => Math.Log10(t.TrainableParameters)).ToArray(), group.Select(t => t.Metric!.Value).ToArray());
            s.LegendText = group.Key;
            s.MarkerSize = 9;
        }
        var front = result.ParetoFront;
        var line = plot.Add.Scatter(front.Select(t => Math.Log10(t.TrainableParameters)).ToArray(), front.Select(t => t.Metric!.Value).ToArray());
        line.LegendText = "Pareto front";
        line.ConnectStyle = ScottPlot.ConnectStyle.StepHorizontal;
        line.LineWidth = 2;
        line.MarkerSize = 4;
        plot.Title($"Sweep: {result.MetricName} vs trainable parameters ({ok.Count} trials)");
        plot.XLabel("log10(trainable parameters)");
        plot.YLabel(result.MetricName + (result.GreaterIsBetter ? " (higher is better)" : " (lower is better)"));
        plot.ShowLegend();

        PngFile.Save(plot, path, width, height);
    }
}
