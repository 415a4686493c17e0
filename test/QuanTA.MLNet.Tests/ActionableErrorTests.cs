using System.Globalization;
using Microsoft.ML;

namespace QuanTA.MLNet.Tests;

/// <summary>
/// Issue 17 item 3 in the library: column and class-count errors name the <see cref="QuanTAFineTuneOptions"/> field to set
/// (message and ParamName) and list the columns found; <c>LoadWithQuanTA</c> on a damaged or foreign file says it is corrupt
/// or not a QuanTA model, with its path and size.
/// </summary>
public class ActionableErrorTests
{
    static readonly MLContext Ml = new(seed: 1);

    static QuanTAFineTuneOptions Options() => new()
    {
        BaseModelPath = ToyData.Fixture("llama-tiny-seqcls"), AxisLayout = [8, 4, 4], Epochs = 1, BatchSize = 4, MaxSequenceLength = 32,
    };

    static IDataView Keyed(IEnumerable<TextRow> rows)
    {
        var data = ToyData.View(Ml, rows);
        return Ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
    }

    [Theory]
    [InlineData(nameof(QuanTAFineTuneOptions.TextColumnName))]
    [InlineData(nameof(QuanTAFineTuneOptions.LabelColumnName))]
    [InlineData(nameof(QuanTAFineTuneOptions.SecondTextColumnName))]
    public void MissingColumnNamesTheFieldAndTheColumnsFound(string field)
    {
        var o = Options();
        typeof(QuanTAFineTuneOptions).GetField(field)!.SetValue(o, "Sentence");
        var data = Keyed(ToyData.Classification(6, seed: 1));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(data));
        Assert.Equal(field, ex.ParamName);
        Assert.Contains("'Sentence'", ex.Message);
        Assert.Contains("'Text', 'Label'", ex.Message);
        Assert.Contains($"set QuanTAFineTuneOptions.{field}", ex.Message);
    }

    [Fact]
    public void OneClassNamesTheLabelColumnAndTheField()
    {
        var rows = ToyData.Classification(6, seed: 1);
        foreach (var r in rows) r.Label = "fruit";
        var ex = Assert.ThrowsAny<ArgumentException>(() => Ml.Transforms.QuanTAFineTune(Options()).Fit(Keyed(rows)));
        Assert.Equal(nameof(QuanTAFineTuneOptions.LabelColumnName), ex.ParamName);
        Assert.Contains("the label column 'Label' has 1", ex.Message);
        Assert.Contains("QuanTAFineTuneOptions.LabelColumnName", ex.Message);
    }

    [Fact]
    public void AValidationRowWithAnUnseenLabelFailsBeforeTrainingNamingTheValidationSet()
    {
        var rows = ToyData.Classification(8, seed: 1);
        var data = ToyData.View(Ml, rows);
        var keys = Ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        var validationRows = ToyData.Classification(4, seed: 2);
        validationRows[2].Label = "zebra";                                         // never seen in training: key 0
        var o = Options();
        o.ValidationSet = keys.Transform(ToyData.View(Ml, validationRows));
        int steps = 0;
        o.Progress = new Progress<QuanTAProgress>(_ => Interlocked.Increment(ref steps));
        var ex = Assert.Throws<InvalidDataException>(() => Ml.Transforms.QuanTAFineTune(o).Fit(keys.Transform(data)));
        Assert.Contains("Row 2: the label column 'Label' has no value", ex.Message);
        Assert.Contains("Every validation (QuanTAFineTuneOptions.ValidationSet) row needs a known label", ex.Message);
        Assert.Equal(0, steps);                                                    // refused before any training step
    }

    [Fact]
    public void DamagedOrForeignModelZipIsCalledCorruptWithPathAndSize()
    {
        var dir = Directory.CreateTempSubdirectory("quanta-corrupt");
        try
        {
            var zip = Path.Combine(dir.FullName, "model.zip");
            var data = Keyed(ToyData.Classification(6, seed: 1));
            using (var model = Ml.Transforms.QuanTAFineTune(Options()).Fit(data)) Ml.Model.Save(model, data.Schema, zip);
            var good = File.ReadAllBytes(zip);
            var flipped = (byte[])good.Clone();
            for (int i = good.Length / 3; i < good.Length / 3 + 64; i++) flipped[i] ^= 0xFF;
            var oneWeightByte = (byte[])good.Clone();
            oneWeightByte[MiddleOfLargestEntry(zip)] ^= 0x01;   // ML.NET stores tensors uncompressed: only the CRC check sees this
            var cases = new Dictionary<string, byte[]>
            {
                ["flipped.zip"] = flipped,
                ["one-weight-byte.zip"] = oneWeightByte,
                ["truncated.zip"] = good[..(good.Length / 2)],
                ["foreign.zip"] = "not a zip"u8.ToArray(),
                ["empty.zip"] = [],
            };
            foreach (var (name, bytes) in cases)
            {
                var path = Path.Combine(dir.FullName, name);
                File.WriteAllBytes(path, bytes);
                var ml = new MLContext();
                var ex = Assert.Throws<InvalidDataException>(() => ml.Model.LoadWithQuanTA(ml, path, out _));
                Assert.Contains("corrupt or not a QuanTA model", ex.Message);
                Assert.Contains(path, ex.Message);
                Assert.Contains($"({bytes.Length.ToString(CultureInfo.InvariantCulture)} bytes)", ex.Message);
            }
            var missing = Path.Combine(dir.FullName, "missing.zip");
            var ml2 = new MLContext();
            Assert.Contains(missing, Assert.Throws<FileNotFoundException>(() => ml2.Model.LoadWithQuanTA(ml2, missing, out _)).Message);
            using var loaded = (QuanTAFineTuneTransformer)ml2.Model.LoadWithQuanTA(ml2, zip, out _);   // the intact file still loads
            Assert.Equal(3, loaded.ClassNames.Count);
        }
        finally { dir.Delete(true); }
    }

    /// <summary>Offset in the file of the middle byte of the largest entry's stored data (local header + name + extra skipped).</summary>
    static long MiddleOfLargestEntry(string zip)
    {
        var bytes = File.ReadAllBytes(zip);
        long best = -1, bestSize = -1;
        for (int i = 0; i + 30 <= bytes.Length; i++)
        {
            if (BitConverter.ToUInt32(bytes, i) != 0x04034b50) continue;   // local file header signature
            uint size = BitConverter.ToUInt32(bytes, i + 18);
            int nameLength = BitConverter.ToUInt16(bytes, i + 26), extraLength = BitConverter.ToUInt16(bytes, i + 28);
            long start = i + 30L + nameLength + extraLength;
            if (size > bestSize && start + size <= bytes.Length) { bestSize = size; best = start + size / 2; }
        }
        Assert.True(bestSize > 64, "the saved model zip should hold a tensor entry");
        return best;
    }
}
