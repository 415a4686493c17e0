using System.Text.Json.Nodes;
using QuanTA.Core.Export.Gguf;

namespace QuanTA.Core.Tests.Export;

/// <summary>The GGUF container on its own: every metadata value type read back by @huggingface/gguf, Q8_0's rounding, atomic writes.</summary>
public sealed class GgufWriterTests : IDisposable
{
    readonly string _tmp = Path.Combine(Path.GetTempPath(), "quanta-ggufw-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_tmp)) Directory.Delete(_tmp, recursive: true);
    }

    [Fact]
    public void Every_metadata_value_type_and_array_kind_reads_back_with_its_type_and_value()
    {
        var kv = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Str("llama")),
            new("t.u8", GgufValue.U8(250)), new("t.i8", GgufValue.I8(-7)),
            new("t.u16", GgufValue.U16(65000)), new("t.i16", GgufValue.I16(-30000)),
            new("t.u32", GgufValue.U32(4_000_000_000)), new("t.i32", GgufValue.I32(-2_000_000_000)),
            new("t.u64", GgufValue.U64(18_000_000_000_000_000_000)), new("t.i64", GgufValue.I64(-9_000_000_000_000_000_000)),
            new("t.f32", GgufValue.F32(1e-6f)), new("t.f64", GgufValue.F64(Math.PI)),
            new("t.bool", GgufValue.Bool(true)), new("t.str", GgufValue.Str("héllo ▁ <|x|> \n")),
            new("t.arr_str", GgufValue.Array(new[] { "a b", "", "Ġthe", "日本" })),
            new("t.arr_i32", GgufValue.Array(new[] { 1, -2, 3 })),
            new("t.arr_f32", GgufValue.Array(new[] { -1000f, 0.5f })),
            new("t.arr_bool", GgufValue.Array(new[] { true, false })),
            new("t.arr_u64", GgufValue.Array(new ulong[] { 0, ulong.MaxValue })),
        };
        var tensor = new GgufTensor("x.weight", [2, 3], GgmlType.F32, () => GgmlTensorEncoding.Encode(new float[] { 1, 2, 3, 4, 5, 6 }, GgmlType.F32));
        var path = Path.Combine(_tmp, "types.gguf");
        GgufWriter.Write(path, kv, [tensor]);

        var file = OutsideGgufReader.Read(path);
        var meta = (JsonObject)file["metadata"]!;
        (int, object?) Entry(string key) => ((int)meta[key]!["type"]!, meta[key]!["value"]!.ToJsonString());
        Assert.Equal((0, "250"), Entry("t.u8"));
        Assert.Equal((1, "-7"), Entry("t.i8"));
        Assert.Equal((2, "65000"), Entry("t.u16"));
        Assert.Equal((3, "-30000"), Entry("t.i16"));
        Assert.Equal((4, "4000000000"), Entry("t.u32"));
        Assert.Equal((5, "-2000000000"), Entry("t.i32"));
        Assert.Equal((10, "\"18000000000000000000\""), Entry("t.u64"));
        Assert.Equal((11, "\"-9000000000000000000\""), Entry("t.i64"));
        Assert.Equal(6, (int)meta["t.f32"]!["type"]!);
        Assert.Equal(1e-6f, (float)(double)meta["t.f32"]!["value"]!);
        Assert.Equal((12, Math.PI), ((int)meta["t.f64"]!["type"]!, (double)meta["t.f64"]!["value"]!));
        Assert.Equal((7, "true"), Entry("t.bool"));
        Assert.Equal((8, "héllo ▁ <|x|> \n"), ((int)meta["t.str"]!["type"]!, (string)meta["t.str"]!["value"]!));
        Assert.Equal(["a b", "", "Ġthe", "日本"], ((JsonArray)meta["t.arr_str"]!["value"]!).Select(x => (string)x!));
        Assert.Equal((9, 8), ((int)meta["t.arr_str"]!["type"]!, (int)meta["t.arr_str"]!["subType"]!));
        Assert.Equal((5, "[1,-2,3]"), ((int)meta["t.arr_i32"]!["subType"]!, meta["t.arr_i32"]!["value"]!.ToJsonString()));
        Assert.Equal((6, "[-1000,0.5]"), ((int)meta["t.arr_f32"]!["subType"]!, meta["t.arr_f32"]!["value"]!.ToJsonString()));
        Assert.Equal((7, "[true,false]"), ((int)meta["t.arr_bool"]!["subType"]!, meta["t.arr_bool"]!["value"]!.ToJsonString()));
        Assert.Equal((10, "[\"0\",\"18446744073709551615\"]"), ((int)meta["t.arr_u64"]!["subType"]!, meta["t.arr_u64"]!["value"]!.ToJsonString()));
        Assert.Equal((4, "32"), Entry("general.alignment"));

        var info = file["tensors"]![0]!;
        Assert.Equal(("x.weight", "[\"3\",\"2\"]", 0, "0"), ((string)info["name"]!, info["shape"]!.ToJsonString(), (int)info["type"]!, (string)info["offset"]!));
        var dataStart = long.Parse((string)file["tensorDataOffset"]!);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal([1f, 2, 3, 4, 5, 6], Enumerable.Range(0, 6).Select(i => BitConverter.ToSingle(bytes, (int)dataStart + 4 * i)));
        Assert.Equal(dataStart + 32, bytes.Length);                      // 24 bytes of data padded to the alignment
    }

    [Fact]
    public void Q8_0_rounds_halves_away_from_zero_and_stores_the_scale_as_fp16()
    {
        // absmax 127 → d = 1 exactly, so x·(1/d) = x: the halves show roundf's rule (2.5 → 3, −2.5 → −3; round-to-even would give 2, −2).
        var x = new float[32];
        x[0] = 127f; x[1] = 2.5f; x[2] = -2.5f; x[3] = 0.5f; x[4] = -0.49f; x[5] = 126.5f;
        var block = GgmlTensorEncoding.Encode(x, GgmlType.Q8_0);
        Assert.Equal(34, block.Length);
        Assert.Equal((Half)1f, BitConverter.ToHalf(block, 0));
        Assert.Equal(new sbyte[] { 127, 3, -3, 1, 0, 127 }, block.Skip(2).Take(6).Select(b => (sbyte)b));

        // An all-zero block: d = 0, all q = 0 (quantize_row_q8_0_ref's id = 0 branch).
        Assert.All(GgmlTensorEncoding.Encode(new float[32], GgmlType.Q8_0), b => Assert.Equal(0, b));
        Assert.Throws<ArgumentException>(() => GgmlTensorEncoding.Encode(new float[33], GgmlType.Q8_0));
    }

    [Fact]
    public void A_failing_tensor_leaves_the_previous_file_and_no_temporary_file()
    {
        var path = Path.Combine(_tmp, "model.gguf");
        Directory.CreateDirectory(_tmp);
        File.WriteAllText(path, "previous");
        var bad = new GgufTensor("a.weight", [4], GgmlType.F32, () => new byte[3]);      // 3 bytes for 4 fp32 values
        var e = Assert.Throws<ArgumentException>(() => GgufWriter.Write(path, [new("general.architecture", GgufValue.Str("llama"))], [bad]));
        Assert.Contains("a.weight", e.Message);
        Assert.Equal("previous", File.ReadAllText(path));
        Assert.Equal([path], Directory.GetFiles(_tmp));
    }

    [Fact]
    public void Duplicate_keys_and_long_tensor_names_are_refused()
    {
        var path = Path.Combine(_tmp, "bad.gguf");
        var dup = Assert.Throws<ArgumentException>(() => GgufWriter.Write(path,
            [new("general.name", GgufValue.Str("a")), new("general.name", GgufValue.Str("b"))], []));
        Assert.Contains("general.name", dup.Message);
        var longName = new string('x', 65);
        var tooLong = Assert.Throws<ArgumentException>(() => GgufWriter.Write(path, [],
            [new GgufTensor(longName, [1], GgmlType.F32, () => new byte[4])]));
        Assert.Contains(longName, tooLong.Message);
        Assert.False(File.Exists(path));
    }
}
