#!/usr/bin/env bash
# On the GPU host: the quantized-base comparison of issue 20 (same protocol as bench/run-gpu.sh: one process per run, so
# each peak is measured from a clean allocator). Unpacks the bundle made by scripts/make-gpu-bundle.sh.
#   bash bench/run-quantized-gpu.sh out/gpu-bundle.tar.xz llama7b RESULTS_DIR
# METHODS (default "quanta-layerwise quanta lora frozen") × QUANTIZE (default "none nf4 int8") runs are written to
# RESULTS_DIR/train_<shape>_quantized.jsonl.
set -uo pipefail
bundle=$1; shape=${2:-llama7b}; out=${3:-${OUT:-/tmp/quanta-results}}
rm -rf /tmp/qb && mkdir -p /tmp/qb "$out" && tar -xJf "$bundle" -C /tmp/qb
export QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
: > "$out/train_${shape}_quantized.jsonl"
for m in ${METHODS:-quanta-layerwise quanta lora frozen}; do
  for q in ${QUANTIZE:-none nf4 int8}; do
    /tmp/qb/bench/quanta-bench train --shape "$shape" --method "$m" --quantize "$q" | grep '^{' | tee -a "$out/train_${shape}_quantized.jsonl"
  done
done
