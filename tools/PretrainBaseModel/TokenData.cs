using Microsoft.ML.Tokenizers;
using static TorchSharp.torch;

namespace QuanTA.Tools.PretrainBaseModel;

/// <summary>
/// Tokenized gloss lines. Training packs them GPT-style into one stream
/// <c>&lt;|endoftext|&gt; line &lt;|endoftext|&gt; line …</c> cut into blocks of context + 1 tokens; evaluation keeps
/// each line on its own (<c>&lt;|endoftext|&gt; line &lt;|endoftext|&gt;</c>, right-padded with &lt;|pad|&gt;).
/// </summary>
public sealed class TokenData
{
    /// <summary>id of &lt;|endoftext|&gt; (bos = eos).</summary>
    public const int EndOfText = 0;
    /// <summary>id of &lt;|pad|&gt;.</summary>
    public const int Pad = 1;

    /// <summary>One token-id array per line (without the separators).</summary>
    public IReadOnlyList<int[]> Lines { get; }

    TokenData(IReadOnlyList<int[]> lines) => Lines = lines;

    /// <summary>Total tokens including one separator per line.</summary>
    public long TokenCount => Lines.Sum(l => (long)l.Length + 1);

    /// <summary>Loads the byte-level BPE from vocab.json + merges.txt the way the test fixtures are read.</summary>
    public static Tokenizer LoadTokenizer(string dir)
    {
        using var vocab = File.OpenRead(Path.Combine(dir, "vocab.json"));
        using var merges = File.OpenRead(Path.Combine(dir, "merges.txt"));
        return CodeGenTokenizer.Create(vocab, merges, addPrefixSpace: false, addBeginOfSentence: false, addEndOfSentence: false);
    }

    /// <summary>Tokenizes every line (in parallel; order kept).</summary>
    public static TokenData Tokenize(Tokenizer tokenizer, IEnumerable<string> lines)
        => new(lines.AsParallel().AsOrdered().Select(l => tokenizer.EncodeToIds(l).ToArray()).ToList());

    /// <summary>The packed stream cut into non-overlapping blocks of <paramref name="blockSize"/> tokens, [N, blockSize] int64.</summary>
    public Tensor PackedBlocks(int blockSize)
    {
        var stream = new List<long>((int)TokenCount + 1) { EndOfText };
        foreach (var l in Lines)
        {
            foreach (var id in l) stream.Add(id);
            stream.Add(EndOfText);
        }
        int n = stream.Count / blockSize;
        return tensor(stream.GetRange(0, n * blockSize).ToArray(), dtype: ScalarType.Int64).view(n, blockSize);
    }

    /// <summary>
    /// <paramref name="lines"/> as one right-padded batch: input_ids (B, T) = [eos, line], attention_mask (B, T),
    /// labels (B, T) = [line, eos] with -100 on padding; lines longer than <paramref name="maxLength"/> are cut.
    /// </summary>
    public static (Tensor inputIds, Tensor attentionMask, Tensor labels) EvalBatch(IReadOnlyList<int[]> lines, int maxLength)
    {
        int t = Math.Min(maxLength, lines.Max(l => l.Length + 1));
        var ids = new long[lines.Count * t];
        var mask = new long[lines.Count * t];
        var labels = new long[lines.Count * t];
        Array.Fill(ids, Pad);
        Array.Fill(labels, -100);
        for (int b = 0; b < lines.Count; b++)
        {
            var seq = new List<int>(lines[b].Length + 2) { EndOfText };
            seq.AddRange(lines[b]);
            seq.Add(EndOfText);
            int len = Math.Min(t, seq.Count - 1);
            for (int i = 0; i < len; i++)
            {
                ids[b * t + i] = seq[i];
                mask[b * t + i] = 1;
                labels[b * t + i] = seq[i + 1];
            }
        }
        return (tensor(ids).view(lines.Count, t), tensor(mask).view(lines.Count, t), tensor(labels).view(lines.Count, t));
    }
}
