using Microsoft.ML;
using QuanTA.Core.Runtime;

namespace QuanTA.MLNet.Tests.Robustness;

/// <summary><c>mlContext.Model.SaveAtomically</c>: a save that fails part-way keeps the previous model .zip byte for byte.</summary>
public class AtomicSaveTests
{
    sealed class Row { public string Label { get; set; } = ""; }
    sealed class Mapped { public float Length { get; set; } }

    [Fact]
    public void AFailingSaveKeepsThePreviousZipAndLeavesNoTemporaryFile()
    {
        var dir = Directory.CreateTempSubdirectory("quanta-atomic-save");
        try
        {
            var ml = new MLContext(1);
            var data = ml.Data.LoadFromEnumerable(new[] { new Row { Label = "a" }, new Row { Label = "b" } });
            var zip = Path.Combine(dir.FullName, "model.zip");
            var good = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
            ml.Model.SaveAtomically(good, data.Schema, zip);
            var before = File.ReadAllBytes(zip);
            Assert.True(before.Length > 100);

            // The first step saves, then ML.NET throws on the custom mapping (no contract name): a half-written zip.
            var unsaveable = ml.Transforms.Conversion.MapValueToKey("LabelKey", "Label")
                .Append(ml.Transforms.CustomMapping<Row, Mapped>((r, m) => m.Length = r.Label.Length, contractName: null)).Fit(data);
            Assert.ThrowsAny<Exception>(() => ml.Model.SaveAtomically(unsaveable, data.Schema, zip));

            Assert.Equal(before, File.ReadAllBytes(zip));
            Assert.Empty(Directory.GetFiles(dir.FullName, "*" + AtomicFile.TempExtension));
            using var loaded = ml.Model.Load(zip, out _) as IDisposable;   // still a loadable model
        }
        finally { dir.Delete(recursive: true); }
    }
}
