using System.Text;
using CsCheck;
using Microsoft.ML;
using Microsoft.ML.Data;
using QuanTA.Cli.Commands;
using QuanTA.Tests.Robustness;

namespace QuanTA.Cli.Tests.Robustness;

/// <summary>
/// TSV / CSV data files damaged at random, read the way the CLI reads them (<see cref="TextData.Load(MLContext, string)"/>:
/// columns named from the header, every column text) and then every row and column read through a cursor, as training does:
/// either the rows come out or the error is clear and names the file; never a hang, a crash or a huge allocation.
/// </summary>
public class TextDataFaultTests
{
    const string Tsv = "Text\tLabel\n" +
        "an apple a day\tfruit\n" +
        "\"a quoted\tfield\"\twater\n" +
        "the river flows\twater\n" +
        "music, loud\tsound\n" +
        "\tfruit\n";

    const string Csv = "Text,Label,Note\n" +
        "an apple a day,fruit,\n" +
        "\"quoted, with comma\",water,\"x\"\n" +
        "\"say \"\"hi\"\"\",sound,n\n";

    /// <summary>Loads and reads every cell; returns the number of rows.</summary>
    static int ReadAll(string path)
    {
        var ml = new MLContext(seed: 1);
        var view = TextData.Load(ml, path);
        var columns = view.Schema.ToArray();
        int rows = 0;
        using var cursor = view.GetRowCursor(columns);
        var getters = columns.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToArray();
        ReadOnlyMemory<char> value = default;
        while (cursor.MoveNext())
        {
            foreach (var g in getters) g(ref value);
            rows++;
        }
        return rows;
    }

    [Theory]
    [InlineData("data.tsv", Tsv)]
    [InlineData("data.csv", Csv)]
    public void DamagedDataFilesReadOrFailClearly(string fileName, string content)
    {
        var dir = Directory.CreateTempSubdirectory("quanta-tsvfault").FullName;
        var path = Path.Combine(dir, fileName);
        try
        {
            File.WriteAllText(path, content);
            Assert.Equal(content.Count(c => c == '\n') - 1, ReadAll(path));   // the undamaged file: every row
            var original = Encoding.UTF8.GetBytes(content);
            ReaderProperty.Check(FaultGen.ForBytes, fault =>
            {
                var bytes = fault.Apply(original);
                File.WriteAllBytes(path, bytes);
                return (fileName, bytes.Length, () => ReadAll(path));
            }, iter: 200);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("Text\tLabel\t", "no name for column 3 of 3")]      // before: ML.NET's ArgumentOutOfRangeException "Name cannot be null or white space"
    [InlineData("Text\t\tLabel", "no name for column 2 of 3")]
    [InlineData("Text\tLabel\tText", "names column 'Text' twice")]   // before: accepted, the second 'Text' silently hid the first
    public void AHeaderWithAnUnnamedOrRepeatedColumnIsRefusedNamingTheFile(string header, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("quanta-tsvheader").FullName;
        var path = Path.Combine(dir, "data.tsv");
        try
        {
            File.WriteAllText(path, header + "\nan apple\tfruit\tx\n");
            var e = Assert.Throws<InvalidDataException>(() => ReadAll(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(expected, e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
