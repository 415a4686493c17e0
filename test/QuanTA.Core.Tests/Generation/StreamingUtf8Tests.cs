using QuanTA.Core.Generation;
using QuanTA.Core.Models;
using QuanTA.Core.Tests.Models;
using QuanTA.Core.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Generation;

/// <summary>
/// Streaming never splits a character: with a byte-level tokenizer an emoji is four byte tokens, and a piece must not
/// end inside it (no U+FFFD, no lone surrogate) while the pieces still add up to the whole text. A scripted model makes
/// the generated ids exact.
/// </summary>
public class StreamingUtf8Tests
{
    /// <summary>A causal LM whose greedy choice at each step is the next id of a script (no KV cache: the whole sequence
    /// comes in every step, so its length says which step it is).</summary>
    sealed class ScriptedLM : CausalLM
    {
        readonly long[] _script;
        readonly int _promptLength, _vocab;
        readonly TorchSharp.Modules.Parameter _anchor = new(zeros(1));   // gives the module a device

        public ScriptedLM(HfModelConfig config, long[] script, int promptLength) : base(nameof(ScriptedLM), config)
        {
            _script = script; _promptLength = promptLength; _vocab = config.VocabSize;
            register_parameter("anchor", _anchor);
        }

        public override Tensor forward(Tensor inputIds, Tensor? attentionMask, Tensor? positionIds = null, KVCache? cache = null, bool lastTokenOnly = false)
        {
            var step = (int)inputIds.shape[1] - _promptLength;
            var logits = zeros(inputIds.shape[0], lastTokenOnly ? 1 : inputIds.shape[1], _vocab);          // (B, T', V)
            logits[.., -1, _script[Math.Min(step, _script.Length - 1)]] = tensor(10f);
            return logits;
        }
    }

    [Fact]
    public void MultiByteCharactersArriveWhole()
    {
        var dir = Fixture.Dir("llama-tiny");
        var tok = HfTokenizer.FromPretrained(dir);
        const string text = "a😀b é😀";
        var ids = tok.Encode(text, addSpecialTokens: false);
        Assert.True(ids.Length >= 8, $"the emoji should be several byte tokens; got {ids.Length} ids");
        var prompt = tok.Encode("x", addSpecialTokens: true).Select(i => (long)i).ToArray();
        var script = ids.Select(i => (long)i).Append(tok.EosId!.Value).ToArray();
        using var model = new ScriptedLM(HfModelConfig.Load(dir), script, prompt.Length);
        var generator = new TextGenerator(model, new Codec(tok));
        var pieces = generator.Stream(prompt, new GenerationOptions { MaxNewTokens = 40, UseCache = false, EosTokenIds = [tok.EosId!.Value] }).ToList();

        Assert.Equal(text, string.Concat(pieces));
        Assert.All(pieces, p =>
        {
            Assert.DoesNotContain('\uFFFD', p);
            Assert.False(char.IsHighSurrogate(p[^1]), $"piece '{p}' ends inside a surrogate pair");
            Assert.False(char.IsLowSurrogate(p[0]), $"piece '{p}' starts inside a surrogate pair");
        });
        Assert.True(pieces.Count >= 4, $"expected several pieces, got {pieces.Count}");
        Assert.Equal(GenerationFinishReason.EndOfSequence, generator.LastFinishReason);
        Assert.Equal(script.Length, generator.LastTokenCount);
    }

    sealed class Codec(HfTokenizer tok) : ITextCodec
    {
        public IReadOnlyList<int> Encode(string text) => tok.Encode(text, addSpecialTokens: true);
        public string Decode(IReadOnlyList<int> ids) => tok.Decode(ids, skipSpecialTokens: true);
    }
}
