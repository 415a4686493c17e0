// Pre-trains the tiny LLaMA base model of samples/Models/wordnet-llama-tiny (see its README for the exact command):
//   1. gloss lines of the WordNet train split → byte-level BPE ids (tokenizer from tools/wordnet/train_bpe.py)
//   2. a fresh LlamaForCausalLM from the project's backbone, every parameter trained (AdamW, cosine schedule)
//   3. saved in Hugging Face layout, reloaded through CausalLM.FromPretrained (the path a real checkpoint takes),
//      and its per-token perplexity measured on every validation gloss line.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using QuanTA.Core.Data;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using QuanTA.Tools.PretrainBaseModel;
using TorchSharp;

PretrainOptions o;
try { o = PretrainOptions.Parse(args); }
catch (ArgumentException e) { Console.Error.WriteLine(e.Message); return 2; }

var total = Stopwatch.StartNew();
TorchRuntime.Initialize();
if (o.Threads > 0) torch.set_num_threads(o.Threads);
var device = TorchRuntime.ParseDevice(o.Device);
Console.WriteLine($"libtorch threads: {torch.get_num_threads()}; options: {o}");

// ---- data ----
var tokenizer = TokenData.LoadTokenizer(o.Tokenizer);
var vocabSize = JsonNode.Parse(File.ReadAllText(Path.Combine(o.Tokenizer, "vocab.json")))!.AsObject().Count;
var train = TokenData.Tokenize(tokenizer, WordNetData.GlossLines(WordNetSplit.Train, o.Data));
var validation = TokenData.Tokenize(tokenizer, WordNetData.GlossLines(WordNetSplit.Validation, o.Data));
using var blocks = train.PackedBlocks(o.Context + 1);
Console.WriteLine($"train: {train.Lines.Count:N0} gloss lines, {train.TokenCount:N0} tokens, {blocks.shape[0]:N0} blocks of {o.Context + 1}; " +
                  $"validation: {validation.Lines.Count:N0} lines, {validation.TokenCount:N0} tokens; vocab {vocabSize}");

// ---- model ----
var summary = new JsonObject();
long nParams;
if (!o.EvalOnly)
{
    var trainer = new Pretrainer(o, Console.Out);
    var config = HfModelConfig.Parse(trainer.ConfigJson(vocabSize).ToJsonString(), "generated config.json");
    using var model = o.InitFrom is null ? Pretrainer.Create(config, o.Seed, device) : Pretrainer.Continue(o.InitFrom, config, o.Seed, device);
    nParams = model.parameters().Sum(p => p.numel());
    Console.WriteLine($"LlamaForCausalLM: {nParams:N0} parameters, all trainable");

    Directory.CreateDirectory(o.Out);
    if (Path.GetFullPath(o.Out) != Path.GetFullPath(o.Tokenizer))
        foreach (var f in new[] { "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(o.Tokenizer, f), Path.Combine(o.Out, f), overwrite: true);

    summary = trainer.Train(model, blocks, validation.Lines);
}

// ---- reload through the public loading path and evaluate ----
if (o.EvalOnly) Pretrainer.AddFormatMetadata(Path.Combine(o.Out, "model.safetensors")); // files of older runs
using var loaded = CausalLM.FromPretrained(o.Out, torch.ScalarType.Float32, device);
nParams = loaded.parameters().Sum(p => p.numel());
var ppl = Pretrainer.Perplexity(loaded, validation.Lines, o.Context);
Console.WriteLine($"validation perplexity (all {validation.Lines.Count:N0} gloss lines, reloaded {o.SaveDtype} checkpoint): {ppl:F3}");

var samples = new JsonArray();
foreach (var prompt in new[] { "a member of the genus", "a small", "the act of", "a person who", "(botany)" })
{
    var ids = tokenizer.EncodeToIds(prompt).ToArray();
    var text = prompt + tokenizer.Decode(Pretrainer.Greedy(loaded, ids, 24));
    Console.WriteLine($"  greedy: {text}");
    samples.Add(text);
}

summary["parameters"] = nParams;
summary["model_safetensors_bytes"] = new FileInfo(Path.Combine(o.Out, "model.safetensors")).Length;
summary["train_gloss_lines"] = train.Lines.Count;
summary["train_tokens"] = train.TokenCount;
summary["validation_gloss_lines"] = validation.Lines.Count;
summary["validation_tokens"] = validation.TokenCount;
summary["validation_perplexity"] = Math.Round(ppl, 3);
summary["threads"] = torch.get_num_threads();
summary["device"] = device.ToString();
summary["total_seconds"] = Math.Round(total.Elapsed.TotalSeconds, 1);
summary["greedy_samples"] = samples;
summary["command_line"] = "dotnet run -c Release --project tools/PretrainBaseModel -- " + string.Join(' ', args);
QuanTA.Core.Runtime.AtomicFile.WriteAllText(Path.Combine(o.Out, o.EvalOnly ? "evaluation.json" : "pretraining.json"), summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
Console.WriteLine(summary.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
return 0;
