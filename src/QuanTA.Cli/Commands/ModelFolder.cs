using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;
using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using TorchSharp;

namespace QuanTA.Cli.Commands;

/// <summary>Shared by the model verbs: loading a model folder (weights + tokenizer) and one-line error handling.</summary>
internal static class ModelFolder
{
    /// <summary>Runs a verb body; any failure becomes one line on stderr and exit code 1.</summary>
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e)
        {
            Console.Error.WriteLine($"error: {Flatten(e)}");
            return 1;
        }
    }

    static string Flatten(Exception e) => (e is AggregateException { InnerException: { } inner } ? inner : e).Message.ReplaceLineEndings(" ");

    /// <summary>Parses --dtype (fp32, fp16, bf16) or returns null for the device default.</summary>
    public static torch.ScalarType? ParseDType(string? s) => s?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => null,
        "fp32" or "float32" => torch.ScalarType.Float32,
        "fp16" or "float16" => torch.ScalarType.Float16,
        "bf16" or "bfloat16" => torch.ScalarType.BFloat16,
        _ => throw new ArgumentException($"--dtype '{s}' is not one of fp32, fp16, bf16."),
    };

    /// <summary>Loads the causal LM and its tokenizer from a Hugging Face folder.</summary>
    public static (CausalLM Model, ITextCodec Codec) Load(string? dir, string device, string? dtype)
    {
        if (string.IsNullOrWhiteSpace(dir)) throw new ArgumentException("--model is required (a Hugging Face model folder).");
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"--model '{dir}' is not a directory.");
        TorchRuntime.Initialize();
        var dev = TorchRuntime.ParseDevice(device);
        var codec = BpeFolderCodec.Load(dir);
        var model = CausalLM.FromPretrained(dir, ParseDType(dtype), dev);
        return (model, codec);
    }
}

/// <summary>
/// Byte-level BPE tokenizer of a model folder (vocab.json + merges.txt) through Microsoft.ML.Tokenizers, adding bos
/// only when tokenizer_config.json says <c>add_bos_token: true</c>. A stop-gap until the library's own tokenizer lands.
/// </summary>
internal sealed class BpeFolderCodec : ITextCodec
{
    readonly CodeGenTokenizer _tok;
    readonly int? _bos;
    readonly HashSet<int> _special;

    BpeFolderCodec(CodeGenTokenizer tok, int? bos, HashSet<int> special) { _tok = tok; _bos = bos; _special = special; }

    public static BpeFolderCodec Load(string dir)
    {
        string vocab = Path.Combine(dir, "vocab.json"), merges = Path.Combine(dir, "merges.txt");
        if (!File.Exists(vocab) || !File.Exists(merges))
            throw new FileNotFoundException($"'{dir}' needs vocab.json and merges.txt (byte-level BPE) for this command.");
        using var v = File.OpenRead(vocab);
        using var m = File.OpenRead(merges);
        var tok = CodeGenTokenizer.Create(v, m, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
        var cfgPath = Path.Combine(dir, "tokenizer_config.json");
        var cfg = File.Exists(cfgPath) ? JsonNode.Parse(File.ReadAllText(cfgPath)) as JsonObject : null;
        var vocabMap = (JsonNode.Parse(File.ReadAllText(vocab)) as JsonObject)!;
        int? Id(string key) => cfg?[key] is JsonValue s && s.TryGetValue<string>(out var name) && vocabMap[name] is JsonValue id ? id.GetValue<int>() : null;
        var addBos = cfg?["add_bos_token"] is JsonValue b && b.TryGetValue<bool>(out var yes) && yes;
        var special = new[] { Id("bos_token"), Id("eos_token"), Id("pad_token"), Id("unk_token") }.OfType<int>().ToHashSet();
        var bos = addBos ? Id("bos_token") ?? throw new InvalidDataException($"{cfgPath}: add_bos_token is true but bos_token is not in the vocabulary.") : (int?)null;
        return new BpeFolderCodec(tok, bos, special);
    }

    public IReadOnlyList<int> Encode(string text)
    {
        var ids = _tok.EncodeToIds(text, addPrefixSpace: false, addBeginningOfSentence: false, addEndOfSentence: false);
        return _bos is int b ? [b, .. ids] : ids;
    }

    public string Decode(IReadOnlyList<int> ids) => _tok.Decode(ids.Where(i => !_special.Contains(i))) ?? "";
}
