namespace QuanTA.Cli.Tests;

/// <summary>Runs <c>quanta</c> in-process (Program.Main with captured stdout/stderr) and finds the copied fixtures.</summary>
internal static class QuantaProcess
{
    public static string Dir(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    /// <summary>Console.Out/Error are process-wide: runs are serialized so that test classes running in parallel (not every
    /// class is in the "console" collection) cannot redirect them in the middle of one another's run.</summary>
    static readonly object ConsoleLock = new();

    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        lock (ConsoleLock)
        {
            var (oldOut, oldErr) = (Console.Out, Console.Error);
            var (o, e) = (new StringWriter(), new StringWriter());
            Console.SetOut(o); Console.SetError(e);
            try { return (Program.Main(args), o.ToString(), e.ToString()); }
            finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
        }
    }
}
