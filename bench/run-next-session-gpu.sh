#!/usr/bin/env bash
# On the GPU host: the measurements this code has not had yet, in one device session (about 8 minutes on an H200), each
# configuration in its own process so that its peak memory starts from a clean allocator:
#   1. quanta-bench kernel-check with QUANTA_KERNELS=on (the RMSNorm kernel vs libtorch; kernels stay off by default
#      until this passes), then engine-check;
#   2. LLaMA-7B q,v batch 4 × 512: PEFT LoRA r8 (the peer) before and after ours; ours QuanTA on the default path with the
#      library's chunked loss and with the full-logits loss, with gradient checkpointing, NF4 layerwise with and without
#      gradient checkpointing (issue 20's ≤ 10 GiB target), and with the kernels on;
#   3. 500 steps of the default path on TinyLlama with device memory sampled every 50 (MEMLOOP=0 skips it).
# Usage: bash bench/run-next-session-gpu.sh out/gpu-bundle.tar.xz RESULTS_DIR
set -uo pipefail
bundle=$1; out=$2; shape=${SHAPE:-llama7b}
rm -rf /tmp/qb && mkdir -p /tmp/qb "$out" && tar -xJf "$bundle" -C /tmp/qb
export QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
export PYTHONUNBUFFERED=1 SHAPE="$shape" SKIP=quanta_official_style_qv,quanta_materialized_qv,frozen_base_floor
[ "$shape" = llama7b ] && export B=${B:-4}
qb=/tmp/qb/bench/quanta-bench
QUANTA_KERNELS=on $qb kernel-check --out "$out/kernel-check.json" 2>&1 | tail -4
$qb engine-check 2>&1 | tail -1 | tee "$out/engine-check.txt"
peer() { OUT="$out" python3 bench/peer/run_peer.py 2>&1 | grep -v Warning | tail -1; mv "$out/peer_torch_$shape.json" "$out/peer_torch_${shape}_$1.json"; }
peer first
run() { # label, then quanta-bench train arguments
  local label=$1; shift
  "$@" --shape "$shape" --steps "${STEPS:-20}" | grep '^{' | sed "s/^{/{\"config\":\"$label\",/" | tee -a "$out/train_$shape.jsonl" | cut -c1-220
}
: > "$out/train_$shape.jsonl"
run default            $qb train --method quanta
run full-logits-loss   $qb train --method quanta --loss full
run checkpointing      $qb train --method quanta --gradient-checkpointing 1
run nf4-layerwise      $qb train --method quanta-layerwise --quantize nf4
run nf4-layerwise-ckpt $qb train --method quanta-layerwise --quantize nf4 --gradient-checkpointing 1
run lora               $qb train --method lora
QUANTA_KERNELS=on run kernels-on $qb train --method quanta
peer last
# issue 19 item 5: 500 steps of the default path, device memory every 50 (flat after warm-up = no growth)
[ "${MEMLOOP:-1}" = 1 ] && $qb memloop --shape tinyllama --steps 500 --every 50 --out "$out" 2>&1 | tail -2
true
