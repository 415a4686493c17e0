#!/usr/bin/env bash
# Builds the inputs of the outside export check (tools/export/check_exports.py, run where transformers / PEFT / gguf live):
# fine-tunes LoRA and QuanTA on the llama-tiny fixture with the CLI, exports each as hf (fp32), peft and gguf (f32, q8_0),
# and records this project's per-token log-probabilities of a probe text on the .zip models (quanta score).
# Usage: bash tools/export/make-export-check.sh OUTDIR
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: make-export-check.sh OUTDIR}"
rm -rf "$out"; mkdir -p "$out"
q() { dotnet src/QuanTA.Cli/bin/Release/net10.0/quanta.dll "$@"; }
base=test/fixtures/llama-tiny
python3 - "$out/train.tsv" <<'PY'
import sys
pairs = [("cat", "animal"), ("rose", "flower"), ("oak", "tree"), ("car", "vehicle")]
with open(sys.argv[1], "w") as f:
    f.write("Text\tTarget\n")
    for i in range(32): f.write(f"word: {pairs[i % 4][0]}\\nkind:\t {pairs[i % 4][1]}\n")
PY
probe="word: oak kind: tree. word: rose kind: flower"
for m in lora quanta; do
  q finetune --task generation --base-model $base --train "$out/train.tsv" --adapter $m --lora-rank 4 \
    --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --epochs 3 --batch-size 8 --lr 1e-2 --max-seq-len 32 \
    --output "$out/$m.zip" 2>/dev/null
  q export --model "$out/$m.zip" --format hf --dtype fp32 --output "$out/$m-hf" 2>/dev/null
  q export --model "$out/$m.zip" --format peft --output "$out/$m-peft" 2>/dev/null
  for t in f32 q8_0; do q export --model "$out/$m.zip" --format gguf --gguf-type $t --output "$out/$m-gguf-$t" 2>/dev/null; done
  q score --model "$out/$m-hf" --text "$probe" > "$out/$m-score-hf.json"
  q score --model $base --adapter "$out/$m-peft" --text "$probe" > "$out/$m-score-peft.json"
done
rm -f "$out"/*.zip "$out/train.tsv"
du -sh "$out"
