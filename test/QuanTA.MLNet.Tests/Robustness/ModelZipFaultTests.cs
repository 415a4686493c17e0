using System.IO.Compression;
using CsCheck;
using Microsoft.ML;
using QuanTA.Tests.Robustness;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary>
/// Saved model .zip files damaged at random, as bytes (truncation, flips, inserts: mostly a broken zip) and inside a valid
/// zip (one entry damaged and the zip rebuilt with correct checksums, so the damage reaches ML.NET's and QuanTA's own
/// readers of the entries: the saved options, labels and the adapter's safetensors state). <c>LoadWithQuanTA</c> either loads
/// or throws <see cref="InvalidDataException"/> naming the file, never a hang, a crash or a huge allocation.
/// </summary>
public class ModelZipFaultTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("quanta-zipfault").FullName;
    readonly byte[] _model;

    public ModelZipFaultTests()
    {
        var ml = new MLContext(seed: 1);
        var data = ToyData.View(ml, ToyData.Classification(8, seed: 1));
        var options = new QuanTAFineTuneOptions
        {
            BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), AxisLayout = [8, 4, 4], Epochs = 1, BatchSize = 4, MaxSequenceLength = 32,
        };
        var zip = Path.Combine(_dir, "trained.zip");
        using (var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Transforms.QuanTAFineTune(options)).Fit(data))
            ml.Model.Save(model, data.Schema, zip);
        _model = Rezip(Entries(File.ReadAllBytes(zip)));   // fixed entry times (ML.NET stamps the save time): with seeded CPU training, the same bytes and cases on every run
    }

    /// <summary>A zip of <paramref name="entries"/> with a fixed modification time on each.</summary>
    static byte[] Rezip(List<(string Name, byte[] Bytes)> entries)
    {
        using var ms = new MemoryStream();
        using (var archive = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, bytes) in entries)
            {
                var entry = archive.CreateEntry(name);
                entry.LastWriteTime = new DateTimeOffset(2020, 1, 1, 0, 0, 0, TimeSpan.Zero);
                using var s = entry.Open();
                s.Write(bytes);
            }
        return ms.ToArray();
    }

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>The zip's entries (name, bytes), in order.</summary>
    static List<(string Name, byte[] Bytes)> Entries(byte[] zip)
    {
        using var archive = new ZipArchive(new MemoryStream(zip), ZipArchiveMode.Read);
        return archive.Entries.Select(e =>
        {
            using var s = e.Open();
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            return (e.FullName, ms.ToArray());
        }).ToList();
    }

    /// <summary>The model with entry <paramref name="index"/> (modulo the count) damaged by <paramref name="fault"/>, re-zipped.</summary>
    static byte[] WithDamagedEntry(byte[] zip, int index, Fault fault)
    {
        var entries = Entries(zip);
        int k = (int)((uint)index % (uint)entries.Count);
        entries[k] = (entries[k].Name, fault.Apply(entries[k].Bytes));
        return Rezip(entries);
    }

    /// <summary>The property over damaged copies: <paramref name="apply"/> damages the model's bytes as <paramref name="gen"/>'s case says
    /// (the case, not a delegate, is what CsCheck prints for a failure).</summary>
    void LoadOrFailClearly<T>(Gen<T> gen, Func<T, byte[], byte[]> apply, int iter)
    {
        var path = Path.Combine(_dir, "model.zip");
        ReaderProperty.Check(gen, c =>
        {
            var bytes = apply(c, _model);
            File.WriteAllBytes(path, bytes);
            return ("model.zip", bytes.Length, () =>
            {
                var ml = new MLContext(seed: 1);
                (ml.Model.LoadWithQuanTA(ml, path, out _) as IDisposable)?.Dispose();
            });
        }, iter);
    }

    [Fact]
    public void TheUndamagedModelLoads()
    {
        var path = Path.Combine(_dir, "model.zip");
        File.WriteAllBytes(path, _model);
        var ml = new MLContext(seed: 1);
        using var loaded = (IDisposable)ml.Model.LoadWithQuanTA(ml, path, out _);
        Assert.Contains(Entries(_model), e => e.Name.EndsWith("QuanTA.adapter.safetensors", StringComparison.Ordinal));
    }

    [Fact]
    public void AModelZipWithDamagedBytesGivesAClearError() =>
        LoadOrFailClearly(FaultGen.ForBytes, (f, zip) => f.Apply(zip), iter: 40);

    [Fact]
    public void AModelZipWithADamagedEntryGivesAClearError() =>
        LoadOrFailClearly(Gen.Select(Gen.Int[0, int.MaxValue], Gen.Frequency((3, FaultGen.ForBytes), (2, FaultGen.ForSafetensors))),
            (c, zip) => WithDamagedEntry(zip, c.Item1, c.Item2), iter: 60);

    [Fact]
    public void AMissingBaseModelFolderIsReportedWithTheModelFile()
    {
        // A damaged zip entry can turn the recorded base model path into another one; the error named only that folder before.
        var baseDir = Path.Combine(_dir, "base");
        Directory.CreateDirectory(baseDir);
        foreach (var f in Directory.GetFiles(ToyData.Fixture("llama-tiny-seqcls"))) File.Copy(f, Path.Combine(baseDir, Path.GetFileName(f)));
        var ml = new MLContext(seed: 1);
        var data = ToyData.View(ml, ToyData.Classification(8, seed: 1));
        var options = new QuanTAFineTuneOptions { BaseModelPath = baseDir, AxisLayout = [8, 4, 4], Epochs = 1, BatchSize = 4, MaxSequenceLength = 32 };
        var zip = Path.Combine(_dir, "moved-base.zip");
        using (var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Transforms.QuanTAFineTune(options)).Fit(data))
            ml.Model.Save(model, data.Schema, zip);
        Directory.Delete(baseDir, true);
        var e = Assert.Throws<DirectoryNotFoundException>(() => ml.Model.LoadWithQuanTA(ml, zip, out _));
        Assert.Contains(zip, e.Message);
        Assert.Contains(baseDir, e.Message);
        Assert.Contains("RegisterQuanTA(baseModelPath", e.Message);
    }
}
