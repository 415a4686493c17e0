#!/usr/bin/env bash
# On the GPU host: like run-gpu.sh, but every configuration runs REPEATS times, interleaved (a, b, c, a, b, c, ...), each in
# its own process, with the peer (HF + PEFT) before the first and after the last round (PEER_EACH_ROUND=1: at the start of
# every round instead) — so that a noisy or drifting machine shows up as spread instead of as a difference between methods. Configurations are METHOD or METHOD:plain (GQA
# attention without the checkpointed node: autograd keeps the repeated k/v).
# STEPS (timed steps of ours, default 10 like peer_bench.py; runs I–K used 30 for TinyLlama, J 20 for LLaMA-7B).
#   REPEATS=3 bash bench/run-interleaved.sh out/gpu-bundle.tar.xz tinyllama RESULTS_DIR "frozen quanta quanta:plain"
set -uo pipefail
bundle=$1; shape=$2; out=$3; configs=$4
rm -rf /tmp/qb && mkdir -p /tmp/qb "$out" && tar -xJf "$bundle" -C /tmp/qb
export QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
export PYTHONUNBUFFERED=1 SHAPE="$shape" SKIP=${SKIP:-quanta_official_style_qv,quanta_materialized_qv}
[ "$shape" = llama7b ] && export B=${B:-4}
peer() { OUT="$out" python3 bench/peer/run_peer.py 2>&1 | grep -v Warning | tail -1; mv "$out/peer_torch_$shape.json" "$out/peer_torch_${shape}_$1.json"; }
: > "$out/train_$shape.jsonl"
[ "${SKIP_PEER:-0}" = 1 ] || [ "${PEER_EACH_ROUND:-0}" = 1 ] || peer first
for r in $(seq 1 "${REPEATS:-3}"); do
  [ "${SKIP_PEER:-0}" != 1 ] && [ "${PEER_EACH_ROUND:-0}" = 1 ] && peer "round$r"
  for c in $configs; do
    m=${c%%:*}; gqa=checkpoint; [ "$c" != "$m" ] && gqa=${c#*:}
    /tmp/qb/bench/quanta-bench train --shape "$shape" --method "$m" --gqa "$gqa" --steps "${STEPS:-10}" | grep '^{' | sed "s/^{/{\"round\":$r,/" | tee -a "$out/train_$shape.jsonl" | cut -c1-200
  done
done
[ "${SKIP_PEER:-0}" = 1 ] || [ "${PEER_EACH_ROUND:-0}" = 1 ] || peer last
[ "${ATTN:-1}" = 1 ] && /tmp/qb/bench/quanta-bench attn --shape "$shape" --out "$out" | tail -1
true
