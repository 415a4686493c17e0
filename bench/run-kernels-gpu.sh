#!/usr/bin/env bash
# On the GPU host: issue 19's measurements with the CUDA kernels on by default, each configuration in its own process, the peer
# (HF + PEFT, bench/peer/run_peer.py) measured in the same session. Two parts, so each fits one device call:
#   PART=a: quanta-bench kernel-check (every kernel vs libtorch, values and gradients, then timings) and LLaMA-7B (B = 4 × 512):
#           the peer, ours (QuanTA default path with kernels on and off, layerwise, LoRA r8, frozen base; NF4 layerwise with
#           gradient checkpointing, and two rows with PyTorch's expandable-segments allocator), the peer again, a second round.
#   PART=b: TinyLlama (B = 8 × 512) and the LLaMA-3-8B shape (B = 2 × 1024), peer and ours; then 500 steps of the default path
#           with device memory sampled every 50 (issue 19 item 5).
#   PART=c: the memory-bound rows (NF4 + checkpointing, layerwise) again after a change.
#   PART=r1: the stacked-recompute path on LLaMA-7B: kernel-check, the peer, stacked-recompute with chunks of 2, 4 and 8 layers,
#           stacked and layerwise in the same round, NF4 on stacked-recompute with and without checkpointing, the peer again.
#   PART=r2: a second LLaMA-7B round (stacked-recompute, stacked, NF4 stacked-recompute with checkpointing), TinyLlama and the
#           LLaMA-3-8B shape with their peers.
#   PART=r3: TinyLlama (B = 8 × 512): the peer, ours (default, stacked-recompute, layerwise, LoRA, frozen), the peer again.
#   PART=r4: after the fused LoRA addition and the stacked-recompute review fixes: LLaMA-7B (peer, LoRA, stacked-recompute)
#           and TinyLlama (peer, LoRA).
#   PART=next: kernel-check, then LLaMA-7B (peer, stacked-recompute with the hand-differentiated chunk backward, stacked, LoRA)
#           and TinyLlama (peer, LoRA, frozen, peer): the changes the second session could not time. Writes 8 files.
# Usage: PART=a bash bench/run-kernels-gpu.sh out/gpu-bundle.tar.xz RESULTS_DIR
set -uo pipefail
bundle=$1; out=$2; part=${PART:-a}
rm -rf /tmp/qb && mkdir -p /tmp/qb "$out" && tar -xJf "$bundle" -C /tmp/qb
export QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
export PYTHONUNBUFFERED=1
qb=/tmp/qb/bench/quanta-bench
peer() { # shape, label (B, T and SKIP from the environment)
  SHAPE=$1 OUT="$out" python3 bench/peer/run_peer.py 2>&1 | grep -v Warning | tail -1 | cut -c1-300
  mv "$out/peer_torch_$1.json" "$out/peer_torch_$1_$2.json"
}
run() { # shape, label, then quanta-bench train arguments
  local shape=$1 label=$2; shift 2
  "$@" --shape "$shape" --steps "${STEPS:-20}" | grep '^{' | sed "s/^{/{\"config\":\"$label\",/" | tee -a "$out/train_$shape.jsonl" | cut -c1-160
}
export SKIP=quanta_official_style_qv,quanta_materialized_qv
if [ "$part" = a ]; then
  $qb kernel-check --out "$out/kernel-check.json" 2>&1 | grep -v '^{"check"' | tail -12 | cut -c1-400
  export B=4
  peer llama7b first
  for round in 1 2; do
    run llama7b quanta-r$round $qb train --method quanta
    run llama7b quanta-layerwise-r$round $qb train --method quanta-layerwise
    run llama7b lora-r$round $qb train --method lora
    [ $round = 2 ] && continue
    QUANTA_KERNELS=off run llama7b quanta-kernels-off $qb train --method quanta
    run llama7b frozen $qb train --method frozen
    run llama7b nf4-layerwise-ckpt $qb train --method quanta-layerwise --quantize nf4 --gradient-checkpointing 1
    run llama7b nf4-quanta $qb train --method quanta --quantize nf4
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True run llama7b nf4-layerwise-ckpt-expandable $qb train --method quanta-layerwise --quantize nf4 --gradient-checkpointing 1
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True run llama7b quanta-layerwise-expandable $qb train --method quanta-layerwise
    peer llama7b mid
  done
elif [ "$part" = r1 ]; then
  $qb kernel-check --out "$out/kernel-check.json" 2>&1 | grep -v '^{"check"' | tail -6 | cut -c1-400
  export B=4
  peer llama7b first
  run llama7b recompute-c4-r1 $qb train --method quanta-stacked-recompute --recompute-chunk 4
  run llama7b stacked-r1 $qb train --method quanta-stacked
  run llama7b recompute-c2 $qb train --method quanta-stacked-recompute --recompute-chunk 2
  run llama7b recompute-c8 $qb train --method quanta-stacked-recompute --recompute-chunk 8
  run llama7b layerwise-r1 $qb train --method quanta-layerwise
  run llama7b nf4-recompute-ckpt $qb train --method quanta-stacked-recompute --quantize nf4 --gradient-checkpointing 1
  run llama7b nf4-recompute $qb train --method quanta-stacked-recompute --quantize nf4
  peer llama7b mid
elif [ "$part" = r2 ]; then
  export B=4
  run llama7b recompute-c4-r2 $qb train --method quanta-stacked-recompute ${CHUNK:+--recompute-chunk $CHUNK}
  run llama7b stacked-r2 $qb train --method quanta-stacked
  run llama7b nf4-recompute-ckpt-r2 $qb train --method quanta-stacked-recompute --quantize nf4 --gradient-checkpointing 1
  peer llama7b last
  B=8 peer tinyllama first
  run tinyllama recompute $qb train --method quanta-stacked-recompute ${CHUNK:+--recompute-chunk $CHUNK}
  run tinyllama stacked $qb train --method quanta-stacked
  B=2 T=1024 SKIP=$SKIP,frozen_base_floor peer llama3-8b first
  run llama3-8b recompute $qb train --method quanta-stacked-recompute --seq 1024 ${CHUNK:+--recompute-chunk $CHUNK}
  run llama3-8b layerwise $qb train --method quanta-layerwise --seq 1024
elif [ "$part" = r3 ]; then   # TinyLlama, every method of ours between two peer measurements
  B=8 peer tinyllama first
  run tinyllama quanta $qb train --method quanta
  run tinyllama recompute $qb train --method quanta-stacked-recompute
  run tinyllama layerwise $qb train --method quanta-layerwise
  run tinyllama lora $qb train --method lora
  run tinyllama frozen $qb train --method frozen
  B=8 peer tinyllama last
elif [ "$part" = r4 ]; then   # after the review fixes and the fused LoRA addition: LLaMA-7B and TinyLlama, LoRA first
  export B=4
  peer llama7b first
  run llama7b lora $qb train --method lora
  run llama7b recompute $qb train --method quanta-stacked-recompute
  B=8 peer tinyllama first
  run tinyllama lora $qb train --method lora
elif [ "$part" = next ]; then   # first thing next session: the untimed changes of the last one, paired with the peer
  $qb kernel-check --out "$out/kernel-check.json" 2>&1 | grep -v '^{"check"' | tail -3 | cut -c1-300
  export B=4
  peer llama7b first
  run llama7b recompute $qb train --method quanta-stacked-recompute      # hand-differentiated chunk backward
  run llama7b stacked $qb train --method quanta-stacked
  run llama7b lora $qb train --method lora
  B=8 peer tinyllama first
  run tinyllama lora $qb train --method lora                             # the fused LoRA addition, paired this time
  run tinyllama frozen $qb train --method frozen
  B=8 peer tinyllama last
elif [ "$part" = c ]; then   # after the frozen chain's cache was built in batches of layers: the memory-bound rows again
  export B=4
  run llama7b nf4-layerwise-ckpt $qb train --method quanta-layerwise --quantize nf4 --gradient-checkpointing 1
  run llama7b nf4-layerwise-uncached-ckpt $qb train --method quanta-layerwise-uncached --quantize nf4 --gradient-checkpointing 1
  run llama7b quanta-layerwise $qb train --method quanta-layerwise
  run llama7b quanta $qb train --method quanta
  run llama3-8b quanta-layerwise $qb train --method quanta-layerwise --seq 1024
else
  B=8 peer tinyllama first
  run tinyllama quanta $qb train --method quanta
  run tinyllama quanta-layerwise $qb train --method quanta-layerwise
  run tinyllama lora $qb train --method lora
  run tinyllama frozen $qb train --method frozen
  B=2 T=1024 SKIP=$SKIP,frozen_base_floor peer llama3-8b first
  run llama3-8b quanta $qb train --method quanta --seq 1024
  run llama3-8b quanta-layerwise $qb train --method quanta-layerwise --seq 1024
  run llama3-8b lora $qb train --method lora --seq 1024
  [ "${MEMLOOP:-1}" = 1 ] && $qb memloop --shape tinyllama --steps 500 --every 50 --out "$out" 2>&1 | tail -1 | cut -c1-300
fi
true
