// Usage: node read-gguf.mjs FILE.gguf > header.json
// Reads FILE.gguf with @huggingface/gguf (typed metadata) and prints what it parsed as JSON: every metadata key with its
// GGUF value type (and element type for arrays), every tensor info (name, shape in ggml order, ggml type, offset), and
// the absolute offset of the tensor data. 64-bit integers are printed as decimal strings.
import { gguf } from "@huggingface/gguf";
import path from "node:path";

const file = process.argv[2];
if (!file) {
  console.error("usage: node read-gguf.mjs FILE.gguf");
  process.exit(2);
}
const plain = (v) => (typeof v === "bigint" ? v.toString() : Array.isArray(v) ? v.map(plain) : v);
const { metadata, typedMetadata, tensorInfos, tensorDataOffset, littleEndian } = await gguf(path.resolve(file), {
  typedMetadata: true,
  allowLocalFile: true,
});
const out = {
  version: metadata.version,
  littleEndian,
  tensorCount: plain(metadata.tensor_count),
  kvCount: plain(metadata.kv_count),
  tensorDataOffset: plain(tensorDataOffset),
  metadata: {},
  tensors: tensorInfos.map((t) => ({ name: t.name, shape: t.shape.map(plain), type: t.dtype, offset: plain(t.offset) })),
};
for (const [key, entry] of Object.entries(typedMetadata)) {
  if (key === "version" || key === "tensor_count" || key === "kv_count") continue;
  out.metadata[key] = { type: entry.type, subType: entry.subType ?? null, value: plain(entry.value) };
}
process.stdout.write(JSON.stringify(out));
