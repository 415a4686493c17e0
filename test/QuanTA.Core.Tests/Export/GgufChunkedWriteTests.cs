using System.Text.Json.Nodes;
using QuanTA.Core.Export.Gguf;
using QuanTA.Core.Runtime;
using TorchSharp.PyBridge;
using static QuanTA.Core.Tests.Export.GgufExpectations;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Export;

/// <summary>
/// Tensors are streamed into a GGUF file in chunks (so a tensor over 2 GiB, e.g. a LLaMA-3-8B embedding in f32, needs no
/// array of its size): with a chunk far smaller than the tensors, and boundaries inside rows and inside q/k heads, the file
/// is byte for byte the one written in one chunk and the independently encoded weights; the memory a tensor takes is bounded
/// by the chunk, not by the tensor.
/// </summary>
public sealed class GgufChunkedWriteTests : IDisposable
{
    /// <summary>A multiple of 32 that does not divide the fixture's rows of 128 and 384 values, so chunks end inside rows.</summary>
    const int TinyChunk = 96;

    readonly string _tmp = Path.Combine(Path.GetTempPath(), "quanta-ggufc-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_tmp)) Directory.Delete(_tmp, recursive: true);
    }

    static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "fixtures", name);

    /// <summary>llama-tiny with its weights stored as <paramref name="dtype"/> (the fixture itself is F32).</summary>
    string LlamaTinyStoredAs(string dtype)
    {
        if (dtype == "F32") return Fixture("llama-tiny");
        var dir = Path.Combine(_tmp, "llama-tiny-" + dtype);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Fixture("llama-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        TorchRuntime.Initialize();
        using var scope = NewDisposeScope();
        var weights = LoadWeights(dir);
        var type = dtype == "F16" ? ScalarType.Float16 : ScalarType.BFloat16;
        Safetensors.SaveStateDict(Path.Combine(dir, "model.safetensors"), weights.ToDictionary(kv => kv.Key, kv => kv.Value.to_type(type)));
        return dir;
    }

    [Theory]
    [InlineData("F32", "f32")]
    [InlineData("F32", "f16")]
    [InlineData("F32", "bf16")]
    [InlineData("F32", "q8_0")]
    [InlineData("F16", "q8_0")]
    [InlineData("BF16", "f16")]
    public void A_tensor_streamed_in_chunks_smaller_than_a_row_has_the_bytes_of_the_one_chunk_encoding(string storedAs, string outType)
    {
        var dir = LlamaTinyStoredAs(storedAs);
        var config = Json(Path.Combine(dir, "config.json"));
        Assert.NotEqual(0, (int)config["hidden_size"]! % TinyChunk);                       // chunk boundaries fall inside rows
        var fileType = outType switch { "f32" => GgufFileType.F32, "f16" => GgufFileType.F16, "bf16" => GgufFileType.BF16, _ => GgufFileType.Q8_0 };

        var oneChunk = Path.Combine(_tmp, "one-chunk.gguf");
        var chunked = Path.Combine(_tmp, "chunked.gguf");
        var written = GgufConverter.Convert(dir, oneChunk, new GgufConversionOptions { FileType = fileType });
        GgufConverter.Convert(dir, chunked, new GgufConversionOptions { FileType = fileType, ChunkValues = TinyChunk });

        Assert.True(written.Tensors.Max(t => t.Shape.Aggregate(1L, (a, b) => a * b)) <= GgufConverter.DefaultChunkValues);  // the reference really is one chunk a tensor
        Assert.Contains(written.Tensors, t => t.Name == "blk.0.attn_q.weight" && t.Shape[0] * t.Shape[1] > 10 * TinyChunk);
        Assert.True(File.ReadAllBytes(oneChunk).AsSpan().SequenceEqual(File.ReadAllBytes(chunked)), "the chunked file differs from the one-chunk file");
        // and against weights permuted and encoded with torch, apart from the converter (q/k permutation included)
        GgufConverterTests.CheckTensors(dir, chunked, OutsideGgufReader.Read(chunked), config, "llama", outType);
    }

    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    [InlineData(GgmlType.Q8_0)]
    public void Encoding_in_chunks_equals_encoding_all_values_at_once(GgmlType type)
    {
        var random = new Random(7);
        var values = Enumerable.Range(0, 32 * 37).Select(_ => (float)(random.NextDouble() * 8 - 4)).ToArray();   // 37 blocks: the last chunk is partial
        values[5] = float.NaN; values[40] = 1e6f; values[41] = -0f;
        using var output = new MemoryStream();
        var reads = new List<(long First, int Count)>();
        GgmlTensorEncoding.EncodeChunked(output, values.Length, type, chunkValues: 160, (first, chunk) =>
        {
            reads.Add((first, chunk.Length));
            values.AsSpan((int)first, chunk.Length).CopyTo(chunk);
        });
        Assert.Equal(GgmlTensorEncoding.Encode(values, type), output.ToArray());
        Assert.Equal(Enumerable.Range(0, 8).Select(i => ((long)160 * i, i < 7 ? 160 : 64)), reads);
    }

    [Fact]
    public void A_chunk_that_could_split_a_q8_0_block_is_refused_with_its_size()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            GgmlTensorEncoding.EncodeChunked(Stream.Null, 64, GgmlType.F16, chunkValues: 1000, (_, _) => { }));
        Assert.Contains("1000", e.Message);
        Assert.Contains("multiple of 32", e.Message);
    }

    [Fact]
    public void Each_tensor_allocates_about_the_chunk_and_not_its_own_size()
    {
        // Bound: a chunk of fp32 values, of encoded bytes and of source bytes (4 bytes each at most), plus a little for the file handle.
        const long bound = 3 * 4 * TinyChunk + 4096;
        var (_, _, tensors) = GgufConverter.Plan(Fixture("llama-tiny"), new GgufConversionOptions { FileType = GgufFileType.F32, ChunkValues = TinyChunk });
        foreach (var t in tensors) t.WriteData(Stream.Null);                                  // first calls: JIT and type initialisation

        var largest = tensors.MaxBy(t => t.ElementCount)!;
        Assert.True(largest.ElementCount * 4 > 50 * bound, $"{largest.Name} is too small for this test");
        foreach (var t in tensors)
        {
            var allocated = AllocatedBy(() => t.WriteData(Stream.Null));
            Assert.True(allocated <= bound, $"{t.Name} ({t.ElementCount} values) allocated {allocated} bytes, more than {bound}");
        }

        // Control: with one chunk for the whole tensor, the same measurement sees the tensor-sized buffers.
        var (_, _, whole) = GgufConverter.Plan(Fixture("llama-tiny"), new GgufConversionOptions { FileType = GgufFileType.F32 });
        var embedding = whole.Single(t => t.Name == largest.Name);
        embedding.WriteData(Stream.Null);
        Assert.True(AllocatedBy(() => embedding.WriteData(Stream.Null)) >= 3 * 4 * embedding.ElementCount);
    }

    static long AllocatedBy(Action action)
    {
        var before = GC.GetAllocatedBytesForCurrentThread();
        action();
        return GC.GetAllocatedBytesForCurrentThread() - before;
    }
}
