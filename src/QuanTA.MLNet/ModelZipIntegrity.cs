using System.IO.Compression;

namespace QuanTA.MLNet;

/// <summary>
/// Checks every entry of a model .zip against the CRC-32 the zip records for it, before ML.NET reads it.
/// .NET's <see cref="ZipArchive"/> does not verify CRCs, and ML.NET stores tensors uncompressed, so a flipped byte inside a
/// weight would otherwise load as a silently different model.
/// </summary>
internal static class ModelZipIntegrity
{
    static readonly uint[] Table = BuildTable();

    /// <summary>Throws <see cref="InvalidDataException"/> naming the first entry whose bytes do not match its recorded CRC-32
    /// (or whose length differs), or when the file is not a readable zip.</summary>
    public static void Verify(string path)
    {
        using var archive = ZipFile.OpenRead(path);
        var buffer = new byte[1 << 16];
        foreach (var entry in archive.Entries)
        {
            if (entry.FullName.EndsWith('/')) continue;   // a folder entry carries no bytes
            uint crc = 0xFFFFFFFFu;
            long length = 0;
            using (var stream = entry.Open())
            {
                int n;
                while ((n = stream.Read(buffer, 0, buffer.Length)) > 0)
                {
                    length += n;
                    for (int i = 0; i < n; i++) crc = Table[(crc ^ buffer[i]) & 0xFF] ^ (crc >> 8);
                }
            }
            crc ^= 0xFFFFFFFFu;
            if (length != entry.Length)
                throw new InvalidDataException($"zip entry '{entry.FullName}' holds {length} bytes, its header says {entry.Length}");
            if (crc != entry.Crc32)
                throw new InvalidDataException($"zip entry '{entry.FullName}' fails its CRC-32 check (damaged bytes)");
        }
    }

    static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;   // reflected IEEE 802.3 polynomial
            table[i] = c;
        }
        return table;
    }
}
