using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.MLNet.Engine;

/// <summary>One tokenized row: ids (prompt then target for generation) and how many leading ids carry no loss.</summary>
internal readonly record struct EncodedRow(int[] Ids, int PromptLength, bool Truncated);

/// <summary>
/// The torch side of the ML.NET transformer, independent of ML.NET: a base model with adapters injected, its tokenizer,
/// tokenization with the truncation policy, the two losses (classification cross-entropy; causal-LM loss on target tokens
/// only), batched inference, merge for inference and (de)serialisation of the trained state.
/// </summary>
internal sealed class FineTuneModel : IDisposable
{
    readonly ILanguageModel _lm;
    readonly HashSet<string> _baseKeys;

    FineTuneModel(ILanguageModel lm, ITextTokenizer tokenizer, QuanTATask task, int numClasses, Device device, int maxLen,
        InjectionSummary injection, HashSet<string> baseKeys)
    {
        _lm = lm; Tokenizer = tokenizer; Task = task; NumClasses = numClasses; Device = device; MaxSequenceLength = maxLen;
        Injection = injection; _baseKeys = baseKeys;
    }

    /// <summary>The task.</summary>
    public QuanTATask Task { get; }
    /// <summary>Classes used (≤ the head's outputs); 0 for generation.</summary>
    public int NumClasses { get; }
    /// <summary>The device the model lives on.</summary>
    public Device Device { get; }
    /// <summary>Token budget per row.</summary>
    public int MaxSequenceLength { get; }
    /// <summary>The tokenizer.</summary>
    public ITextTokenizer Tokenizer { get; }
    /// <summary>What injection did.</summary>
    public InjectionSummary Injection { get; }
    /// <summary>The underlying module.</summary>
    public nn.Module Module => _lm.Module;
    /// <summary>True while adapters are folded into the base weights.</summary>
    public bool IsMerged { get; private set; }

    /// <summary>Loads the base model, checks the head against <paramref name="numClasses"/>, injects adapters with a fixed seed
    /// and (classification) makes the head trainable.</summary>
    public static FineTuneModel Create(QuanTAFineTuneOptions options, int numClasses, Device device, int seed)
    {
        var (lm, tokenizer) = CoreBackend.Load(options.BaseModelPath, options.Task, device);
        try
        {
            if (options.Task == QuanTATask.TextClassification)
            {
                int head = lm.NumLabels ?? throw new ArgumentException(
                    $"The base model in '{options.BaseModelPath}' has no classification head; text classification needs a " +
                    "…ForSequenceClassification checkpoint (config.json \"architectures\").");
                if (numClasses > head)
                    throw new ArgumentException($"The label column has {numClasses} classes but the base model's classification head " +
                        $"in '{options.BaseModelPath}' has only {head} outputs (config.json num_labels/id2label).");
                if (numClasses < 2) throw new ArgumentException($"Classification needs at least 2 classes; the label column has {numClasses}.");
            }
            var baseKeys = lm.Module.state_dict().Keys.ToHashSet();
            torch.manual_seed(seed);
            var injection = CoreBackend.Inject(lm.Module, options, seed);
            if (options.Task == QuanTATask.TextClassification)
            {
                foreach (var (name, p) in lm.Module.named_parameters())
                    if (name.StartsWith("score.", StringComparison.Ordinal)) p.requires_grad = true;   // PEFT SEQ_CLS: head trained too
                injection = injection with { TrainableParameters = lm.Module.parameters().Where(p => p.requires_grad).Sum(p => p.numel()) };
            }
            lm.Module.eval();
            return new FineTuneModel(lm, tokenizer, options.Task, options.Task == QuanTATask.TextClassification ? numClasses : 0,
                device, options.MaxSequenceLength, injection, baseKeys);
        }
        catch
        {
            lm.Dispose();
            throw;
        }
    }

    // ---------------------------------------------------------------- tokenization

    /// <summary>Classification input: text (+ newline + second text), truncated on the right to the budget.</summary>
    public EncodedRow EncodeClassification(string text, string? secondText)
    {
        var ids = Tokenizer.Encode(secondText is null ? text : text + "\n" + secondText, addSpecialTokens: true);
        bool truncated = ids.Length > MaxSequenceLength;
        if (truncated) ids = ids[..MaxSequenceLength];
        return new EncodedRow(ids, 0, truncated);
    }

    /// <summary>Generation input: prompt ids, then (training) target ids + EOS. Over budget, the prompt is cut from the left
    /// (the target is kept); a target alone over budget is cut on the right.</summary>
    public EncodedRow EncodeGeneration(string prompt, string? target)
    {
        var p = Tokenizer.Encode(prompt, addSpecialTokens: true);
        if (target is null)
        {
            int room = MaxSequenceLength - 1;   // leave room for at least one generated token
            return p.Length > room ? new EncodedRow(p[^room..], room, true) : new EncodedRow(p, p.Length, false);
        }
        var t = Tokenizer.Encode(target, addSpecialTokens: false).Append(Tokenizer.EosId).ToArray();
        bool truncated = false;
        if (t.Length >= MaxSequenceLength) { t = t[..(MaxSequenceLength - 1)]; truncated = true; }
        int keep = MaxSequenceLength - t.Length;
        if (p.Length > keep) { p = p[^keep..]; truncated = true; }
        return new EncodedRow([.. p, .. t], p.Length, truncated);
    }

    /// <summary>Right-pads a batch: input ids [B, T] and attention mask [B, T] (int64, on the device).</summary>
    (Tensor Ids, Tensor Mask) Collate(IReadOnlyList<EncodedRow> rows)
    {
        int b = rows.Count, t = rows.Max(r => r.Ids.Length);
        var ids = new long[b * t];
        var mask = new long[b * t];
        for (int i = 0; i < b; i++)
        {
            var r = rows[i].Ids;
            for (int j = 0; j < t; j++)
            {
                ids[i * t + j] = j < r.Length ? r[j] : Tokenizer.PadId;
                mask[i * t + j] = j < r.Length ? 1 : 0;
            }
        }
        return (torch.tensor(ids, [b, t], device: Device), torch.tensor(mask, [b, t], device: Device));
    }

    // ---------------------------------------------------------------- losses

    /// <summary>Mean cross-entropy of the class logits against 0-based labels. Caller owns the dispose scope.</summary>
    public Tensor ClassificationLoss(IReadOnlyList<EncodedRow> rows, IReadOnlyList<int> labels)
    {
        var (ids, mask) = Collate(rows);
        var logits = ClassLogits(ids, mask);                                             // (B, C)
        var target = torch.tensor(labels.Select(l => (long)l).ToArray(), device: Device);  // (B,)
        return Losses.Classification(logits, target);
    }

    /// <summary>Causal-LM loss averaged over target tokens only (prompt and padding labelled -100). Caller owns the scope.</summary>
    public Tensor LanguageModelLoss(IReadOnlyList<EncodedRow> rows)
    {
        var (ids, mask) = Collate(rows);
        var labels = Losses.PromptMaskedLabels(ids, mask, rows.Select(r => r.PromptLength).ToList());   // (B, T), -100 on prompt/pad
        var logits = _lm.Forward(ids, mask);                                              // (B, T, V)
        return Losses.CausalLM(logits, labels, out _);                                    // mean over target tokens
    }

    Tensor ClassLogits(Tensor ids, Tensor mask)
    {
        var logits = _lm.Forward(ids, mask).to_type(ScalarType.Float32);                 // (B, head)
        return logits.shape[^1] == NumClasses ? logits : logits[.., ..NumClasses];       // (B, C)
    }

    // ---------------------------------------------------------------- inference

    /// <summary>Softmax class probabilities for each row.</summary>
    public float[][] ClassProbabilities(IReadOnlyList<EncodedRow> rows)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var (ids, mask) = Collate(rows);
        var probs = nn.functional.softmax(ClassLogits(ids, mask), -1).cpu();             // (B, C)
        var flat = probs.data<float>().ToArray();
        return Enumerable.Range(0, rows.Count).Select(i => flat.AsSpan(i * NumClasses, NumClasses).ToArray()).ToArray();
    }

    /// <summary>Generated continuation texts for a batch of encoded prompts, each cut before its first stop string.</summary>
    public string[] Generate(IReadOnlyList<EncodedRow> prompts, GenerationSettings settings)
    {
        using var _ = torch.no_grad();
        var texts = _lm.Generate(prompts.Select(p => p.Ids).ToList(), settings, Tokenizer);
        return texts.Select(text =>
        {
            foreach (var stop in settings.StopStrings)
            {
                int at = stop.Length == 0 ? -1 : text.IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0) text = text[..at];
            }
            return text;
        }).ToArray();
    }

    /// <summary>Sum of target-token negative log-likelihood and the number of target tokens (for perplexity).</summary>
    public (double Nll, long Tokens) TargetNll(IReadOnlyList<EncodedRow> rows)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        long tokens = rows.Sum(r => (long)(r.Ids.Length - Math.Max(r.PromptLength, 1)));
        var mean = LanguageModelLoss(rows).item<float>();
        return (mean * tokens, tokens);
    }

    // ---------------------------------------------------------------- training state

    /// <summary>Parameters being trained (adapter tensors, plus the classification head).</summary>
    public IReadOnlyList<Parameter> TrainableParameters() =>
        Module.parameters().Where(p => p.requires_grad).ToList();

    /// <summary>Training mode (dropout on) or eval mode.</summary>
    public void SetTraining(bool training)
    {
        if (training) Module.train(); else Module.eval();
    }

    /// <summary>Folds adapters into the weights (inference) — idempotent.</summary>
    public void Merge()
    {
        if (IsMerged) return;
        CoreBackend.MergeAll(Module);
        IsMerged = true;
    }

    /// <summary>Restores the unmerged model (adapters computed on the side).</summary>
    public void Unmerge()
    {
        if (!IsMerged) return;
        CoreBackend.UnmergeAll(Module);
        IsMerged = false;
    }

    /// <summary>The trained state as safetensors bytes: every state-dict entry the base checkpoint does not have (adapter tensors
    /// and their frozen copies) plus every trainable parameter (the classification head). Saved unmerged.</summary>
    public byte[] SaveTrainedState()
    {
        bool wasMerged = IsMerged;
        Unmerge();
        try
        {
            var sd = Module.state_dict();
            var trainable = Module.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToHashSet();
            var dict = sd.Where(kv => !_baseKeys.Contains(kv.Key) || trainable.Contains(kv.Key))
                         .ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous());
            using var ms = new MemoryStream();
            Safetensors.SaveStateDict(ms, dict, leaveOpen: true);
            foreach (var t in dict.Values) t.Dispose();
            return ms.ToArray();
        }
        finally { if (wasMerged) Merge(); }
    }

    /// <summary>Restores <see cref="SaveTrainedState"/> output, refusing missing, unknown or mis-shaped tensors by name.</summary>
    public void LoadTrainedState(byte[] bytes)
    {
        Unmerge();
        using var ms = new MemoryStream(bytes);
        var saved = Safetensors.LoadStateDict(ms);
        try
        {
            var sd = Module.state_dict();
            var expected = sd.Keys.Where(k => !_baseKeys.Contains(k)).ToHashSet();
            foreach (var k in expected)
                if (!saved.ContainsKey(k)) throw new InvalidDataException($"The saved QuanTA state has no tensor '{k}' that the adapter configuration needs.");
            using var _ = torch.no_grad();
            foreach (var (k, v) in saved)
            {
                if (!sd.TryGetValue(k, out var target))
                    throw new InvalidDataException($"The saved QuanTA state has a tensor '{k}' that the rebuilt model does not have.");
                if (!target.shape.SequenceEqual(v.shape))
                    throw new InvalidDataException($"Saved tensor '{k}' has shape [{string.Join(",", v.shape)}] but the rebuilt model " +
                        $"expects [{string.Join(",", target.shape)}].");
                target.copy_(v);
            }
        }
        finally { foreach (var t in saved.Values) t.Dispose(); }
    }

    /// <inheritdoc/>
    public void Dispose() => _lm.Dispose();
}
