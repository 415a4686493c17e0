#!/usr/bin/env bash
# On a GPU host with several GPUs (PyTorch installed for libtorch + NCCL, no .NET): unpacks the bundle made by
#   bash scripts/make-gpu-bundle.sh src/QuanTA.Cli/QuanTA.Cli.csproj
# and runs (1) the data-parallel benchmark on the real backbone (TinyLlama shape, QuanTA q,v, fused bank, per-GPU batch
# 8 × 512): 1-GPU and all-GPU runs alternating (REPEATS pairs, default 2, + a last 1-GPU run), JSON with world_size /
# tokens_per_s / tokens_per_s_single / speedup (ratio of the means; every run listed) and the losses of both; (2) the same with a bounded host wait for every collective (--blocking-wait 1, QUANTA_NCCL_BLOCKING_WAIT=1), to see what waiting costs;
# (3) `quanta finetune --nproc-per-node N` end to end through the ML.NET estimator on the embedded WordNet task, against
# one process with N× the batch (the logged losses must agree); (4) the long-run memory check on one GPU.
#   bash bench/run-ddp-gpu.sh out/gpu-bundle.tar.xz RESULTS_DIR
set -uo pipefail
bundle=$1; out=${2:-${OUT:-/tmp/quanta-results}}
mkdir -p /tmp/qb "$out" && tar -xJf "$bundle" -C /tmp/qb
export QUANTA_LIBTORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')
export NCCL_NVLS_ENABLE=0
n=$(nvidia-smi -L | wc -l)
b=/tmp/qb/bench
steps=${STEPS:-80}
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  $b/quanta-bench ddp --model llama --shape tinyllama --nproc-per-node "$n" --steps "$steps" --warmup 5 --repeats "${REPEATS:-2}" \
    --out "$out/ddp_llama_tinyllama.json" > "$out/ddp_llama_log.txt" 2>&1
  python3 - "$out/ddp_llama_tinyllama.json" <<'PY'
import json, sys; d = json.load(open(sys.argv[1]))
print({k: d.get(k) for k in ["world_size", "tokens_per_s", "tokens_per_s_single", "tokens_per_s_single_doubled_batch", "speedup", "max_rel_loss_diff", "phase_ms_single", "phase_ms_ddp_rank0"]})
PY
  [ "${SKIP_BLOCKING:-0}" != 1 ] && $b/quanta-bench ddp --model llama --shape tinyllama --nproc-per-node "$n" --steps "$steps" --warmup 5 --repeats "${REPEATS:-2}" --blocking-wait 1 \
    --out "$out/ddp_llama_tinyllama_blocking.json" > "$out/ddp_llama_blocking_log.txt" 2>&1 && \
  python3 -c "import json,sys; d=json.load(open('$out/ddp_llama_tinyllama_blocking.json')); print('blocking', {k: d.get(k) for k in ['tokens_per_s','tokens_per_s_single','speedup','phase_ms_ddp_rank0']})"
fi
if [ "${SKIP_FINETUNE:-0}" != 1 ]; then
  zcat samples/Data/wordnet/lexname-train.tsv.gz > /tmp/lexname-train.tsv
  common=(finetune --base-model samples/Models/wordnet-llama-tiny --train /tmp/lexname-train.tsv --epochs 1 --max-seq-len 64
          --target-modules all-linear --lr 2e-3 --device cuda)
  /usr/bin/time -f "%e s" $b/quanta "${common[@]}" --batch-size $((16 * n)) --output /tmp/ft1.zip > "$out/finetune_1proc.txt" 2>&1
  /usr/bin/time -f "%e s" $b/quanta "${common[@]}" --batch-size 16 --nproc-per-node "$n" --output /tmp/ftn.zip > "$out/finetune_${n}proc.txt" 2>&1
  tail -3 "$out/finetune_1proc.txt"; tail -3 "$out/finetune_${n}proc.txt"
fi
if [ "${SKIP_MEMLOOP:-0}" != 1 ]; then
  CUDA_VISIBLE_DEVICES=0 $b/quanta-bench memloop --shape tinyllama --steps "${MEMLOOP_STEPS:-300}" --every 50 --out "$out" 2>&1 | tail -3
fi
