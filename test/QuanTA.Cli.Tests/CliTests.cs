using System.Text.Json;
using QuanTA.Cli;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Cli.Tests;

/// <summary>Runs <c>quanta</c> in-process (Program.Main with captured stdout/stderr).</summary>
[CollectionDefinition("console", DisableParallelization = true)]
public class ConsoleCollection { }

/// <summary>The generate and score verbs on the fixtures, against transformers' reference outputs.</summary>
[Collection("console")]
public class CliTests
{
    static string Dir(string name) => QuantaProcess.Dir(name);

    static Dictionary<string, Tensor> Reference(string name)
    {
        TorchRuntime.Initialize();
        return Safetensors.LoadStateDict(Path.Combine(Dir(name), "reference.safetensors"));
    }

    static (int Code, string Out, string Err) Quanta(params string[] args) => QuantaProcess.Run(args);

    static string[] Prompts(string name)
        => JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir(name), "reference.json"))).RootElement
            .GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void GenerateGreedyPrintsExactlyTheReferenceContinuation(string name)
    {
        var refJson = JsonDocument.Parse(File.ReadAllText(Path.Combine(Dir(name), "reference.json"))).RootElement;
        var prompt = Prompts(name)[0];
        var decoded = refJson.GetProperty("decoded_greedy").GetString()!;                 // prompt + 12 greedy tokens
        Assert.StartsWith(prompt, decoded);
        var (code, stdout, stderr) = Quanta("generate", "--model", Dir(name), "--prompt", prompt, "--greedy", "--max-new-tokens", "12");
        Assert.True(code == 0, stderr);
        Assert.Equal(decoded[prompt.Length..], stdout);
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void ScoreGivesTheLogProbabilitiesImpliedByTheReferenceLogits(string name)
    {
        var r = Reference(name);
        var prompts = Prompts(name);
        for (var row = 0; row < prompts.Length; row++)
        {
            var (code, stdout, stderr) = Quanta("score", "--model", Dir(name), "--text", prompts[row]);
            Assert.True(code == 0, stderr);
            Assert.Single(stdout.Trim().Split('\n'));                                       // one JSON object, nothing else
            var json = JsonDocument.Parse(stdout).RootElement;
            var ids = json.GetProperty("token_ids").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            var logprobs = json.GetProperty("logprobs").EnumerateArray().Select(x => x.GetDouble()).ToArray();

            // The reference row: its real (unpadded) tokens are the tokenizer's ids for the prompt.
            var n = (int)r["attention_mask"][row].sum().item<long>();
            Assert.Equal(r["input_ids"][row, ..n].data<long>().ToArray(), ids);
            Assert.Equal(n - 1, logprobs.Length);
            using var refLogp = r["logits"][row, ..(n - 1)].log_softmax(-1);                   // (n−1, V)
            for (var i = 1; i < n; i++)
            {
                var expected = refLogp[i - 1, ids[i]].item<float>();
                Assert.True(Math.Abs(expected - logprobs[i - 1]) < 1e-3, $"{name} row {row} token {i}: {logprobs[i - 1]} vs {expected}");
            }
            Assert.Equal(logprobs.Average(), json.GetProperty("mean_logprob").GetDouble(), 9);
        }
    }

    [Fact]
    public void SeededSamplingIsReproducible()
    {
        string[] args = ["generate", "--model", Dir("llama-tiny"), "--prompt", "the cat sat on", "--temperature", "0.8", "--top-p", "0.95", "--seed", "11", "--max-new-tokens", "8"];
        var a = Quanta(args);
        Assert.Equal(0, a.Code);
        Assert.Equal(a.Out, Quanta(args).Out);
        Assert.NotEqual("", a.Out);
    }

    [Fact]
    public void GeneratePenaltyFlagsReachTheDecoder()
    {
        const string prompt = "the cat sat on";
        string[] args = ["generate", "--model", Dir("llama-tiny"), "--prompt", prompt, "--max-new-tokens", "24"];
        var plain = Quanta(args);
        var penalized = Quanta([.. args, "--repetition-penalty", "1.5", "--frequency-penalty", "0.5", "--presence-penalty", "0.25"]);
        Assert.True(penalized.Code == 0, penalized.Err);
        // The in-process decoder with the same settings is the reference; the flags must change the plain greedy text.
        var (model, codec) = QuanTA.Cli.Commands.ModelFolder.Load(Dir("llama-tiny"), "cpu", null);
        using (model)
        {
            var o = new QuanTA.Core.Generation.GenerationOptions { MaxNewTokens = 24 };
            var generator = new QuanTA.Core.Generation.TextGenerator(model, codec);
            Assert.Equal(generator.Generate(prompt, o), plain.Out);
            Assert.Equal(generator.Generate(prompt, o with { RepetitionPenalty = 1.5, FrequencyPenalty = 0.5, PresencePenalty = 0.25 }), penalized.Out);
        }
        Assert.NotEqual(plain.Out, penalized.Out);
    }

    [Theory]
    [InlineData("--frequency-penalty", "3")]
    [InlineData("--presence-penalty", "-2.5")]
    [InlineData("--repetition-penalty", "0")]
    public void OutOfRangePenaltyFlagsAreNamed(string flag, string value)
    {
        var (code, stdout, stderr) = Quanta("generate", "--model", Dir("llama-tiny"), "--prompt", "x", flag, value);
        Assert.NotEqual(0, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error:", stderr);
        Assert.Contains(flag, stderr);
    }

    [Theory]
    [InlineData("score", "--text", "x")]                                                  // missing --model
    [InlineData("generate", "--model", "/no/such/dir", "--prompt", "x")]
    [InlineData("generate", "--model", "FIXTURE", "--prompt", "x", "--greedy", "--temperature", "0.5")]
    [InlineData("generate", "--model", "FIXTURE", "--prompt", "x", "--top-p", "1.5")]
    [InlineData("generate", "--model", "FIXTURE", "--prompt", "x", "--max-new-tokens", "many")]
    [InlineData("generate", "--model", "FIXTURE", "--prompt", "x", "--device", "tpu")]
    [InlineData("frobnicate")]
    public void BadArgumentsGiveOneLineErrorAndNonZeroExit(params string[] args)
    {
        args = args.Select(a => a == "FIXTURE" ? Dir("llama-tiny") : a).ToArray();
        var (code, stdout, stderr) = Quanta(args);
        Assert.NotEqual(0, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.StartsWith("error:", stderr);
    }

    [Fact]
    public void EveryVerbHasHelp()
    {
        foreach (var verb in new[] { "generate", "score" })
        {
            var (code, stdout, _) = Quanta(verb, "--help");
            Assert.Equal(0, code);
            Assert.Contains("--model", stdout);
        }
    }
}
