using QuanTA.Core.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tokenization;

/// <summary>Where pad tokens go in a batch. Right for training and scoring; left for batched generation.</summary>
public enum PaddingSide
{
    /// <summary>Pad after the tokens (<c>padding_side="right"</c>, the transformers default).</summary>
    Right,
    /// <summary>Pad before the tokens, so every row ends with its last real token (batched generation).</summary>
    Left,
}

/// <summary>Which end of a too-long sequence is cut.</summary>
public enum TruncationSide
{
    /// <summary>Keep the beginning, drop tokens at the end (transformers default).</summary>
    Right,
    /// <summary>Keep the end, drop tokens at the beginning (e.g. keep the latest context).</summary>
    Left,
}

/// <summary>
/// A padded batch: <see cref="InputIds"/> and <see cref="AttentionMask"/> of shape [B, T] (1 = real token, 0 = pad),
/// as a Hugging Face tokenizer returns with <c>padding=True</c>.
/// </summary>
/// <param name="InputIds">Token ids, [B, T]; pad positions hold the pad id.</param>
/// <param name="AttentionMask">1 for real tokens, 0 for padding, [B, T].</param>
/// <param name="Lengths">Number of real tokens per row (after truncation), [B].</param>
/// <param name="PaddingSide">Side the padding was put on.</param>
public sealed record BatchEncoding(long[,] InputIds, long[,] AttentionMask, int[] Lengths, PaddingSide PaddingSide)
{
    /// <summary>B, the number of rows.</summary>
    public int BatchSize => InputIds.GetLength(0);

    /// <summary>T, the padded length.</summary>
    public int SequenceLength => InputIds.GetLength(1);

    /// <summary>Row <paramref name="b"/> without its padding.</summary>
    public long[] Row(int b)
    {
        int t = SequenceLength, n = Lengths[b], start = PaddingSide == PaddingSide.Left ? t - n : 0;
        var row = new long[n];
        for (int i = 0; i < n; i++) row[i] = InputIds[b, start + i];
        return row;
    }

    /// <summary>
    /// The batch as int64 tensors (input_ids [B, T], attention_mask [B, T]) on <paramref name="device"/> (CPU when null).
    /// The caller owns (disposes) both tensors.
    /// </summary>
    public (Tensor InputIds, Tensor AttentionMask) ToTensors(Device? device = null)
    {
        TorchRuntime.Initialize();
        var ids = torch.tensor(InputIds, dtype: ScalarType.Int64);
        var mask = torch.tensor(AttentionMask, dtype: ScalarType.Int64);
        if (device is null || device.type == DeviceType.CPU) return (ids, mask);
        using (ids) using (mask) return (ids.to(device), mask.to(device));
    }
}
