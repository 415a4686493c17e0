using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.MLNet.Engine;

/// <summary>The tokenizer operations the ML.NET layer needs (implemented over QuanTA.Core's <c>HfTokenizer</c>).</summary>
internal interface ITextTokenizer
{
    /// <summary>Token ids of <paramref name="text"/>; with special tokens as the checkpoint's tokenizer adds them (e.g. BOS).</summary>
    int[] Encode(string text, bool addSpecialTokens);
    /// <summary>Text of <paramref name="ids"/> (special tokens skipped).</summary>
    string Decode(IReadOnlyList<int> ids);
    /// <summary>Padding id.</summary>
    int PadId { get; }
    /// <summary>End-of-sequence id.</summary>
    int EosId { get; }
    /// <summary>Every id that ends a sequence (eos and generation_config.json's eos_token_id list).</summary>
    IReadOnlyList<int> EosIds { get; }
    /// <summary>True for a special token (skipped when decoding).</summary>
    bool IsSpecial(int id);
}

/// <summary>Sampling settings for generation.</summary>
internal sealed record GenerationSettings(int MaxNewTokens, bool Greedy, float Temperature, float TopP, IReadOnlyList<string> StopStrings, int Seed,
    double RepetitionPenalty = 1, double FrequencyPenalty = 0, double PresencePenalty = 0)
{
    /// <summary>Ids that end a row; null = the tokenizer's eos.</summary>
    public IReadOnlyList<int>? EosTokenIds { get; init; }
}

/// <summary>A loaded base model (implemented over QuanTA.Core's <c>LlamaForSequenceClassification</c> / <c>LlamaForCausalLM</c>).</summary>
internal interface ILanguageModel : IDisposable
{
    /// <summary>The TorchSharp module (adapters are injected into it; its state-dict keys are Hugging Face's).</summary>
    nn.Module Module { get; }

    /// <summary>Classification: logits [B, numLabels] pooled at each row's last non-pad token.
    /// Causal LM: logits [B, T, vocab]. <paramref name="inputIds"/> [B, T] int64, <paramref name="attentionMask"/> [B, T] int64 (1 = token).</summary>
    Tensor Forward(Tensor inputIds, Tensor attentionMask);

    /// <summary>Causal LM: the mean next-token loss over the labels that are not -100 (throws for a classifier).</summary>
    Tensor LanguageModelLoss(Tensor inputIds, Tensor attentionMask, Tensor labels);

    /// <summary>Outputs of the classification head, or null for a causal LM.</summary>
    int? NumLabels { get; }

    /// <summary>Generated continuation text for each prompt (causal LM only, batched); stops at EOS or MaxNewTokens
    /// (stop strings are cut by the caller).</summary>
    string[] Generate(IReadOnlyList<int[]> prompts, GenerationSettings settings, ITextTokenizer tokenizer);

    /// <summary>A streaming text generator over this causal LM (throws for a classifier).</summary>
    QuanTA.Core.Generation.TextGenerator CreateGenerator(ITextTokenizer tokenizer);
}
