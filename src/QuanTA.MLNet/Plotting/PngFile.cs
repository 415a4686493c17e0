namespace QuanTA.MLNet.Plotting;

/// <summary>Writes a ScottPlot figure as PNG atomically (<see cref="QuanTA.Core.Runtime.AtomicFile"/>: temp file, flush,
/// rename), creating the folder; a failure leaves the previous PNG intact and no partial file.</summary>
internal static class PngFile
{
    public static void Save(ScottPlot.Plot plot, string path, int width, int height)
    {
        var png = plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
        QuanTA.Core.Runtime.AtomicFile.WriteAllBytes(path, png);
    }
}
