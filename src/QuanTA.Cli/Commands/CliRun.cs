using Microsoft.ML;
using QuanTA.Core.Runtime;
using TorchSharp;

namespace QuanTA.Cli.Commands;

/// <summary>Error handling, device parsing and MLContext setup shared by the verbs.</summary>
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

    /// <summary>An MLContext whose models run on <paramref name="device"/> (<see cref="Device"/>: no CPU fallback).</summary>
    public static MLContext Context(string device, int seed)
    {
        var ml = new MLContext(seed);
        var parsed = Device(device);
        if (parsed.type == DeviceType.CUDA)
        {
            ml.GpuDeviceId = parsed.index;
            ml.FallbackToCpu = false;
        }
        return ml;
    }

    /// <summary>The <c>--device</c> flag through <see cref="TorchRuntime.ParseDevice"/> (the one parser of device strings), with its
    /// errors naming the flag: an unknown string, a GPU id that is not visible, CUDA asked for where there is none.</summary>
    public static torch.Device Device(string device)
    {
        try { return TorchRuntime.ParseDevice(device); }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentException($"--device '{device}': {e.Message.Replace($" (Parameter '{e.ParamName}')", "", StringComparison.Ordinal)} " +
                "Choose another --device.", e);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--device '{device}' is not cpu, cuda or cuda:N.", e);
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidOperationException($"--device '{device}': {e.Message}", e);
        }
    }
}
