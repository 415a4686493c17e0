using System.CommandLine;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Cli.Commands;

/// <summary>
/// <c>quanta score</c>: the log-likelihood of a text under a model, token by token (how the paper scores its
/// commonsense tasks). Prints one JSON object: <c>token_ids</c>, <c>logprobs</c> (log p(token_i | tokens before it), one per
/// token after the first) and <c>mean_logprob</c>.
/// </summary>
public static class ScoreCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (config.json, model.safetensors, tokenizer files).", Required = true };
        var text = new Option<string>("--text") { Description = "The text to score.", Required = true };
        var adapter = ModelFolder.AdapterOption();
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var dtype = new Option<string?>("--dtype") { Description = "Weight precision: fp32, fp16 or bf16 (default: fp32 on CPU, bf16 on CUDA)." };

        var cmd = new Command("score", "Print per-token log-probabilities of a text as one JSON object (token_ids, logprobs, mean_logprob).")
        {
            model, adapter, text, device, dtype,
        };
        cmd.SetAction(r => ModelFolder.Run(() =>
        {
            var (m, codec) = ModelFolder.Load(r.GetValue(model), r.GetValue(device)!, r.GetValue(dtype), r.GetValue(adapter));
            using var _ = m;
            var ids = codec.Encode(r.GetValue(text)!).Select(i => (long)i).ToArray();
            if (ids.Length < 2)
                throw new ArgumentException($"--text encodes to {ids.Length} token(s); scoring needs at least 2 (the first token is the context).");
            var logprobs = Score(m, ids);
            var json = JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["token_ids"] = ids,
                ["logprobs"] = logprobs,
                ["mean_logprob"] = logprobs.Average(),
            });
            Console.Out.WriteLine(json);
            return 0;
        }));
        return cmd;
    }

    /// <summary>log p(ids[i] | ids[..i]) for i = 1 … n−1, in fp32 log-softmax over the model's logits.</summary>
    internal static double[] Score(Core.Models.CausalLM model, long[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = tensor(ids, dtype: ScalarType.Int64, device: model.Device).unsqueeze(0);         // (1, T)
        var logp = model.forward(input, null)[0, ..^1].log_softmax(-1);                             // (T−1, V)
        var next = input[0, 1..].unsqueeze(-1);                                                     // (T−1, 1)
        return logp.gather(-1, next).squeeze(-1).cpu().to_type(ScalarType.Float64).data<double>().ToArray();
    }
}
