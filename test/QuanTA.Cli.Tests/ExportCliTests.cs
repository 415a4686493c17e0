using System.Text.Json.Nodes;

namespace QuanTA.Cli.Tests;

/// <summary><c>quanta export</c>: finetune → export hf, peft and gguf → the exported folders generate what the model .zip generates.</summary>
[Collection("console")]
public class ExportCliTests
{
    static string Dir(string name) => QuantaProcess.Dir(name);

    static (int Code, string Out, string Err) Quanta(params string[] args) => QuantaProcess.Run(args);

    public static TheoryData<string> Methods => new() { "lora", "quanta" };

    [Theory]
    [MemberData(nameof(Methods))]
    public void ExportedFoldersGenerateWhatTheModelGenerates(string method)
    {
        var dir = Directory.CreateTempSubdirectory("quanta-cli-export");
        try
        {
            string train = Path.Combine(dir.FullName, "train.tsv"), zip = Path.Combine(dir.FullName, "model.zip"),
                   hf = Path.Combine(dir.FullName, "hf"), peft = Path.Combine(dir.FullName, "peft");
            var pairs = new[] { ("cat", "animal"), ("rose", "flower"), ("oak", "tree"), ("car", "vehicle") };
            File.WriteAllLines(train, new[] { "Text\tTarget" }.Concat(Enumerable.Range(0, 16).Select(i => $"word: {pairs[i % 4].Item1}\\nkind:\t {pairs[i % 4].Item2}")));
            var ft = Quanta("finetune", "--task", "generation", "--base-model", Dir("llama-tiny"), "--train", train, "--adapter", method,
                "--axis-layout", "8,4,4", "--lora-rank", "4", "--target-modules", "q_proj,v_proj", "--epochs", "2", "--batch-size", "8",
                "--lr", "1e-2", "--max-seq-len", "32", "--output", zip);
            Assert.True(ft.Code == 0, ft.Err);

            var e1 = Quanta("export", "--model", zip, "--format", "hf", "--dtype", "fp32", "--max-shard-size", "1MB", "--output", hf);
            Assert.True(e1.Code == 0, e1.Err);
            var shards = Directory.EnumerateFiles(hf, "model-*-of-*.safetensors").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToList();
            Assert.True(File.Exists(Path.Combine(hf, "model.safetensors.index.json")) && shards.Count > 1, string.Join(", ", shards));   // 2.6 MB in fp32
            Assert.Equal($"model-00001-of-{shards.Count:D5}.safetensors", shards[0]);
            Assert.Contains("exported hf", e1.Err);
            var e2 = Quanta("export", "--model", zip, "--format", "peft", "--output", peft);
            Assert.True(e2.Code == 0, e2.Err);
            Assert.Equal(method == "lora" ? "LORA" : "QUANTA", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(peft, "adapter_config.json")))!["peft_type"]);

            var gguf = Path.Combine(dir.FullName, "gguf");
            var e3 = Quanta("export", "--model", zip, "--format", "gguf", "--gguf-type", "q8_0", "--output", gguf);
            Assert.True(e3.Code == 0, e3.Err);
            Assert.Contains("exported gguf (Q8_0)", e3.Err);
            var head = File.ReadAllBytes(Path.Combine(gguf, "model.gguf"))[..8];   // contents: GgufExportTests, through @huggingface/gguf
            Assert.Equal("GGUF"u8.ToArray(), head[..4]);
            Assert.Equal(3, BitConverter.ToInt32(head, 4));
            var wrongFlag = Quanta("export", "--model", zip, "--format", "gguf", "--dtype", "bf16", "--output", Path.Combine(dir.FullName, "y"));
            Assert.Equal(1, wrongFlag.Code);
            Assert.Contains("--gguf-type", wrongFlag.Err);

            string[] prompt = ["--prompt", "word: oak\nkind:", "--max-new-tokens", "6"];
            var fromZip = Quanta(["generate", "--model", zip, .. prompt]);
            var fromHf = Quanta(["generate", "--model", hf, .. prompt]);
            var fromPeft = Quanta(["generate", "--model", Dir("llama-tiny"), "--adapter", peft, .. prompt]);
            var plain = Quanta(["generate", "--model", Dir("llama-tiny"), .. prompt]);
            Assert.True(fromZip.Code == 0 && fromHf.Code == 0 && fromPeft.Code == 0, fromZip.Err + fromHf.Err + fromPeft.Err);
            Assert.Equal(fromZip.Out, fromHf.Out);
            Assert.Equal(fromZip.Out, fromPeft.Out);
            Assert.NotEqual(plain.Out, fromZip.Out);                                    // fine-tuning changed the answer

            // a non-empty folder is refused without --overwrite (nothing touched), replaced with it
            var before = File.ReadAllBytes(Path.Combine(hf, shards[0]));
            var refused = Quanta("export", "--model", zip, "--format", "hf", "--output", hf);
            Assert.Equal(1, refused.Code);
            Assert.Contains("--overwrite", refused.Err);
            Assert.Equal(before, File.ReadAllBytes(Path.Combine(hf, shards[0])));
            var replaced = Quanta("export", "--model", zip, "--format", "hf", "--output", hf, "--overwrite");
            Assert.True(replaced.Code == 0, replaced.Err);
            Assert.Contains("\"dtype\": \"bfloat16\"", File.ReadAllText(Path.Combine(hf, "config.json")));   // the default dtype
            Assert.Equal(["gguf", "hf", "model.zip", "peft", "train.tsv"], Directory.EnumerateFileSystemEntries(dir.FullName).Select(Path.GetFileName).Order());

            var bad = Quanta("export", "--model", zip, "--format", "onnx", "--output", Path.Combine(dir.FullName, "x"));
            Assert.Equal(1, bad.Code);
            Assert.Contains("--format 'onnx'", bad.Err);
        }
        finally { dir.Delete(true); }
    }
}
