namespace QuanTA.MLNet.Plotting;

/// <summary>Writes a ScottPlot figure as PNG atomically (temp file + rename), creating the folder; no partial file is left.</summary>
internal static class PngFile
{
    public static void Save(ScottPlot.Plot plot, string path, int width, int height)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + ".tmp-" + Guid.NewGuid().ToString("N")[..8] + ".png";
        try
        {
            plot.SavePng(tmp, width, height);
            File.Move(tmp, full, overwrite: true);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }
}
