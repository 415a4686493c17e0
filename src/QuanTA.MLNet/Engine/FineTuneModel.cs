using QuanTA.Core.Chat;
using QuanTA.Core.Training;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.MLNet.Engine;

/// <summary>One tokenized row: ids (prompt then target for generation) and how many leading ids carry no loss; a chat row
/// instead carries a per-token <paramref name="LossMask"/> (true on the tokens of every assistant turn).</summary>
internal readonly record struct EncodedRow(int[] Ids, int PromptLength, bool Truncated, bool[]? LossMask = null);

/// <summary>
/// The torch side of the ML.NET transformer, independent of ML.NET: a base model with adapters injected, its tokenizer,
/// tokenization with the truncation policy, the two losses (classification cross-entropy; causal-LM loss on target tokens
/// only), batched inference, merge for inference and (de)serialisation of the trained state.
/// </summary>
internal sealed class FineTuneModel : IDisposable
{
    readonly ILanguageModel _lm;
    readonly HashSet<string> _baseKeys;
    readonly int[][]? _verbalized;   // Verbalizer mode: the token ids of " {class name}" per class
    readonly Lazy<ConversationEncoder> _chat;   // chat template + tokenizer, loaded on first use (chat rows, chat client)

    FineTuneModel(ILanguageModel lm, ITextTokenizer tokenizer, QuanTATask task, int numClasses, Device device, int maxLen,
        InjectionSummary injection, HashSet<string> baseKeys, int[][]? verbalized)
    {
        _lm = lm; Tokenizer = tokenizer; Task = task; NumClasses = numClasses; Device = device; MaxSequenceLength = maxLen;
        Injection = injection; _baseKeys = baseKeys; _verbalized = verbalized;
        _chat = new Lazy<ConversationEncoder>(() => new ConversationEncoder(tokenizer,
            Core.Chat.ChatTemplate.FromModelFolder(BaseModelPath, ChatTemplateOverride), maxLen));
    }

    /// <summary>The base model folder.</summary>
    public string BaseModelPath { get; private init; } = "";
    /// <summary><see cref="QuanTAFineTuneOptions.ChatTemplate"/>.</summary>
    public string? ChatTemplateOverride { get; private init; }
    /// <summary>True when generation rows are conversations (<see cref="QuanTAFineTuneOptions.MessagesColumnName"/>).</summary>
    public bool IsChat { get; private init; }

    /// <summary>The chat encoder (template loaded on first use; throws naming the folder when the model has no template).</summary>
    public ConversationEncoder Chat => _chat.Value;

    /// <summary>The ids that end an answer: eos and generation_config.json's eos list, and for chat models the special token
    /// that ends an assistant turn in the chat template (<c>&lt;|eot_id|&gt;</c>, <c>&lt;|im_end|&gt;</c>, …).</summary>
    public IReadOnlyList<int> StopTokenIds => _stopIds ??= IsChat ? ChatStopIds(Tokenizer, Chat.Template) : [.. Tokenizer.EosIds.Prepend(Tokenizer.EosId).Distinct()];
    IReadOnlyList<int>? _stopIds;

    /// <summary>eos ids plus the special tokens of <paramref name="template"/>'s end-of-turn text.</summary>
    public static IReadOnlyList<int> ChatStopIds(ITextTokenizer tokenizer, ChatTemplate template) =>
        tokenizer.EosIds.Prepend(tokenizer.EosId)
            .Concat(tokenizer.Encode(template.AssistantTurnSuffix, addSpecialTokens: false).Where(tokenizer.IsSpecial))
            .Distinct().ToArray();

    /// <summary>A text generator over the causal LM (the caller serializes its use with the transformer's lock).</summary>
    public Core.Generation.TextGenerator CreateGenerator() => _lm.CreateGenerator(Tokenizer);

    /// <summary>True when classes are scored by a causal LM as verbalized answers rather than by a classification head.</summary>
    public bool IsVerbalizer => _verbalized is not null;

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

    /// <summary>Loads the base model, checks the head against <paramref name="numClasses"/> (or, in Verbalizer mode, tokenizes the
    /// <paramref name="classNames"/>), injects adapters with a fixed seed and (head mode) makes the head trainable.</summary>
    public static FineTuneModel Create(QuanTAFineTuneOptions options, int numClasses, Device device, int seed,
        IReadOnlyList<string>? classNames = null, Action<string>? log = null)
    {
        bool classification = options.Task == QuanTATask.TextClassification;
        bool verbalizer = classification && options.ClassificationMode == ClassificationMode.Verbalizer;
        var (lm, tokenizer) = CoreBackend.Load(options.BaseModelPath, verbalizer ? QuanTATask.TextGeneration : options.Task, device, numClasses, log,
            options.BaseQuantization);
        try
        {
            int[][]? verbalized = null;
            if (classification && numClasses < 2) throw new ArgumentException(numClasses == 0
                ? $"Classification needs at least 2 classes; the label column '{options.LabelColumnName}' has none (no training rows?). " +
                  "Give the training data rows of at least 2 classes, or set QuanTAFineTuneOptions.LabelColumnName to the column that holds them."
                : $"Classification needs at least 2 classes; the label column '{options.LabelColumnName}' has {numClasses}. " +
                  "Give the training data rows of at least 2 classes, or set QuanTAFineTuneOptions.LabelColumnName to the column that holds them.",
                nameof(QuanTAFineTuneOptions.LabelColumnName));
            if (verbalizer)
            {
                if (classNames is null || classNames.Count != numClasses)
                    throw new ArgumentException("ClassificationMode.Verbalizer needs class names: the label column must carry key values " +
                        "(MapValueToKey over a text column).");
                verbalized = classNames.Select(n => tokenizer.Encode(" " + n.Trim(), addSpecialTokens: false)).ToArray();
                var empty = classNames.Where((n, i) => verbalized[i].Length == 0).FirstOrDefault();
                if (empty is not null) throw new ArgumentException($"Class name '{empty}' has no tokens to score.");
            }
            else if (classification)
            {
                int head = lm.NumLabels ?? throw new ArgumentException(
                    $"The base model in '{options.BaseModelPath}' has no classification head; use a …ForSequenceClassification checkpoint " +
                    "(config.json \"architectures\") or ClassificationMode.Verbalizer with a causal LM.");
                if (numClasses > head)
                    throw new ArgumentException($"The label column has {numClasses} classes but the base model's classification head " +
                        $"in '{options.BaseModelPath}' has only {head} outputs (config.json num_labels/id2label).");
            }
            var baseKeys = lm.Module.state_dict().Keys.ToHashSet();
            torch.manual_seed(seed);
            var injection = CoreBackend.Inject(lm.Module, options, seed);
            if (options.InitialAdapterPath is { } init)
            {
                try { QuanTA.Core.Export.PeftAdapterFolder.InitializeFrom(lm.Module, init); }
                catch (Exception e) when (e is InvalidDataException or FileNotFoundException or NotSupportedException)
                {
                    throw new InvalidDataException($"{nameof(QuanTAFineTuneOptions.InitialAdapterPath)} (CLI --init-adapter): {e.Message}", e);
                }
                log?.Invoke($"Adapters start from the PEFT folder '{init}'.");
            }
            if (classification && !verbalizer)
            {
                foreach (var (name, p) in lm.Module.named_parameters())
                    if (name.StartsWith("score.", StringComparison.Ordinal)) p.requires_grad = true;   // PEFT SEQ_CLS: head trained too
                injection = injection with { TrainableParameters = lm.Module.parameters().Where(p => p.requires_grad).Sum(p => p.numel()) };
            }
            lm.Module.eval();
            var model = new FineTuneModel(lm, tokenizer, options.Task, classification ? numClasses : 0,
                device, options.MaxSequenceLength, injection, baseKeys, verbalized)
            { BaseModelPath = options.BaseModelPath, ChatTemplateOverride = options.ChatTemplate, IsChat = options.IsChat };
            if (model.IsChat) _ = model.Chat;   // fail before training when the template is missing or does not parse
            return model;
        }
        catch
        {
            lm.Dispose();
            throw;
        }
    }

    // ---------------------------------------------------------------- tokenization

    /// <summary>Classification input: text (+ newline + second text), truncated on the right to the budget. Verbalizer mode:
    /// the prompt only, cut from the left to leave room for the longest class name.</summary>
    public EncodedRow EncodeClassification(string text, string? secondText)
    {
        if (_verbalized is not null)
        {
            var p = Tokenizer.Encode(Join(text, secondText), addSpecialTokens: true);
            int room = MaxSequenceLength - _verbalized.Max(v => v.Length);
            return p.Length > room ? new EncodedRow(p[^room..], room, true) : new EncodedRow(p, p.Length, false);
        }
        var ids = Tokenizer.Encode(Join(text, secondText), addSpecialTokens: true);
        bool truncated = ids.Length > MaxSequenceLength;
        if (truncated) ids = ids[..MaxSequenceLength];
        return new EncodedRow(ids, 0, truncated);
    }

    static string Join(string text, string? second) => second is null ? text : text + "\n" + second;

    /// <summary>A training row: classification input (head mode), prompt + the label's verbalization (verbalizer mode) or
    /// prompt + target (generation).</summary>
    public EncodedRow EncodeTraining(string text, string? secondText, int label, string? target)
    {
        if (Task == QuanTATask.TextGeneration)
            return IsChat ? Chat.EncodeForTraining(ChatJson.Parse(text)) : EncodeGeneration(text, target);
        var e = EncodeClassification(text, secondText);
        return _verbalized is null ? e : e with { Ids = [.. e.Ids, .. _verbalized[label]] };
    }

    /// <summary>The training loss of a batch in the model's mode (caller owns the dispose scope).</summary>
    public Tensor TrainingLoss(IReadOnlyList<EncodedRow> rows, IReadOnlyList<int> labels) =>
        Task == QuanTATask.TextClassification && _verbalized is null ? ClassificationLoss(rows, labels) : LanguageModelLoss(rows);

    /// <summary>An inference prompt for generation: the prompt text, or (chat rows) the conversation up to its last assistant
    /// turn rendered with the generation prompt.</summary>
    public EncodedRow EncodePrompt(string text) => IsChat ? Chat.EncodePrompt(ChatJson.Parse(text), dropTrailingAssistant: true) : EncodeGeneration(text, null);

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
        var labels = Labels(rows, ids, mask);                                              // (B, T), -100 on prompt/pad
        return _lm.LanguageModelLoss(ids, mask, labels);                                  // mean over target tokens; no (B, T, V) logits
    }

    /// <summary>Training labels: the ids where loss applies (after the prompt, or under a chat row's loss mask), else -100.</summary>
    Tensor Labels(IReadOnlyList<EncodedRow> rows, Tensor ids, Tensor mask)
    {
        if (rows.All(r => r.LossMask is null)) return Losses.PromptMaskedLabels(ids, mask, rows.Select(r => r.PromptLength).ToList());
        int t = (int)ids.shape[1];
        var labels = new long[rows.Count * t];
        Array.Fill(labels, Losses.IgnoreIndex);
        for (int i = 0; i < rows.Count; i++)
        {
            var r = rows[i];
            for (int j = 0; j < r.Ids.Length; j++)
                if (r.LossMask is { } m ? m[j] : j >= r.PromptLength) labels[i * t + j] = r.Ids[j];
        }
        return torch.tensor(labels, [rows.Count, t], device: Device);
    }

    /// <summary>Per row: mean log-probability of the tokens after the prompt. Returns (N,) fp32.</summary>
    Tensor MeanTargetLogProb(IReadOnlyList<EncodedRow> rows)
    {
        var (ids, mask) = Collate(rows);
        var labels = Labels(rows, ids, mask)[.., 1..];                                    // (N, T-1)
        var logp = nn.functional.log_softmax(_lm.Forward(ids, mask)[.., ..^1, ..].to_type(ScalarType.Float32), -1); // (N, T-1, V)
        var keep = labels.ne(Losses.IgnoreIndex);                                         // (N, T-1)
        var picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1);      // (N, T-1)
        return (picked * keep).sum(1) / keep.sum(1).clamp_min(1);                         // (N,)
    }

    Tensor ClassLogits(Tensor ids, Tensor mask)
    {
        var logits = _lm.Forward(ids, mask).to_type(ScalarType.Float32);                 // (B, head)
        return logits.shape[^1] == NumClasses ? logits : logits[.., ..NumClasses];       // (B, C)
    }

    // ---------------------------------------------------------------- inference

    /// <summary>Softmax class probabilities for each row: of the head's logits, or (verbalizer) of each class name's mean
    /// token log-probability after the prompt (the paper's commonsense scoring).</summary>
    public float[][] ClassProbabilities(IReadOnlyList<EncodedRow> rows)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        Tensor scores;                                                                    // (B, C)
        if (_verbalized is null)
        {
            var (ids, mask) = Collate(rows);
            scores = ClassLogits(ids, mask);
        }
        else
        {
            var candidates = rows.SelectMany(r => _verbalized.Select(v => new EncodedRow([.. r.Ids, .. v], r.PromptLength, r.Truncated))).ToList();
            scores = MeanTargetLogProb(candidates).reshape(rows.Count, NumClasses);
        }
        var probs = nn.functional.softmax(scores, -1).cpu();                              // (B, C)
        var flat = probs.data<float>().ToArray();
        return Enumerable.Range(0, rows.Count).Select(i => flat.AsSpan(i * NumClasses, NumClasses).ToArray()).ToArray();
    }

    /// <summary>Generated continuation texts for a batch of encoded prompts, each cut before its first stop string.</summary>
    public string[] Generate(IReadOnlyList<EncodedRow> prompts, GenerationSettings settings)
    {
        using var _ = torch.no_grad();
        var texts = _lm.Generate(prompts.Select(p => p.Ids).ToList(), settings with { EosTokenIds = StopTokenIds }, Tokenizer);
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
        long tokens = rows.Sum(r => r.LossMask is { } m ? m.Skip(1).LongCount(x => x) : r.Ids.Length - Math.Max(r.PromptLength, 1));
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
        var saved = QuanTA.Core.Models.SafetensorsReader.Read(ms, "the model's QuanTA adapter state");
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
