// Outside check of a GGUF export with llama.cpp itself (through the npm package node-llama-cpp, which ships a prebuilt CPU
// llama.cpp; install it beside this script: npm install node-llama-cpp). Computes llama.cpp's per-token log-probabilities of
// the token ids in a `quanta score` JSON and prints the largest difference from this project's.
// Usage: node llamacpp_logprobs.mjs model.gguf score.json
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import fs from "node:fs";
const [modelPath, scorePath] = process.argv.slice(2);
const { token_ids: ids, logprobs: ours } = JSON.parse(fs.readFileSync(scorePath, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const ctx = await model.createContext({ contextSize: 64, sequences: 1 });
const out = await ctx.getSequence().controlledEvaluate(ids.map((t) => [t, { generateNext: { logits: true } }]));
let maxDiff = 0;
for (let t = 0; t + 1 < ids.length; t++) {
  const lg = out[t].next.logits;
  let max = -Infinity, sum = 0;
  for (const [, v] of lg) max = Math.max(max, v);
  for (const [, v] of lg) sum += Math.exp(v - max);
  const lp = lg.get(ids[t + 1]) - max - Math.log(sum);
  maxDiff = Math.max(maxDiff, Math.abs(lp - ours[t]));
}
console.log(JSON.stringify({ model: modelPath, tokens: ids.length, maxAbsLogprobDiff: maxDiff }));
process.exit(0);
