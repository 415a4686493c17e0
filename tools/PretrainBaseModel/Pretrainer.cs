using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using QuanTA.Core.Models;
using QuanTA.Core.Models.Llama;
using QuanTA.Core.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace QuanTA.Tools.PretrainBaseModel;

/// <summary>
/// Full pre-training of every parameter of a freshly initialised <see cref="LlamaForCausalLM"/> (the project's own
/// backbone) on packed WordNet gloss lines, and saving in Hugging Face layout: config.json (model_type llama),
/// generation_config.json, model.safetensors.
/// </summary>
public sealed class Pretrainer(PretrainOptions o, TextWriter log)
{
    int _steps = o.Steps; // lowered to fit --minutes
    /// <summary>config.json of the model to train, transformers-4 layout (top-level rope_theta), readable by both 4.x and 5.x.</summary>
    public JsonObject ConfigJson(int vocabSize) => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["attention_bias"] = false,
        ["attention_dropout"] = 0.0,
        ["bos_token_id"] = TokenData.EndOfText,
        ["eos_token_id"] = TokenData.EndOfText,
        ["pad_token_id"] = TokenData.Pad,
        ["head_dim"] = o.Hidden / o.Heads,
        ["hidden_act"] = "silu",
        ["hidden_size"] = o.Hidden,
        ["initializer_range"] = 0.02,
        ["intermediate_size"] = o.Intermediate,
        ["max_position_embeddings"] = o.Context,
        ["mlp_bias"] = false,
        ["num_attention_heads"] = o.Heads,
        ["num_hidden_layers"] = o.Layers,
        ["num_key_value_heads"] = o.KvHeads,
        ["pretraining_tp"] = 1,
        ["rms_norm_eps"] = 1e-6,
        ["rope_scaling"] = null,
        ["rope_theta"] = 10000.0,
        ["tie_word_embeddings"] = false,
        ["torch_dtype"] = o.SaveDtype,
        ["use_cache"] = true,
        ["vocab_size"] = vocabSize,
    };

    /// <summary>Builds the model from <paramref name="config"/> and initialises it like transformers' LlamaPreTrainedModel
    /// (normal(0, initializer_range) for matrices and embeddings, ones for RMSNorm weights); every parameter trainable.</summary>
    public static LlamaForCausalLM Create(HfModelConfig config, int seed, Device device)
    {
        manual_seed(seed);
        var model = new LlamaForCausalLM(config, ScalarType.Float32, device);
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            if (!name.EndsWith("norm.weight", StringComparison.Ordinal)) p.normal_(0, config.InitializerRange);
            p.requires_grad = true;
        }
        model.train();
        return model;
    }

    /// <summary>Loads <paramref name="dir"/> through <see cref="LlamaForCausalLM.FromPretrained"/> (fp32) to continue training it;
    /// its config must match <paramref name="config"/>.</summary>
    public static LlamaForCausalLM Continue(string dir, HfModelConfig config, int seed, Device device)
    {
        manual_seed(seed);
        var model = LlamaForCausalLM.FromPretrained(dir, ScalarType.Float32, device);
        if (model.Config with { } != config with { EosTokenIds = model.Config.EosTokenIds })
            throw new ArgumentException($"--init-from '{dir}' has another shape than the options ask for: {model.Config} vs {config}.");
        foreach (var p in model.parameters()) p.requires_grad = true;
        model.train();
        return model;
    }

    /// <summary>Runs the training loop; returns a summary (also written as pretraining.json next to the model).</summary>
    public JsonObject Train(LlamaForCausalLM model, Tensor trainBlocks, IReadOnlyList<int[]> validationLines)
    {
        var decay = model.named_parameters().Where(p => p.parameter.dim() >= 2).Select(p => p.parameter).ToList();
        var noDecay = model.named_parameters().Where(p => p.parameter.dim() < 2).Select(p => p.parameter).ToList();
        var optimizer = optim.AdamW(
        [
            new AdamW.ParamGroup(decay, new AdamW.Options { weight_decay = o.WeightDecay }),
            new AdamW.ParamGroup(noDecay, new AdamW.Options { weight_decay = 0 }),
        ], lr: o.Lr, beta1: 0.9, beta2: 0.95);

        long nBlocks = trainBlocks.shape[0];
        var rng = new Random(o.Seed);
        var order = Enumerable.Range(0, (int)nBlocks).ToArray();
        rng.Shuffle(order);
        int cursor = 0, epoch = 0;
        var csv = new StreamWriter(Path.Combine(o.Out, "pretraining-log.csv")) { AutoFlush = true };
        csv.WriteLine("step,epoch,loss,lr,tokens_per_s,val_ppl");
        var sw = Stopwatch.StartNew();
        double emaLoss = double.NaN, lastValPpl = double.NaN, bestValPpl = double.PositiveInfinity;
        int bestStep = 0;
        long tokensSeen = 0;
        var recent = new Queue<double>();

        for (int step = 1; step <= _steps; step++)
        {
            if (o.Minutes > 0 && step > 10)
            {
                // fit the run into the budget (7% kept for evaluations), re-estimated every step as the machine's load changes
                double perStep = sw.Elapsed.TotalSeconds / (step - 1);
                int fit = step + (int)((o.Minutes * 60 * 0.93 - sw.Elapsed.TotalSeconds) / perStep);
                _steps = Math.Clamp(fit, step, o.Steps);
            }
            var lr = LearningRate(step);
            foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
            var idx = new long[o.Batch];
            for (int b = 0; b < o.Batch; b++)
            {
                if (cursor == order.Length) { cursor = 0; epoch++; rng.Shuffle(order); }
                idx[b] = order[cursor++];
            }
            double loss;
            using (var scope = NewDisposeScope())
            {
                var block = trainBlocks.index_select(0, tensor(idx)).to(model.Device); // (B, T+1)
                var x = block[.., ..^1];                                          // (B, T)
                var y = block[.., 1..];                                           // (B, T)
                var logits = model.forward(x, null);                              // (B, T, V)
                var l = nn.functional.cross_entropy(logits.view(-1, logits.shape[2]), y.reshape(-1));
                optimizer.zero_grad();
                l.backward();
                nn.utils.clip_grad_norm_(model.parameters(), o.ClipNorm);
                optimizer.step();
                loss = l.item<float>();
            }
            if (!double.IsFinite(loss)) throw new InvalidOperationException($"Loss became {loss} at step {step}; lower --lr.");
            tokensSeen += o.Batch * (trainBlocks.shape[1] - 1);
            emaLoss = double.IsNaN(emaLoss) ? loss : 0.95 * emaLoss + 0.05 * loss;
            recent.Enqueue(loss);
            if (recent.Count > 20) recent.Dequeue();

            double tps = tokensSeen / sw.Elapsed.TotalSeconds;
            bool evalNow = step % o.EvalEvery == 0 || step == _steps;
            if (evalNow)
            {
                lastValPpl = Perplexity(model, validationLines.Take(o.EvalLines).ToList(), o.Context);
                if (lastValPpl < bestValPpl)
                {
                    bestValPpl = lastValPpl;
                    bestStep = step;
                    Save(model, o.Out);
                }
            }
            csv.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{step},{epoch},{loss:F4},{lr:E3},{tps:F0},{(evalNow ? lastValPpl.ToString("F3", CultureInfo.InvariantCulture) : "")}"));
            if (step % 10 == 0 || step == 1 || evalNow)
            {
                var eta = TimeSpan.FromSeconds(sw.Elapsed.TotalSeconds / step * (_steps - step));
                var val = evalNow ? string.Create(CultureInfo.InvariantCulture, $"  val ppl ({o.EvalLines} lines) {lastValPpl:F2}") : "";
                log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"step {step,5}/{_steps} epoch {epoch} loss {loss:F3} (ema {emaLoss:F3}) lr {lr:E2} {tps:F0} tok/s elapsed {sw.Elapsed:hh\\:mm\\:ss} eta {eta:hh\\:mm\\:ss}{val}"));
                log.Flush();
            }
        }
        csv.Dispose();
        optimizer.Dispose();
        return new JsonObject
        {
            ["steps"] = _steps,
            ["saved_step"] = bestStep,
            ["saved_step_val_ppl_subset"] = Math.Round(bestValPpl, 3),
            ["batch_sequences"] = o.Batch,
            ["context"] = o.Context,
            ["tokens_seen"] = tokensSeen,
            ["epochs"] = Math.Round((double)tokensSeen / (nBlocks * (trainBlocks.shape[1] - 1)), 3),
            ["train_seconds"] = Math.Round(sw.Elapsed.TotalSeconds, 1),
            ["final_train_loss_mean_last_20_steps"] = Math.Round(recent.Average(), 4),
        };
    }

    /// <summary>Linear warm-up to lr, then cosine decay to lr · MinLrRatio at the last step.</summary>
    public double LearningRate(int step)
    {
        if (step <= o.Warmup) return o.Lr * step / o.Warmup;
        double progress = Math.Min(1.0, (double)(step - o.Warmup) / Math.Max(1, _steps - o.Warmup));
        return o.Lr * (o.MinLrRatio + (1 - o.MinLrRatio) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }

    /// <summary>
    /// Per-token perplexity of <paramref name="lines"/>, each evaluated on its own as
    /// <c>&lt;|endoftext|&gt; line &lt;|endoftext|&gt;</c> (predicting every line token and the closing separator).
    /// </summary>
    public static double Perplexity(CausalLM model, IReadOnlyList<int[]> lines, int context, int batch = 64)
    {
        bool wasTraining = model.training;
        model.eval();
        double nll = 0;
        long count = 0;
        using (no_grad())
        {
            var sorted = lines.OrderBy(l => l.Length).ToList();
            for (int i = 0; i < sorted.Count; i += batch)
            {
                using var scope = NewDisposeScope();
                var (ids, mask, labels) = TokenData.EvalBatch(sorted.GetRange(i, Math.Min(batch, sorted.Count - i)), context);
                var dev = model.Device;
                labels = labels.to(dev);
                var logits = model.forward(ids.to(dev), mask.to(dev));                           // (B, T, V)
                var sum = nn.functional.cross_entropy(logits.view(-1, logits.shape[2]), labels.view(-1),
                    ignore_index: -100, reduction: nn.Reduction.Sum);
                nll += sum.item<float>();
                count += labels.ne(-100).sum().item<long>();
            }
        }
        if (wasTraining) model.train();
        return Math.Exp(nll / count);
    }

    /// <summary>Writes config.json, generation_config.json and model.safetensors (atomically) into <paramref name="dir"/>.</summary>
    public void Save(LlamaForCausalLM model, string dir)
    {
        Directory.CreateDirectory(dir);
        var json = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), ConfigJson(model.Config.VocabSize).ToJsonString(json) + "\n");
        AtomicFile.WriteAllText(Path.Combine(dir, "generation_config.json"), new JsonObject
        {
            ["bos_token_id"] = TokenData.EndOfText,
            ["eos_token_id"] = TokenData.EndOfText,
            ["pad_token_id"] = TokenData.Pad,
        }.ToJsonString(json) + "\n");
        var dtype = o.SaveDtype == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;
        using var scope = NewDisposeScope();
        var sd = new Dictionary<string, Tensor>();
        foreach (var (name, p) in model.named_parameters())
        {
            if (model.Config.TieWordEmbeddings && name == "lm_head.weight") continue;
            sd[name] = p.detach().to_type(dtype).cpu().contiguous();
        }
        AtomicFile.WriteViaPath(Path.Combine(dir, "model.safetensors"), tmp =>
        {
            Safetensors.SaveStateDict(tmp, sd);
            AddFormatMetadata(tmp);
        });
    }

    /// <summary>
    /// Adds <c>"__metadata__": {"format": "pt"}</c> to a safetensors header (as PyTorch's safetensors writes it; older
    /// transformers versions require it). Offsets are relative to the data section, so only the header changes; it is
    /// space-padded to a multiple of 8 bytes.
    /// </summary>
    public static void AddFormatMetadata(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);                                    // header length (little-endian)
        var header = JsonNode.Parse(System.Text.Encoding.UTF8.GetString(bytes, 8, (int)n))!.AsObject();
        if (header.ContainsKey("__metadata__")) return;
        var withMeta = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        foreach (var (k, v) in header.ToList()) { header.Remove(k); withMeta[k] = v; }
        var text = withMeta.ToJsonString();
        text += new string(' ', (8 - System.Text.Encoding.UTF8.GetByteCount(text) % 8) % 8);
        var newHeader = System.Text.Encoding.UTF8.GetBytes(text);
        AtomicFile.Write(path, f =>
        {
            f.Write(BitConverter.GetBytes((long)newHeader.Length));
            f.Write(newHeader);
            f.Write(bytes, 8 + (int)n, bytes.Length - 8 - (int)n);
        });
    }

    /// <summary>Greedy continuation (no cache; the model is tiny) of <paramref name="prompt"/> ids, up to the first separator.</summary>
    public static int[] Greedy(CausalLM model, IReadOnlyList<int> prompt, int maxNewTokens)
    {
        model.eval();
        var ids = new List<long> { TokenData.EndOfText };
        ids.AddRange(prompt.Select(i => (long)i));
        var generated = new List<int>();
        using var _ = no_grad();
        for (int i = 0; i < maxNewTokens && ids.Count < model.Config.MaxPositionEmbeddings; i++)
        {
            using var scope = NewDisposeScope();
            var logits = model.forward(tensor(ids.ToArray()).unsqueeze(0).to(model.Device), null, lastTokenOnly: true);  // (1, 1, V)
            var next = (int)logits[0, 0].argmax().item<long>();
            if (next == TokenData.EndOfText) break;
            generated.Add(next);
            ids.Add(next);
        }
        return generated.ToArray();
    }
}
