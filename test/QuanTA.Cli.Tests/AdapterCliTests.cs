using System.Text.Json;
using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Cli.Tests;

/// <summary><c>--adapter</c>: the verbs apply an adapter file saved by the library.</summary>
[Collection("console")]
public class AdapterCliTests
{
    static string Dir(string name) => QuantaProcess.Dir(name);

    static (int Code, string Out, string Err) Quanta(params string[] args) => QuantaProcess.Run(args);

    static double[] LogProbs(string stdout)
        => JsonDocument.Parse(stdout).RootElement.GetProperty("logprobs").EnumerateArray().Select(x => x.GetDouble()).ToArray();

    public static TheoryData<string> Methods => new() { "lora", "quanta" };

    [Theory]
    [MemberData(nameof(Methods))]
    public void ScoreWithAdapterEqualsTheAdaptedModelInProcess(string method)
    {
        const string text = "somatosensory: of or relating to the";
        var path = Path.Combine(Path.GetTempPath(), $"quanta-cli-{Guid.NewGuid():N}", "adapter.safetensors");
        double[] expected;
        using (var model = CausalLM.FromPretrained(Dir("llama-tiny")))
        {
            IAdapterConfig cfg = method == "lora" ? new LoRAConfig { Rank = 4, Alpha = 8, Seed = 3 } : new QuanTAConfig { Seed = 3 };
            AdapterInjector.Inject(model, cfg, TargetModules.Names("q_proj", "v_proj"));
            using (no_grad())
            {
                var gen = new torch.Generator(5);
                foreach (var p in model.parameters().Where(p => p.requires_grad))          // a trained-looking, non-zero ΔW
                    p.add_(randn(p.shape, generator: gen) * 0.05);
            }
            AdapterFile.Save(model, path);
            model.eval();
            var ids = JsonDocument.Parse(Quanta("score", "--model", Dir("llama-tiny"), "--text", text).Out)
                .RootElement.GetProperty("token_ids").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            using var _ = no_grad();
            using var input = tensor(ids).unsqueeze(0);
            using var logp = model.forward(input, null)[0, ..^1].log_softmax(-1);
            using var next = input[0, 1..].unsqueeze(-1);
            using var picked = logp.gather(-1, next).squeeze(-1).to_type(ScalarType.Float64);
            expected = picked.data<double>().ToArray();
        }
        var baseRun = Quanta("score", "--model", Dir("llama-tiny"), "--text", text);
        var adapted = Quanta("score", "--model", Dir("llama-tiny"), "--adapter", path, "--text", text);
        Assert.True(adapted.Code == 0, adapted.Err);
        var got = LogProbs(adapted.Out);
        Assert.Equal(expected.Length, got.Length);
        for (var i = 0; i < got.Length; i++) Assert.True(Math.Abs(expected[i] - got[i]) < 1e-5, $"token {i + 1}: {got[i]} vs {expected[i]}");
        Assert.True(LogProbs(baseRun.Out).Zip(got).Max(p => Math.Abs(p.First - p.Second)) > 1e-3, "the adapter had no effect");

        var g = Quanta("generate", "--model", Dir("llama-tiny"), "--adapter", path, "--prompt", text, "--max-new-tokens", "5");
        Assert.True(g.Code == 0, g.Err);
    }

    [Fact]
    public void MissingAdapterFileIsAOneLineError()
    {
        var (code, stdout, stderr) = Quanta("score", "--model", Dir("llama-tiny"), "--adapter", "/no/such/adapter.safetensors", "--text", "the cat");
        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Contains("adapter.safetensors", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
