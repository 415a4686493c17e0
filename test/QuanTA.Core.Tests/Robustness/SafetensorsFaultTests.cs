using System.Buffers.Binary;
using System.Text;
using CsCheck;
using QuanTA.Core.Adapters;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using QuanTA.Core.Tests.Adapters;
using QuanTA.Tests.Robustness;
using TorchSharp;
using static TorchSharp.torch;

namespace QuanTA.Core.Tests.Robustness;

/// <summary>
/// Safetensors files from outside (model weights, adapter exports): hostile headers are refused by name before anything is
/// allocated, and random damage to real files gives an <see cref="InvalidDataException"/> naming the file.
/// </summary>
public class SafetensorsFaultTests
{
    static SafetensorsFaultTests() => TorchRuntime.Initialize();

    /// <summary>A safetensors file from a header written by hand and a data section.</summary>
    static byte[] File(string headerJson, int dataBytes)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        return bytes;
    }

    /// <summary>A folder with <c>model.safetensors</c> = <paramref name="bytes"/>, loaded into a 2×2 linear layer the way a base model is.</summary>
    static Exception? LoadAsWeights(byte[] bytes, out long allocated)
    {
        var dir = Path.Combine(Path.GetTempPath(), "quanta-st-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            System.IO.File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), bytes);
            using var model = nn.Linear(2, 2);
            var outcome = ReaderProperty.RunBounded(() => CheckpointLoader.Load(model, dir, []));
            Assert.True(outcome.Finished);
            allocated = outcome.AllocatedBytes;
            return outcome.Error;
        }
        finally { Directory.Delete(dir, true); }
    }

    const string Valid = """{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""";

    [Fact]
    public void AWellFormedHandWrittenFileLoads()
    {
        var e = LoadAsWeights(File(Valid, 24), out _);
        Assert.Null(e);
    }

    [Theory]
    [InlineData(1UL << 60, "claims")]
    [InlineData(ulong.MaxValue, "claims")]
    [InlineData((ulong)int.MaxValue, "claims")]          // under the old int.MaxValue limit: a 2 GB buffer for a 100-byte file
    [InlineData(200_000_000UL, "claims")]
    public void AHeaderLengthBeyondTheFileIsRefusedBeforeAllocating(ulong claimed, string expected)
    {
        var bytes = File(Valid, 24);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, claimed);
        var e = LoadAsWeights(bytes, out long allocated);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("model.safetensors", e!.Message);
        Assert.Contains(expected, e.Message);
        Assert.True(allocated < 16 << 20, $"allocated {allocated:N0} bytes for a {bytes.Length}-byte file");
    }

    [Theory]
    [InlineData("""{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,4000]}}""", "bias")]         // past the end of the file
    [InlineData("""{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[-16,0]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""", "weight")]        // negative
    [InlineData("""{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", "bias")]           // overlapping
    [InlineData("""{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[20,28]}}""", "bias")]          // a gap
    [InlineData("""{"weight":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""", "weight")]   // element count overflows
    [InlineData("""{"weight":{"dtype":"F32","shape":[1152921504606846976],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""", "weight")]     // 2^60 elements in 16 bytes
    [InlineData("""{"weight":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""", "weight")]        // negative size
    [InlineData("""{"weight":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""", "weight")]    // unknown dtype
    [InlineData("""{"weight":{"dtype":"F32","shape":[2,2]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""", "weight")]                               // no offsets
    [InlineData("""{"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24.5]}}""", "bias")]        // fractional offset
    [InlineData("""{"weight":[1,2],"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}""", "weight")]                                                         // not an object
    public void ABadTensorEntryIsRefusedNamingTheFileAndTheTensor(string header, string tensor)
    {
        var e = LoadAsWeights(File(header, 24), out long allocated);
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("model.safetensors", e!.Message);
        Assert.Contains($"'{tensor}'", e.Message);
        Assert.True(allocated < 16 << 20, $"allocated {allocated:N0} bytes");
    }

    [Fact]
    public void AnAdapterFileWithAHugeHeaderLengthIsRefusedNamingTheFile()
    {
        using var tmp = new Training.TempDir();
        var (model, path) = SavedAdapter(tmp.Path);
        using var _ = model;
        var bytes = System.IO.File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1UL << 60);
        System.IO.File.WriteAllBytes(path, bytes);
        using var fresh = new ToyModel(layersCount: 1);
        var e = Record.Exception(() => AdapterFile.Load(fresh, path));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains(Path.GetFileName(path), e!.Message);
    }

    [Theory]
    [InlineData("[4096, 4096]", "[[0, 1]]")]        // S_0 would be (4096·4096)² values: before, libtorch's allocation error
    [InlineData("[2, 2, 2, 2, 65536]", "[[3, 4]]")]
    public void AnAdapterLayoutTooLargeForItsWeightsFileIsRefusedBeforeAllocating(string layout, string pairs)
    {
        using var tmp = new Training.TempDir();
        var (model, path) = SavedAdapter(tmp.Path);
        model.Dispose();
        var json = System.Text.Json.Nodes.JsonNode.Parse(System.IO.File.ReadAllText(AdapterFile.ConfigPath(path)))!;
        var layer = json["layers"]!["model.layers.0.self_attn.q_proj"]!;
        layer["layout"] = System.Text.Json.Nodes.JsonNode.Parse(layout);
        layer["pairs"] = System.Text.Json.Nodes.JsonNode.Parse(pairs);
        System.IO.File.WriteAllText(AdapterFile.ConfigPath(path), json.ToJsonString());
        using var fresh = new ToyModel(layersCount: 1);
        var outcome = ReaderProperty.RunBounded(() => AdapterFile.Load(fresh, path));
        Assert.True(outcome.Finished);
        var e = Assert.IsType<InvalidDataException>(outcome.Error);
        Assert.Contains("adapter.json", e.Message);
        Assert.Contains("q_proj", e.Message);
        Assert.Contains("need at least", e.Message);
    }

    /// <summary>A toy block with QuanTA adapters on q/v (trained values, so T ≠ S) exported with <see cref="AdapterFile.Save"/>.</summary>
    internal static (nn.Module Model, string Path) SavedAdapter(string dir)
    {
        var model = new ToyModel(layersCount: 1);
        AdapterInjector.Inject(model, new QuanTAConfig { AxisCount = 2, Seed = 3 }, TargetModules.Parse("q_proj,v_proj"));
        TestUtil.Randomize(model);
        var path = Path.Combine(dir, "adapter.safetensors");
        AdapterFile.Save(model, path);
        return (model, path);
    }

    [Fact]
    public void DamagedModelWeightsGiveAClearError()
    {
        var original = System.IO.File.ReadAllBytes(Models.Fixture.Dir("llama-tiny") + "/model.safetensors");
        var dir = Path.Combine(Path.GetTempPath(), "quanta-stp-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "weights.safetensors");
        try
        {
            ReaderProperty.Check(FaultGen.ForSafetensors, fault =>
            {
                var bytes = fault.Apply(original);
                System.IO.File.WriteAllBytes(path, bytes);
                return ("weights.safetensors", bytes.Length, () =>
                {
                    var tensors = SafetensorsReader.Read(path);
                    foreach (var t in tensors.Values) t.Dispose();
                });
            }, iter: 150);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void DamagedAdapterFilesGiveAClearError()
    {
        using var tmp = new Training.TempDir();
        var (model, path) = SavedAdapter(tmp.Path);
        model.Dispose();
        var weights = System.IO.File.ReadAllBytes(path);
        var json = System.IO.File.ReadAllBytes(AdapterFile.ConfigPath(path));
        var gen = Gen.Bool.SelectMany(onJson => (onJson ? FaultGen.ForJson : FaultGen.ForSafetensors).Select(f => (onJson, f)));
        ReaderProperty.Check(gen, c =>
        {
            var (onJson, fault) = c;
            var bytes = fault.Apply(onJson ? json : weights);
            System.IO.File.WriteAllBytes(path, onJson ? weights : bytes);
            System.IO.File.WriteAllBytes(AdapterFile.ConfigPath(path), onJson ? bytes : json);
            return ("adapter.", bytes.Length, () =>     // either file of the pair may be the one named
            {
                using var fresh = new ToyModel(layersCount: 1);
                AdapterFile.Load(fresh, path);
            });
        }, iter: 120);
    }
}
