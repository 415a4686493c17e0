using System.CommandLine;
using QuanTA.Core.Generation;

namespace QuanTA.Cli.Commands;

/// <summary><c>quanta generate</c>: continue a prompt with a Hugging Face model folder or a model .zip; prints only the
/// continuation. A .zip fine-tuned on conversations answers the prompt as one user message through its chat template
/// (<see cref="QuanTA.MLNet.Chat.QuanTAChatClient"/>), unless <c>--raw</c>.</summary>
public static class GenerateCommand
{
    /// <summary>The penalties' <see cref="GenerationOptions"/> names and their flags, so a refused value names the flag.</summary>
    static readonly (string Option, string Flag)[] PenaltyFlags =
    [
        (nameof(GenerationOptions.RepetitionPenalty), "--repetition-penalty"),
        (nameof(GenerationOptions.FrequencyPenalty), "--frequency-penalty"),
        (nameof(GenerationOptions.PresencePenalty), "--presence-penalty"),
    ];

    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var g = new GenerationOptions();   // the defaults below are read from here
        var model = new Option<string>("--model") { Description = "A model .zip written by 'quanta finetune' (its base model folder must be where it was), or a Hugging Face model folder (config.json, model.safetensors, tokenizer files; add --adapter for an exported adapter).", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "The text to continue.", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate.", DefaultValueFactory = _ => g.MaxNewTokens };
        var greedy = new Option<bool>("--greedy") { Description = "Pick the most likely token at every step (the default unless sampling options are given)." };
        var temperature = new Option<double?>("--temperature") { Description = "Sample with this temperature (> 0)." };
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling: keep the most likely tokens up to this total probability (0, 1]." };
        var topK = new Option<int?>("--top-k") { Description = "Sample among the k most likely tokens only." };
        var seed = new Option<long?>("--seed") { Description = "Seed for sampling (reproducible output)." };
        var repetitionPenalty = new Option<double>("--repetition-penalty") { Description = "transformers' repetition_penalty: divide the positive logits (multiply the negative ones) of every token already in the prompt or the output; 1 = off, > 1 repeats less (1.1–1.3 is usual).", DefaultValueFactory = _ => g.RepetitionPenalty };
        var frequencyPenalty = new Option<double>("--frequency-penalty") { Description = "OpenAI's frequency_penalty: subtract this from a token's logit for every time it was generated already; -2 to 2, 0 = off.", DefaultValueFactory = _ => g.FrequencyPenalty };
        var presencePenalty = new Option<double>("--presence-penalty") { Description = "OpenAI's presence_penalty: subtract this from the logit of every token generated at least once; -2 to 2, 0 = off.", DefaultValueFactory = _ => g.PresencePenalty };
        var stop = new Option<string[]>("--stop") { Description = "Stop before this string (repeatable).", AllowMultipleArgumentsPerToken = false };
        var adapter = ModelFolder.AdapterOption();
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => "cpu" };
        var dtype = new Option<string?>("--dtype") { Description = "Weight precision: fp32, fp16 or bf16 (default: fp32 on CPU, bf16 on CUDA)." };
        var noCache = new Option<bool>("--no-cache") { Description = "Recompute the whole sequence at every step instead of using the KV cache (slow; for checks)." };
        var stats = new Option<bool>("--stats") { Description = "Print the number of generated tokens and tokens/s on stderr." };
        var raw = new Option<bool>("--raw") { Description = "With a model .zip fine-tuned on conversations: continue the bare prompt text instead of answering it as a user message through the model's chat template." };

        var cmd = new Command("generate", "Continue a prompt with a Hugging Face LLaMA-family model (prints the continuation only).")
        {
            model, adapter, prompt, maxNew, greedy, temperature, topP, topK, seed, repetitionPenalty, frequencyPenalty, presencePenalty,
            stop, device, dtype, noCache, stats, raw,
        };
        cmd.SetAction(r => ModelFolder.Run(() =>
        {
            var sampling = r.GetValue(temperature) is not null || r.GetValue(topP) is not null || r.GetValue(topK) is not null;
            if (sampling && r.GetValue(greedy))
                throw new ArgumentException("--greedy cannot be combined with --temperature/--top-p/--top-k.");
            var options = new GenerationOptions
            {
                MaxNewTokens = r.GetValue(maxNew),
                Greedy = !sampling,
                Temperature = r.GetValue(temperature) ?? g.Temperature,
                TopP = r.GetValue(topP) ?? g.TopP,
                TopK = r.GetValue(topK) ?? g.TopK,
                Seed = r.GetValue(seed),
                StopStrings = r.GetValue(stop) ?? g.StopStrings,
                UseCache = !r.GetValue(noCache),
                RepetitionPenalty = r.GetValue(repetitionPenalty),
                FrequencyPenalty = r.GetValue(frequencyPenalty),
                PresencePenalty = r.GetValue(presencePenalty),
            };
            try { options.Validate(); }
            catch (ArgumentException e) when (PenaltyFlags.FirstOrDefault(p => e.Message.StartsWith(p.Option + " ", StringComparison.Ordinal)) is { Flag: not null } p)
            {
                throw new ArgumentException(p.Flag + e.Message[p.Option.Length..], e);          // name the flag the user typed
            }
            var stdout = Console.Out;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            int tokens; string where;
            if (ModelFolder.IsSavedModel(r.GetValue(model)))
            {
                if (r.GetValue(adapter) is not null) throw new ArgumentException("--adapter applies to a model folder; a model .zip carries its own adapter.");
                using var saved = ModelFolder.LoadSavedModel(r.GetValue(model)!, r.GetValue(device)!);
                int count = 0;
                IEnumerable<string> pieces;
                bool chat = saved.Transformer.Options.MessagesColumnName is not null && !r.GetValue(raw);   // trained on conversations
                using var client = chat ? new QuanTA.MLNet.Chat.QuanTAChatClient(saved.Transformer) : null;   // does not own the transformer
                if (client is not null)
                {
                    if (r.GetValue(noCache)) throw new ArgumentException("--no-cache applies to a bare continuation: add --raw, or leave --no-cache out.");
                    Console.Error.WriteLine("quanta: a chat model: the prompt is answered as one user message through its chat template " +
                                            "(--raw continues the bare text; for conversations use quanta serve).");
                    pieces = client.GetStreamingResponseAsync([new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, r.GetValue(prompt)!)],
                            ToChatOptions(options)).ToBlockingEnumerable()
                        .Select(u =>
                        {
                            if (u.Contents.OfType<Microsoft.Extensions.AI.UsageContent>().FirstOrDefault() is { } usage) count = (int)(usage.Details.OutputTokenCount ?? 0);
                            return u.Text;
                        });
                }
                else pieces = saved.Transformer.StreamGeneration(r.GetValue(prompt)!, options, (n, _) => count = n);
                foreach (var piece in pieces)
                {
                    stdout.Write(piece);
                    stdout.Flush();
                }
                tokens = count; where = r.GetValue(device)!;
            }
            else
            {
                var (m, codec) = ModelFolder.Load(r.GetValue(model), r.GetValue(device)!, r.GetValue(dtype), r.GetValue(adapter));
                using var _ = m;
                var generator = new TextGenerator(m, codec);
                foreach (var piece in generator.StreamAsync(r.GetValue(prompt)!, options).ToBlockingEnumerable())
                {
                    stdout.Write(piece);
                    stdout.Flush();
                }
                tokens = generator.LastTokenCount; where = m.Device.ToString();
            }
            clock.Stop();
            if (!Console.IsOutputRedirected) Console.Error.WriteLine();   // end the terminal line without adding to stdout
            if (r.GetValue(stats))
                Console.Error.WriteLine($"{tokens} tokens in {clock.Elapsed.TotalSeconds:F3} s " +
                                        $"({tokens / clock.Elapsed.TotalSeconds:F1} tokens/s, device {where}, cache {(options.UseCache ? "on" : "off")})");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The same decoding for the chat client: greedy as temperature 0; the repetition penalty as the
    /// <c>repetition_penalty</c> extension the client reads.</summary>
    static Microsoft.Extensions.AI.ChatOptions ToChatOptions(GenerationOptions g) => new()
    {
        MaxOutputTokens = g.MaxNewTokens,
        Temperature = g.Greedy ? 0f : (float)g.Temperature,
        TopP = g.Greedy ? null : (float)g.TopP,
        TopK = g.Greedy || g.TopK <= 0 ? null : g.TopK,
        Seed = g.Seed,
        StopSequences = [.. g.StopStrings],
        FrequencyPenalty = (float)g.FrequencyPenalty,
        PresencePenalty = (float)g.PresencePenalty,
        AdditionalProperties = new() { ["repetition_penalty"] = g.RepetitionPenalty },
    };
}
