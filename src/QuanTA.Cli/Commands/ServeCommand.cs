using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;
using QuanTA.MLNet.Chat;
using QuanTA.Serving;

namespace QuanTA.Cli.Commands;

/// <summary>
/// <c>quanta serve</c>: an OpenAI-compatible HTTP endpoint (<c>POST /v1/chat/completions</c> with streaming, <c>GET /v1/models</c>,
/// <c>/health</c>) over a fine-tuned model .zip or a Hugging Face model folder, through <see cref="QuanTAChatClient"/>.
/// </summary>
public static class ServeCommand
{
    /// <summary>Builds the verb.</summary>
    public static Command Create()
    {
        var c = new QuanTAChatClientOptions();
        var s = new OpenAIServerOptions();
        var model = new Option<string>("--model") { Description = "A model .zip written by 'quanta finetune', or a Hugging Face model folder (with --adapter for an exported adapter).", Required = true };
        var adapter = ModelFolder.AdapterOption();
        var baseModel = new Option<string?>("--base-model") { Description = "For a .zip: where its base model folder is now, when it moved since training." };
        var host = new Option<string>("--host") { Description = "Address to listen on: an IP address, localhost, or * for every interface (then set --api-key).", DefaultValueFactory = _ => s.Host };
        var port = new Option<int>("--port") { Description = "TCP port (0 picks a free one; the address is printed).", DefaultValueFactory = _ => s.Port };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer <key>' on /v1 requests (default: the QUANTA_API_KEY environment variable; none when unset)." };
        var modelId = new Option<string?>("--model-id") { Description = "The model id clients send and see (default: the .zip or folder name)." };
        var template = new Option<string?>("--chat-template") { Description = "Chat template: a built-in name (llama2, llama3, mistral, chatml, qwen2), a .jinja file or the template text (default: the model's own)." };
        var maxTokens = new Option<int>("--max-tokens-limit") { Description = "Largest max_tokens a request may ask for.", DefaultValueFactory = _ => s.MaxTokensLimit };
        var defaultTokens = new Option<int>("--default-max-tokens") { Description = "max_tokens when a request sets none.", DefaultValueFactory = _ => c.DefaultMaxOutputTokens };
        var maxBytes = new Option<long>("--max-request-bytes") { Description = "Largest request body (larger: 413).", DefaultValueFactory = _ => s.MaxRequestBytes };
        var context = new Option<int?>("--max-context") { Description = "Prompt + answer token budget (default: config.json max_position_embeddings); older exchanges are dropped beyond it." };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N.", DefaultValueFactory = _ => c.Device };
        var dtype = new Option<string?>("--dtype") { Description = "For a model folder: fp32, fp16 or bf16 (default: fp32 on CPU, bf16 on CUDA)." };

        var cmd = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API (chat completions, streaming) on localhost.")
        {
            model, adapter, baseModel, host, port, apiKey, modelId, template, maxTokens, defaultTokens, maxBytes, context, device, dtype,
        };
        cmd.SetAction(r => CliRun.Run(() =>
        {
            var path = r.GetValue(model)!;
            var clientOptions = new QuanTAChatClientOptions
            {
                ChatTemplate = r.GetValue(template), DefaultMaxOutputTokens = r.GetValue(defaultTokens), MaxContextTokens = r.GetValue(context),
                ModelId = r.GetValue(modelId), Device = r.GetValue(device)!, DType = r.GetValue(dtype),
            };
            var serverOptions = new OpenAIServerOptions
            {
                Host = r.GetValue(host)!, Port = r.GetValue(port),
                ApiKey = r.GetValue(apiKey) ?? NullIfEmpty(Environment.GetEnvironmentVariable("QUANTA_API_KEY")),
                MaxTokensLimit = r.GetValue(maxTokens), DefaultMaxTokens = r.GetValue(defaultTokens), MaxRequestBytes = r.GetValue(maxBytes),
            };
            if (serverOptions.Host is "*" or "0.0.0.0" or "::" && serverOptions.ApiKey is null)
                Console.Error.WriteLine("warning: listening on every interface without --api-key: anyone who reaches this machine can use the model.");
            using var client = ModelFolder.IsSavedModel(path)
                ? (r.GetValue(adapter) is null ? QuanTAChatClient.FromSavedModel(path, r.GetValue(baseModel), clientOptions)
                    : throw new ArgumentException("--adapter applies to a model folder; a model .zip carries its own adapter."))
                : Directory.Exists(path) ? QuanTAChatClient.FromModelFolder(path, r.GetValue(adapter), clientOptions)
                : throw new FileNotFoundException($"--model '{path}' is neither a model .zip nor a model folder.");
            serverOptions.ModelId = client.ModelId;

            using var stop = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; stop.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try
            {
                var app = OpenAIServer.StartAsync(client, serverOptions, stop.Token).GetAwaiter().GetResult();
                try
                {
                    // One line on stdout that scripts and tests read: the base URL of the API.
                    Console.Out.WriteLine($"{app.GetBaseAddress()}v1");
                    Console.Out.Flush();
                    Console.Error.WriteLine($"serving '{client.ModelId}' (OpenAI-compatible: POST /v1/chat/completions, GET /v1/models, /health); Ctrl+C stops");
                    app.WaitForShutdownAsync(stop.Token).GetAwaiter().GetResult();
                }
                finally { app.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            }
            finally { Console.CancelKeyPress -= onCancel; }
            return 0;
        }));
        return cmd;
    }

    static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;
}
