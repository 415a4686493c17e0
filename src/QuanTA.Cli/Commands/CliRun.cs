using System.Globalization;
using Microsoft.ML;

namespace QuanTA.Cli.Commands;

/// <summary>Error handling and MLContext setup shared by the ML.NET verbs.</summary>
internal static class CliRun
{
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e)
        {
            var inner = e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is not null ? e.InnerException : e;
            Console.Error.WriteLine($"error: {inner.Message.ReplaceLineEndings(" ")}");
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
