using QuanTA.Core.Export;
using QuanTA.Core.Models;
using QuanTA.Core.Runtime;
using static QuanTA.Core.Tests.Export.ExportFixture;

namespace QuanTA.Core.Tests.Export;

/// <summary>Export folders are written atomically and a non-empty folder is replaced only when asked.</summary>
public class ExportFolderTests
{
    [Fact]
    public void ANonEmptyFolderIsRefusedWithoutOverwriteAndReplacedWithIt()
    {
        var output = TempDir();
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "previous");
        using var model = CausalLM.FromPretrained(Dir("llama-tiny"));
        var source = new ExportSource { Model = model, BaseModelPath = Dir("llama-tiny") };
        var e = Assert.Throws<IOException>(() => ModelExporter.Export(source, output, new ModelExportOptions { OverwriteSwitchName = "--overwrite" }));
        Assert.Contains("--overwrite", e.Message);
        Assert.Contains(output, e.Message);
        Assert.Equal(["keep.txt"], Directory.EnumerateFileSystemEntries(output).Select(Path.GetFileName));
        var lib = Assert.Throws<IOException>(() => ModelExporter.Export(source, output, new ModelExportOptions()));
        Assert.Contains("ModelExportOptions.Overwrite", lib.Message);                 // the library names its own switch

        ModelExporter.Export(source, output, new ModelExportOptions { Overwrite = true });
        Assert.False(File.Exists(Path.Combine(output, "keep.txt")));
        Assert.True(File.Exists(Path.Combine(output, "model.safetensors")));
        Assert.Equal(["out"], Directory.EnumerateFileSystemEntries(Path.GetDirectoryName(output)!).Select(Path.GetFileName));   // no temporary folder left
        // an empty folder needs no --overwrite
        var empty = Path.Combine(Path.GetDirectoryName(output)!, "empty");
        Directory.CreateDirectory(empty);
        ModelExporter.Export(source, empty, new ModelExportOptions { Format = ExportFormat.HuggingFace, DType = TorchSharp.torch.ScalarType.Float16 });
        Assert.Contains("\"dtype\": \"float16\"", File.ReadAllText(Path.Combine(empty, "config.json")));
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    [Fact]
    public void AFailedExportLeavesThePreviousFolderAndNoTemporaryFolder()
    {
        var output = TempDir();
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "previous");
        var e = Assert.Throws<InvalidOperationException>(() => ExportFolder.Write(output, overwrite: true, "--overwrite", dir =>
        {
            File.WriteAllText(Path.Combine(dir, "model.safetensors"), "half");
            throw new InvalidOperationException("disk full");
        }));
        Assert.Equal("disk full", e.Message);
        Assert.Equal("previous", File.ReadAllText(Path.Combine(output, "keep.txt")));
        Assert.Equal(["out"], Directory.EnumerateFileSystemEntries(Path.GetDirectoryName(output)!).Select(Path.GetFileName));
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(Path.GetDirectoryName(output)!), p => p.EndsWith(AtomicFile.TempExtension, StringComparison.Ordinal));
        Directory.Delete(Path.GetDirectoryName(output)!, true);
    }

    [Fact]
    public void BadOptionsAreRefusedByName()
    {
        Assert.Contains("--format 'gguf2'", Assert.Throws<ArgumentException>(() => ModelExporter.ParseFormat("gguf2")).Message);
        Assert.Equal(ExportFormat.Peft, ModelExporter.ParseFormat("PEFT"));
        Assert.Equal(ExportFormat.HuggingFace, ModelExporter.ParseFormat("hf"));
        Assert.Equal(50_000_000_000, ModelExportOptions.ParseSize("50GB"));
        Assert.Equal(2L << 30, ModelExportOptions.ParseSize("2GiB"));
        Assert.Equal(1_000_000, ModelExportOptions.ParseSize("1MB"));
        Assert.Equal(4096, ModelExportOptions.ParseSize("4096"));
        Assert.Contains("--max-shard-size '5 gigs'", Assert.Throws<ArgumentException>(() => ModelExportOptions.ParseSize("5 gigs")).Message);
        Assert.Contains("--dtype 'int8'", Assert.Throws<ArgumentException>(() => ModelExportOptions.ParseDType("int8")).Message);
        Assert.Contains("MaxShardSizeBytes", Assert.Throws<ArgumentException>(() => new ModelExportOptions { MaxShardSizeBytes = 0 }.Validate()).Message);
        Assert.Contains("DType", Assert.Throws<ArgumentException>(() => new ModelExportOptions { DType = TorchSharp.torch.ScalarType.Int8 }.Validate()).Message);
    }
}
