using System.Diagnostics;
using QuanTA.MLNet;

namespace QuanTA.Samples;

/// <summary>
/// Shows <see cref="QuanTAFineTuneOptions.Progress"/> reports: one line rewritten in place when stdout is a terminal,
/// plain lines (about ten per run) when it is redirected to a file or a pipe.
/// </summary>
public sealed class ConsoleProgress(string label) : IProgress<QuanTAProgress>
{
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly bool _live = !Console.IsOutputRedirected;
    int _lastLength;

    /// <inheritdoc/>
    public void Report(QuanTAProgress p)
    {
        if (p.ValidationLoss is double v)
        {
            Finish();
            Console.WriteLine($"  [{label}] epoch {p.Epoch + 1} validation loss {v:F4}");
            return;
        }
        double elapsed = _clock.Elapsed.TotalSeconds;
        double eta = p.Step > 0 ? elapsed / p.Step * (p.TotalSteps - p.Step) : double.NaN;
        int width = 24, done = p.TotalSteps > 0 ? (int)Math.Round((double)width * p.Step / p.TotalSteps) : 0;
        string bar = new string('#', done) + new string('.', width - done);
        string line = $"  [{label}] [{bar}] step {p.Step}/{p.TotalSteps} epoch {p.Epoch + 1} loss {p.Loss:F4} " +
                      $"{p.TokensPerSecond,6:F0} tok/s  elapsed {Format(elapsed)}  ETA {Format(eta)}";
        if (_live)
        {
            Console.Write("\r" + line.PadRight(_lastLength));
            _lastLength = line.Length;
            if (p.Step == p.TotalSteps) Finish();
        }
        else if (p.Step == 1 || p.Step == p.TotalSteps || p.Step % Math.Max(1, p.TotalSteps / 10) == 0)
            Console.WriteLine(line);
    }

    /// <summary>Ends the live line (a newline) if one is showing.</summary>
    public void Finish()
    {
        if (_live && _lastLength > 0) Console.WriteLine();
        _lastLength = 0;
    }

    static string Format(double seconds) => double.IsFinite(seconds) ? TimeSpan.FromSeconds(Math.Round(seconds)).ToString(@"m\:ss") : "-:--";
}
