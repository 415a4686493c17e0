using System.Text.Json.Nodes;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using QuanTA.Tests.Robustness;

namespace QuanTA.Core.Tests.Robustness;

/// <summary>A sharded checkpoint's <c>model.safetensors.index.json</c>, damaged at random or by hand.</summary>
public class ShardIndexFaultTests : IDisposable
{
    const string Index = "model.safetensors.index.json", Shard = "model-00001-of-00001.safetensors";
    readonly string _dir = Path.Combine(Path.GetTempPath(), "quanta-shards-" + Guid.NewGuid().ToString("N")[..8]);

    public ShardIndexFaultTests()
    {
        TorchRuntime.Initialize();
        var fixture = Path.Combine(AppContext.BaseDirectory, "fixtures", "llama-tiny");
        Directory.CreateDirectory(_dir);
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(_dir, "config.json"));
        File.Copy(Path.Combine(fixture, "model.safetensors"), Path.Combine(_dir, Shard));
        using var s = File.OpenRead(Path.Combine(_dir, Shard));
        var map = new JsonObject();
        foreach (var e in SafetensorsReader.ReadHeader(s, Shard, out _)) map[e.Name] = Shard;
        File.WriteAllText(Path.Combine(_dir, Index), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
    }

    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void ADamagedIndexGivesAClearError()
    {
        CausalLM.FromPretrained(_dir).Dispose();   // the undamaged sharded folder loads
        using var folder = new FaultFolder(_dir);
        ReaderProperty.Check(FaultFolder.Faults(Index), c =>
        {
            long size = folder.Damage(c.File, c.Fault);
            return (Index, size, () => CausalLM.FromPretrained(folder.Path).Dispose());
        }, iter: 60);
    }

    [Theory]
    [InlineData("{\"weight_map\": {\"lm_head.weight\": null}}", "not a shard file name")]          // before: NullReferenceException
    [InlineData("{\"weight_map\": {\"lm_head.weight\": 7}}", "not a shard file name")]             // before: InvalidOperationException
    [InlineData("{\"weight_map\": {\"lm_head.weight\": \"../llama-tiny/model.safetensors\"}}", "not a file name in the model folder")]   // before: read from outside the folder
    [InlineData("{\"weight_map\": ", "not valid JSON")]                                              // before: raw JsonReaderException
    public void ABadIndexIsRefusedNamingIt(string json, string expected)
    {
        File.WriteAllText(Path.Combine(_dir, Index), json);
        var e = Assert.Throws<InvalidDataException>(() => CheckpointLoader.FindWeightFiles(_dir));
        Assert.Contains(Index, e.Message);
        Assert.Contains(expected, e.Message);
    }
}
