// Chat fine-tuning end to end on the embedded WordNet data and tiny LLaMA base model:
// `dotnet run -c Release --project samples/Chat [-- --quick] [--gpu] [--out DIR]`.
// 1. writes word → definition conversations as JSONL (the shape of your own chat logs: {"messages": [...]});
// 2. fine-tunes QuanTA adapters through ML.NET on them (chat template from the model's tokenizer_config.json, loss on the
//    assistant turns only) and saves the model .zip;
// 3. chats with the saved model through Microsoft.Extensions.AI's IChatClient (registered with AddChatClient, with
//    caching and logging middleware), streaming the answers to the console, and reports first-token latency and tokens/s.
// Serve the same .zip over an OpenAI-compatible endpoint with: quanta serve --model out/chat/model.zip --port 8080
using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.ML;
using QuanTA.Core.Data;
using QuanTA.MLNet;
using QuanTA.MLNet.Chat;
using QuanTA.Samples;

bool quick = args.Contains("--quick"), gpu = args.Contains("--gpu");
int outAt = Array.IndexOf(args, "--out");
string outDir = Path.GetFullPath(outAt >= 0 && outAt + 1 < args.Length ? args[outAt + 1] : "out/chat");
Directory.CreateDirectory(outDir);
int trainRows = quick ? 160 : 960, testRows = 6;
const string SystemPrompt = "Define the word.";

// ---- 1. chat data: one conversation per JSONL line, two words each (multi-turn: both answers are trained) ----
var words = WordNetData.LoadDefinitions(WordNetSplit.Train).Take(trainRows)
    .Select(e => (Word: e.Prompt.TrimEnd(':'), Definition: e.Target.Trim())).ToList();
var trainPath = Path.Combine(outDir, "train.jsonl");
WriteAtomically(trainPath, words.Chunk(2).Select(pair => JsonSerializer.Serialize(new
{
    messages = new object[] { new { role = "system", content = SystemPrompt } }
        .Concat(pair.SelectMany(w => new object[] { new { role = "user", content = w.Word }, new { role = "assistant", content = w.Definition } })),
})));
Console.WriteLine($"Wrote {words.Count / 2} conversations ({words.Count} word → definition turns) to {trainPath}");

// ---- 2. fine-tune through ML.NET and save ----
var ml = new MLContext(seed: 1);
if (gpu) { ml.GpuDeviceId = 0; ml.FallbackToCpu = true; }
var data = ml.Data.LoadFromChatJsonl(trainPath);                 // columns Messages, Text, Target
var progress = new ConsoleProgress("quanta-chat");
var options = new QuanTAFineTuneOptions
{
    Task = QuanTATask.TextGeneration,
    BaseModelPath = EmbeddedDefaults.BaseModelDirectory(),
    MessagesColumnName = ChatColumns.Messages,                    // conversations, rendered with the model's chat template
    TargetModules = ["all-linear"], AxisCount = 4,
    Epochs = quick ? 1 : 2, BatchSize = 16, LearningRate = 3e-3, WarmupRatio = 0.06, MaxSequenceLength = 96, Seed = 1,
    Progress = progress,
};
var clock = Stopwatch.StartNew();
var modelPath = Path.Combine(outDir, "model.zip");
using (var fitted = ml.Transforms.QuanTAFineTune(options).Fit(data))
{
    progress.Finish();
    Console.WriteLine($"QuanTA: {fitted.TrainableParameterCount:N0} trainable parameters, fit {clock.Elapsed.TotalSeconds:F1} s, " +
                      $"final loss {fitted.TrainingLosses.LastOrDefault():F3}");
    ml.Model.SaveAtomically(fitted, data.Schema, modelPath);
}
Console.WriteLine($"Saved {modelPath}");

// ---- 3. chat through IChatClient (dependency injection, caching and logging middleware, streaming) ----
var services = new ServiceCollection()
    .AddLogging(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning))
    .AddDistributedMemoryCache();
services.AddChatClient(_ => QuanTAChatClient.FromSavedModel(modelPath, options: new QuanTAChatClientOptions { Device = gpu ? "cuda" : "cpu" }))
    .UseDistributedCache()
    .UseLogging();
using var provider = services.BuildServiceProvider();
var chat = provider.GetRequiredService<IChatClient>();

// One untimed request first: the first forward pass on a device pays one-time costs (kernel loading, allocator warm-up).
await chat.GetResponseAsync([new(ChatRole.User, "warm-up")], new ChatOptions { MaxOutputTokens = 2 });

var testWords = WordNetData.LoadDefinitions(WordNetSplit.Test).Take(testRows).Select(e => (Word: e.Prompt.TrimEnd(':'), Definition: e.Target.Trim()));
var firstTokenMs = new List<double>(); double tokens = 0, seconds = 0;
Console.WriteLine();
foreach (var (word, reference) in testWords)
{
    List<ChatMessage> conversation = [new(ChatRole.System, SystemPrompt), new(ChatRole.User, word)];
    Console.Write($"user: {word}\nassistant:");
    var sw = Stopwatch.StartNew();
    double? first = null;
    UsageDetails? usage = null;
    await foreach (var update in chat.GetStreamingResponseAsync(conversation, new ChatOptions { MaxOutputTokens = 24 }))
    {
        if (first is null && update.Text.Length > 0) first = sw.Elapsed.TotalMilliseconds;
        Console.Write(update.Text);
        usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details ?? usage;
    }
    sw.Stop();
    Console.WriteLine($"\n   reference: {reference}");
    if (first is double f) firstTokenMs.Add(f);
    tokens += usage?.OutputTokenCount ?? 0; seconds += sw.Elapsed.TotalSeconds;
}
Console.WriteLine();
var device = chat.GetService<QuanTAChatClient>()?.Device ?? "?";
Console.WriteLine($"Streaming on {device}: first token {Median(firstTokenMs):F1} ms (median of {firstTokenMs.Count}), " +
                  $"{tokens / seconds:F1} tokens/s over {tokens:F0} tokens");
WriteAtomically(Path.Combine(outDir, "chat-stream.json"), [JsonSerializer.Serialize(new
{
    client = "QuanTAChatClient (streaming)", device, words = firstTokenMs.Count,
    first_token_ms_median = Median(firstTokenMs), tokens, tokens_per_s = tokens / seconds,
})]);

// The same question again is answered from the cache middleware, without running the model.
var cached = Stopwatch.StartNew();
var again = await chat.GetResponseAsync([new(ChatRole.System, SystemPrompt), new(ChatRole.User, "dog")], new ChatOptions { MaxOutputTokens = 24 });
var firstCall = cached.Elapsed.TotalMilliseconds; cached.Restart();
var fromCache = await chat.GetResponseAsync([new(ChatRole.System, SystemPrompt), new(ChatRole.User, "dog")], new ChatOptions { MaxOutputTokens = 24 });
Console.WriteLine($"dog → {again.Text} ({firstCall:F0} ms; again from the cache in {cached.Elapsed.TotalMilliseconds:F1} ms, same text: {again.Text == fromCache.Text})");

// Concurrency: one model answers one request at a time (requests queue on its lock), so four concurrent requests take
// about as long as four in a row and give the same answers. Measured on the client itself (the cache would answer repeats).
var direct = chat.GetService<QuanTAChatClient>()!;
var four = WordNetData.LoadDefinitions(WordNetSplit.Test).Skip(testRows).Take(4).Select(e => e.Prompt.TrimEnd(':')).ToList();
var ask = (string w) => direct.GetResponseAsync([new(ChatRole.System, SystemPrompt), new(ChatRole.User, w)], new ChatOptions { MaxOutputTokens = 24 });
var inRow = Stopwatch.StartNew();
var sequential = new List<string>();
foreach (var w in four) sequential.Add((await ask(w)).Text);
inRow.Stop();
var together = Stopwatch.StartNew();
var concurrent = await Task.WhenAll(four.Select(w => Task.Run(() => ask(w))));
together.Stop();
Console.WriteLine($"4 requests: one after another {inRow.Elapsed.TotalMilliseconds:F0} ms, all at once {together.Elapsed.TotalMilliseconds:F0} ms " +
                  $"(same answers: {sequential.SequenceEqual(concurrent.Select(r => r.Text))})");

static double Median(List<double> xs) => xs.Count == 0 ? double.NaN : xs.Order().ElementAt(xs.Count / 2);

// Every file the sample writes goes to a temporary file first, is flushed and renamed into place.
static void WriteAtomically(string path, IEnumerable<string> lines)
    => QuanTA.Core.Runtime.AtomicFile.WriteAllText(path, string.Concat(lines.Select(l => l + Environment.NewLine)));
