namespace QuanTA.MLNet.Engine;

/// <summary>Writes the training-loss curve (and validation loss per epoch) as a PNG.</summary>
internal static class LossCurve
{
    public static void SavePng(string path, IReadOnlyList<double> stepLosses, IReadOnlyList<double> validationLosses, QuanTAFineTuneOptions o)
    {
        var plot = new ScottPlot.Plot();
        var xs = Enumerable.Range(1, stepLosses.Count).Select(i => (double)i).ToArray();
        var train = plot.Add.Scatter(xs, stepLosses.ToArray());
        train.LegendText = "training loss";
        if (validationLosses.Count > 0)
        {
            int perEpoch = Math.Max(1, stepLosses.Count / validationLosses.Count);
            var vx = Enumerable.Range(1, validationLosses.Count).Select(e => (double)(e * perEpoch)).ToArray();
            var val = plot.Add.Scatter(vx, validationLosses.ToArray());
            val.LegendText = "validation loss";
        }
        plot.Title($"QuanTA fine-tuning ({o.Adapter}, lr {o.LearningRate:G3})");
        plot.XLabel("optimizer step");
        plot.YLabel("loss");
        plot.ShowLegend();
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        plot.SavePng(path, 800, 500);
    }
}
