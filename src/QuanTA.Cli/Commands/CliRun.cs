using System.Globalization;
using Microsoft.ML;

namespace QuanTA.Cli.Commands;

/// <summary>Error handling and MLContext setup shared by the ML.NET verbs.</summary>
internal static class CliRun
{
    /// <summary>Runs a verb body; a failure becomes one line on stderr and exit code 1. <paramref name="describe"/> may reword
    /// an exception for the command line (null: keep its message), e.g. name the flag instead of the library property.</summary>
    public static int Run(Func<int> body, Func<Exception, string?>? describe = null)
    {
        try { return body(); }
        catch (Exception e)
        {
            var inner = e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is not null ? e.InnerException : e;
            Console.Error.WriteLine($"error: {(describe?.Invoke(inner) ?? inner.Message).ReplaceLineEndings(" ")}");
            return 1;
        }
    }

    public static MLContext Context(string device, int seed)
    {
        var ml = new MLContext(seed);
        var spec = device.Trim().ToLowerInvariant();
        if (spec.StartsWith("cuda", StringComparison.Ordinal))
        {
            ml.GpuDeviceId = spec.Length > 5 ? int.Parse(spec[5..], CultureInfo.InvariantCulture) : 0;
            ml.FallbackToCpu = false;
        }
        else if (spec != "cpu") throw new ArgumentException($"--device '{device}' is not cpu, cuda or cuda:N.");
        return ml;
    }
}
