#!/usr/bin/env bash
# On the GPU host (PyTorch + transformers + peft installed, no .NET): unpacks the bundle made by
# scripts/make-gpu-bundle.sh and runs the peer (HF + PEFT) and ours back to back on the same GPU.
#   bash bench/run-gpu.sh out/gpu-bundle.tar.xz tinyllama RESULTS_DIR
set -uo pipefail
bundle=$1; shape=${2:-tinyllama}; out=${3:-${OUT:-/tmp/quanta-results}}
mkdir -p /tmp/qb "$out" && tar -xJf "$bundle" -C /tmp/qb
export QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
export PYTHONUNBUFFERED=1 OUT="$out" SHAPE="$shape"
python3 bench/peer/run_peer.py 2>&1 | grep -v Warning
python3 bench/peer/peer_decode.py 2>&1 | grep -v Warning
/tmp/qb/bench/quanta-bench suite --shape "$shape" --gpu-name "$gpu" --out "$out" ${EXTRA:-}
