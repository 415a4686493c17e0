using System.CommandLine;
using QuanTA.Cli.Commands;

namespace QuanTA.Cli;

/// <summary>Entry point of the <c>quanta</c> tool; each verb lives in its own file under Commands/.</summary>
public static class Program
{
    /// <summary>Parses and runs a verb. Bad arguments: one line on stderr and exit code 2; a failing verb: exit code 1.</summary>
    public static int Main(string[] args)
    {
        var root = new RootCommand("quanta: QuanTA fine-tuning of LLaMA-family models on TorchSharp.");
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(ScoreCommand.Create());
        root.Subcommands.Add(FineTuneCommand.Create());
        root.Subcommands.Add(EvaluateCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(ExportCommand.Create());
        root.Subcommands.Add(SweepCommand.Create());
        root.Subcommands.Add(SweepCommand.CreateTrialRunner());
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0 && !args.Any(a => a is "--help" or "-h" or "-?"))
        {
            var verb = parsed.CommandResult.Command == root ? "" : parsed.CommandResult.Command.Name + " ";
            Console.Error.WriteLine($"error: {string.Join("; ", parsed.Errors.Select(e => e.Message))} (see 'quanta {verb}--help')");
            return 2;
        }
        return parsed.Invoke();
    }
}
