#!/usr/bin/env bash
# On the GPU host (PyTorch + transformers + peft installed, no .NET): unpacks the bundle made by
# scripts/make-gpu-bundle.sh and runs the peer (HF + PEFT) and ours back to back on the same GPU.
#   bash bench/run-gpu.sh out/gpu-bundle.tar.xz tinyllama RESULTS_DIR
# Each of our training methods runs in its own process, so that its peak memory is measured from a clean allocator.
set -uo pipefail
bundle=$1; shape=${2:-tinyllama}; out=${3:-${OUT:-/tmp/quanta-results}}
rm -rf /tmp/qb && mkdir -p /tmp/qb "$out" && tar -xJf "$bundle" -C /tmp/qb
export QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
export PYTHONUNBUFFERED=1 OUT="$out" SHAPE="$shape"
# the peer takes its batch from B (default 8): use the same batch as our shape table (llama7b: 4)
[ "$shape" = llama7b ] && export B=${B:-4}
if [ "${SKIP_PEER:-0}" != 1 ]; then
  python3 bench/peer/run_peer.py 2>&1 | grep -v Warning
  [ "${SKIP_DECODE:-0}" != 1 ] && python3 bench/peer/peer_decode.py 2>&1 | grep -v Warning
fi
: > "$out/train_$shape.jsonl"
for m in ${METHODS:-quanta quanta-stacked quanta-layerwise quanta-layerwise-uncached lora frozen}; do
  /tmp/qb/bench/quanta-bench train --shape "$shape" --method "$m" | grep '^{' | tee -a "$out/train_$shape.jsonl"
done
/tmp/qb/bench/quanta-bench suite --shape "$shape" --methods "" --gpu-name "$gpu" --out "$out" $([ "${SKIP_DECODE:-0}" = 1 ] && echo --skip-infer 1)
# one adapted q/v projection per fused mode (phases), and the two gradient routes of the layerwise modes, alone
/tmp/qb/bench/quanta-bench layer --shape "$shape" --reps 10 --out "$out" | grep '^{'
/tmp/qb/bench/quanta-bench tokengrad --shape "$shape" --reps 10 | grep '^{' | tee "$out/tokengrad_$shape.jsonl"
python3 - "$out" "$shape" <<'PY'
import json, sys, os
out, shape = sys.argv[1], sys.argv[2]
p = os.path.join(out, f"quanta_dotnet_{shape}.json"); r = json.load(open(p))
for line in open(os.path.join(out, f"train_{shape}.jsonl")):
    t = json.loads(line); r["train_" + t["method"]] = t
json.dump(r, open(p, "w"), indent=1); print(json.dumps(r))
PY
