using System.CommandLine;

namespace QuanTA.Cli;

/// <summary>Entry point of the <c>quanta</c> tool; each verb lives in its own file under Commands/.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("quanta: QuanTA fine-tuning of LLaMA-family models on TorchSharp.");
        return root.Parse(args).Invoke();
    }
}
