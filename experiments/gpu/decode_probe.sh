#!/usr/bin/env bash
# decode_probe.sh: where batch-1 GPU decode spends its time, what the decode
# remedies buy, and earnest vs HF on one checkpoint in the same run, as one
# script for a lent GPU machine (the GPU benchmarks issue: earnest >= 5x HF per
# user at 150 tokens). Run from the repository root after
# experiments/gpu/pack.sh, carrying .gpucarry.
# Configurations (environment of earnest, runtime/cuda/):
#   default   bf16 products by the fastest of cublasGemmEx and cuBLASLt's candidates
#             (gemm_lt.h), repeated forwards replayed as CUDA graphs
#   plain     EARNEST_CUDA_GEMM=cublas EARNEST_CUDA_GRAPHS=0: cublasGemmEx, eager launches
# Outputs in $OUT (default ./gpu-out):
#   probe.log          everything, including the EARNEST_CUDA_PHASES=1 breakdown
#   configs.csv        bench rows at 150 tokens, batch 1 and 4, full and EARN, per configuration
#   short.csv          EARN vs full at 150 tokens, batch 1, 16, 64 (default configuration)
#   earnest_hf.csv     earnest bench --model on HF's checkpoint (150 and 1,024 tokens; batch 1, 4, 16)
#   hf.csv             HF generate on that checkpoint, same run
#   lengths_1k.csv     EARN vs full at 1,024 tokens, batch 1, 16, 64 (when time allows)
set -uo pipefail
. experiments/gpu/unpack.sh # EG, E, OUT, library path, threads
LOG="$OUT/probe.log"
: > "$LOG"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
# 1. The kernels' checks (against the CPU runtime, the tests' own tolerances): a failure stops the run.
for t in test_cuda_ops test_cuda_forward test_cuda_beam; do
    run timeout 90 "$EG/$t" || { echo "$t failed: no benchmarks" | tee -a "$LOG"; exit 1; }
done
echo "checks: $((SECONDS - t0)) s" | tee -a "$LOG"
B="--device cuda --dtype bf16 --beam 20 --preset llama2-7b"
# 2. Where the time goes: phases of the full model at 150 tokens, batch 1 (11 searches: the
#    warm-up's tuning is diluted 11-fold; phase timing runs without graphs).
run timeout 60 env EARNEST_CUDA_PHASES=1 "$E" bench $B --method full --prompt-len 150 --batch 1 --reps 10 \
    --out /tmp/phases.csv
# 3. The configurations side by side, then the 150-token table.
for c in plain default; do
    env=""
    [ $c = plain ] && env="EARNEST_CUDA_GEMM=cublas EARNEST_CUDA_GRAPHS=0"
    run timeout 60 env $env "$E" bench $B --method full,earn --k 8 --prompt-len 150 --batch 1,4 --reps 3 \
        --out /tmp/cfg_$c.csv
done
{
    echo "config,$(head -1 /tmp/cfg_default.csv)"
    for c in plain default; do tail -n +2 /tmp/cfg_$c.csv | sed "s/^/$c,/"; done
} > "$OUT/configs.csv"
run timeout 100 "$E" bench $B --batch 1,16,64 --method full,earn --k 8 --prompt-len 150 --reps 3 --out "$OUT/short.csv"
echo "earnest tables: $((SECONDS - t0)) s" | tee -a "$LOG"
# 4. The HF peer on one checkpoint, same run.
CK=/tmp/llama2-7b-random
PYTHONUNBUFFERED=1 run timeout 90 python3 experiments/gpu/hf_beam_bench.py write "$CK"
run timeout 90 "$E" bench --model "$CK" --device cuda --dtype bf16 --method full --prompt-len 150,1024 \
    --batch 1,4,16 --beam 20 --reps 3 --out "$OUT/earnest_hf.csv"
PYTHONUNBUFFERED=1 run timeout 120 python3 experiments/gpu/hf_beam_bench.py time "$CK" "$OUT/hf.csv" "150:1,16 1024:1,4" 3
echo "HF: $((SECONDS - t0)) s" | tee -a "$LOG"
# 5. EARN vs full at 1,024 tokens again (the parent attention's chunks changed), when time allows.
if [ $((SECONDS - t0)) -lt 150 ]; then
    run timeout 60 "$E" bench $B --batch 1,16,64 --method full,earn --k 8 --prompt-len 1024 --reps 3 \
        --out "$OUT/lengths_1k.csv"
fi
echo "total: $((SECONDS - t0)) s" | tee -a "$LOG"
