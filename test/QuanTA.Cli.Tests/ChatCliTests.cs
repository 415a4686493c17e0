using System.ClientModel;
using System.ClientModel.Primitives;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using OpenAI;
using QuanTA.MLNet;
using QuanTA.MLNet.Chat;

namespace QuanTA.Cli.Tests;

/// <summary>
/// The chat path as a user types it: `quanta finetune` on a chat JSONL file, `quanta generate --model model.zip`, and
/// `quanta serve` answered through the official OpenAI .NET client (Microsoft.Extensions.AI.OpenAI), which must give the
/// same text as QuanTAChatClient called directly.
/// </summary>
public sealed class ChatCliTests : IDisposable
{
    const string Template =
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\\n' }}" +
        "{% elif m['role'] == 'user' %}{{ 'Q: ' + m['content'] + '\\n' }}{% else %}{{ 'A: ' + m['content'] + eos_token }}{% endif %}" +
        "{% endfor %}{% if add_generation_prompt %}{{ 'A:' }}{% endif %}";

    readonly string _dir = Directory.CreateTempSubdirectory("quanta-chat-cli-").FullName;

    string PathOf(string name) => Path.Combine(_dir, name);

    string TrainChatModel()
    {
        var pairs = new[] { ("cat", "animal"), ("rose", "flower"), ("oak", "tree"), ("car", "vehicle") };
        File.WriteAllLines(PathOf("chat.jsonl"), Enumerable.Range(0, 16).Select(i => JsonSerializer.Serialize(new
        {
            messages = new object[]
            {
                new { role = "user", content = pairs[i % 4].Item1 }, new { role = "assistant", content = pairs[i % 4].Item2 },
            },
        })));
        File.WriteAllText(PathOf("template.jinja"), Template);
        var (code, _, err) = QuantaProcess.Run("finetune", "--task", "generation", "--base-model", QuantaProcess.Dir("llama-tiny"),
            "--train", PathOf("chat.jsonl"), "--chat-template", PathOf("template.jinja"), "--output", PathOf("model.zip"),
            "--axis-layout", "8,4,4", "--target-modules", "q_proj,v_proj", "--epochs", "2", "--batch-size", "8", "--lr", "1e-2",
            "--max-seq-len", "32");
        Assert.True(code == 0, err);
        Assert.Contains("16 Messages examples, trained as conversations", err);
        File.Delete(PathOf("template.jinja"));          // the .zip carries the template's text, not the file name
        return PathOf("model.zip");
    }

    [Fact]
    public async Task FineTuneOnChatJsonlThenGenerateFromTheZip()
    {
        var zip = TrainChatModel();
        // --raw: the bare continuation, as the library gives it for the loaded .zip.
        var (code, stdout, err) = QuantaProcess.Run("generate", "--model", zip, "--prompt", "Q: cat\nA:", "--max-new-tokens", "5", "--stats", "--raw");
        Assert.True(code == 0, err);
        Assert.Contains("tokens/s", err);
        var ml = new Microsoft.ML.MLContext().RegisterQuanTA();
        using (var loaded = (QuanTA.MLNet.QuanTAFineTuneTransformer)ml.Model.Load(zip, out _))
            Assert.Equal(string.Concat(loaded.StreamGeneration("Q: cat\nA:", new QuanTA.Core.Generation.GenerationOptions { MaxNewTokens = 5 })), stdout);
        // Without --raw a chat model answers the prompt as a user message through its template: what the chat client says.
        (code, stdout, err) = QuantaProcess.Run("generate", "--model", zip, "--prompt", "rose", "--max-new-tokens", "6", "--stats");
        Assert.True(code == 0, err);
        Assert.Contains("chat template", err);
        Assert.Matches(@"\b[1-6] tokens in ", err);                                  // the chat client's usage count
        using (var direct = QuanTAChatClient.FromSavedModel(zip))
            Assert.Equal((await direct.GetResponseAsync([new ChatMessage(ChatRole.User, "rose")], new ChatOptions { MaxOutputTokens = 6, Temperature = 0 })).Text, stdout);
        // A malformed line is named with file and line, and nothing is written.
        File.WriteAllLines(PathOf("bad.jsonl"), ["{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"x\"}]}", "{\"messages\": [{\"content\": \"no role\"}]}"]);
        (code, _, err) = QuantaProcess.Run("finetune", "--task", "generation", "--base-model", QuantaProcess.Dir("llama-tiny"),
            "--train", PathOf("bad.jsonl"), "--chat-template", Template, "--output", PathOf("bad.zip"));
        Assert.Equal(1, code);
        Assert.Contains("bad.jsonl line 2", err);
        Assert.Contains("role", err);
        Assert.False(File.Exists(PathOf("bad.zip")));
    }

    [Fact]
    public void ValidationDataMustHaveTheTrainingLayout()
    {
        File.WriteAllLines(PathOf("chat.jsonl"), ["{\"messages\": [{\"role\": \"user\", \"content\": \"cat\"}, {\"role\": \"assistant\", \"content\": \"animal\"}]}"]);
        File.WriteAllLines(PathOf("pc.jsonl"), ["{\"prompt\": \"cat\", \"completion\": \" animal\"}"]);
        foreach (var (train, validation) in new[] { ("chat.jsonl", "pc.jsonl"), ("pc.jsonl", "chat.jsonl") })
        {
            var (code, _, err) = QuantaProcess.Run("finetune", "--task", "generation", "--base-model", QuantaProcess.Dir("llama-tiny"),
                "--train", PathOf(train), "--validation", PathOf(validation), "--chat-template", Template, "--output", PathOf("v.zip"));
            Assert.Equal(1, code);
            Assert.Contains("--validation", err);
            Assert.Contains("same layout", err);
        }
    }

    [Fact]
    public async Task ServeAnswersTheOpenAIClientLikeTheChatClientDirectly()
    {
        var zip = TrainChatModel();
        List<ChatMessage> question = [new(ChatRole.User, "rose")];
        string expected;
        using (var direct = QuanTAChatClient.FromSavedModel(zip))
            expected = (await direct.GetResponseAsync(question, new ChatOptions { MaxOutputTokens = 6 })).Text;

        using var server = StartServe(zip, "--port", "0", "--api-key", "sekret", "--model-id", "model");
        var baseUrl = await server.BaseUrl;
        var client = new OpenAI.Chat.ChatClient("model", new ApiKeyCredential("sekret"), new OpenAIClientOptions
        {
            Endpoint = new Uri(baseUrl), RetryPolicy = new ClientRetryPolicy(maxRetries: 0), NetworkTimeout = TimeSpan.FromSeconds(60),
        }).AsIChatClient();
        var response = await client.GetResponseAsync(question, new ChatOptions { MaxOutputTokens = 6 });
        Assert.Equal(expected, response.Text);
        var streamed = new StringBuilder();
        await foreach (var u in client.GetStreamingResponseAsync(question, new ChatOptions { MaxOutputTokens = 6 })) streamed.Append(u.Text);
        Assert.Equal(expected, streamed.ToString());

        using var http = new HttpClient { BaseAddress = new Uri(baseUrl.Replace("/v1", "/")) };
        Assert.Equal(System.Net.HttpStatusCode.OK, (await http.GetAsync("health")).StatusCode);
        var unauthorized = await http.PostAsync("v1/chat/completions", new StringContent("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.Unauthorized, unauthorized.StatusCode);
        Assert.Contains("\"error\"", await unauthorized.Content.ReadAsStringAsync());
    }

    /// <summary>`quanta serve` as a child process (the built quanta.dll next to the tests); its first stdout line is the API URL.</summary>
    ServeProcess StartServe(params string[] args)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "quanta.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        psi.ArgumentList.Add("serve");
        psi.ArgumentList.Add("--model");
        foreach (var a in args) psi.ArgumentList.Add(a);
        return new ServeProcess(Process.Start(psi)!);
    }

    sealed class ServeProcess : IDisposable
    {
        readonly Process _p;
        readonly StringBuilder _err = new();

        public ServeProcess(Process p)
        {
            _p = p;
            _p.ErrorDataReceived += (_, e) => { lock (_err) _err.AppendLine(e.Data); };
            _p.BeginErrorReadLine();
            BaseUrl = ReadUrl();
        }

        public Task<string> BaseUrl { get; }

        async Task<string> ReadUrl()
        {
            var line = _p.StandardOutput.ReadLineAsync();
            if (await Task.WhenAny(line, Task.Delay(TimeSpan.FromSeconds(90))) != line || line.Result is null)
                throw new TimeoutException($"quanta serve printed no URL; stderr: {Err()}");
            return line.Result;
        }

        string Err() { lock (_err) return _err.ToString(); }

        public void Dispose()
        {
            if (!_p.HasExited) _p.Kill(entireProcessTree: true);
            _p.WaitForExit(10_000);
            _p.Dispose();
        }
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
