#!/usr/bin/env bash
# decode_probe.sh: where batch-1 GPU decode spends its time, and what the two
# remedies for a launch- or GEMM-bound step buy, as one script for a lent GPU
# machine (the GPU benchmarks issue: earnest >= 5x HF per user at 150 tokens).
# Run from the repository root after experiments/gpu/pack.sh, carrying .gpucarry.
# Configurations (environment of earnest, runtime/cuda/):
#   default   cublasGemmEx, eager launches
#   tuned     EARNEST_CUDA_GEMM=tuned: bf16 products by the fastest of cublasGemmEx
#             and cuBLASLt's candidates, timed per shape (gemm_lt.h)
#   graphs    EARNEST_CUDA_GRAPHS=1: repeated forwards replayed as a CUDA graph
#   both      tuned + graphs
# Outputs in $OUT (default ./gpu-out):
#   probe.log               everything, including EARNEST_CUDA_PHASES=1 breakdowns
#   short_configs.csv       bench rows at 150 tokens, batch 1 and 4, full and EARN, per configuration
#   earnest_hf_configs.csv  bench --model on HF's checkpoint (150 and 1,024 tokens, batch 1 and 16), default and both
#   hf.csv                  HF generate on that checkpoint, same run
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
EG=/tmp/earnest-gpu
rm -rf "$EG" && mkdir -p "$EG" && tar -xJf .gpucarry/pkg.tar.xz -C "$EG" || exit 1
export LD_LIBRARY_PATH="$EG/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OMP_NUM_THREADS=16
E="$EG/earnest"
LOG="$OUT/probe.log"
: > "$LOG"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
declare -A CFG=([default]="" [tuned]="EARNEST_CUDA_GEMM=tuned" [graphs]="EARNEST_CUDA_GRAPHS=1"
                [both]="EARNEST_CUDA_GEMM=tuned EARNEST_CUDA_GRAPHS=1")
ok_both=1
# 1. The kernels' checks under both remedies (against the CPU runtime, the tests' own tolerances).
for t in test_cuda_forward test_cuda_beam; do
    run timeout 90 env EARNEST_CUDA_GEMM=tuned EARNEST_CUDA_GRAPHS=1 "$EG/$t" || ok_both=0
done
if [ $ok_both = 0 ]; then # which remedy broke it
    for c in tuned graphs; do
        for t in test_cuda_forward test_cuda_beam; do run timeout 90 env ${CFG[$c]} "$EG/$t"; done
    done
fi
echo "checks: $((SECONDS - t0)) s" | tee -a "$LOG"
B="--device cuda --dtype bf16 --beam 20 --preset llama2-7b"
# 2. Where the time goes: phases of the full model at 150 tokens, batch 1.
for c in default tuned; do
    run timeout 60 env ${CFG[$c]} EARNEST_CUDA_PHASES=1 "$E" bench $B --method full --prompt-len 150 --batch 1 \
        --reps 10 --out /tmp/phases_$c.csv # 11 searches: the warm-up's tuning is diluted 11-fold
done
echo "phases: $((SECONDS - t0)) s" | tee -a "$LOG"
# 3. End to end per configuration (a configuration whose checks failed is skipped).
for c in default tuned graphs both; do
    [ $c = default ] || [ $ok_both = 1 ] || continue
    run timeout 60 env ${CFG[$c]} "$E" bench $B --method full,earn --k 8 --prompt-len 150 --batch 1,4 --reps 3 \
        --out /tmp/short_$c.csv
done
{
    h=0
    for c in default tuned graphs both; do
        [ -s /tmp/short_$c.csv ] || continue
        [ $h = 1 ] || { echo "config,$(head -1 /tmp/short_$c.csv)"; h=1; }
        tail -n +2 /tmp/short_$c.csv | sed "s/^/$c,/"
    done
} > "$OUT/short_configs.csv"
echo "configurations: $((SECONDS - t0)) s" | tee -a "$LOG"
# 4. The HF peer on one checkpoint, earnest default and both, same run.
CK=/tmp/llama2-7b-random
PYTHONUNBUFFERED=1 run timeout 90 python3 experiments/gpu/hf_beam_bench.py write "$CK"
for c in default both; do
    [ $c = default ] || [ $ok_both = 1 ] || continue
    run timeout 90 env ${CFG[$c]} "$E" bench --model "$CK" --device cuda --dtype bf16 --method full \
        --prompt-len 150,1024 --batch 1,16 --beam 20 --reps 3 --out /tmp/ehf_$c.csv
done
{
    h=0
    for c in default both; do
        [ -s /tmp/ehf_$c.csv ] || continue
        [ $h = 1 ] || { echo "config,$(head -1 /tmp/ehf_$c.csv)"; h=1; }
        tail -n +2 /tmp/ehf_$c.csv | sed "s/^/$c,/"
    done
} > "$OUT/earnest_hf_configs.csv"
PYTHONUNBUFFERED=1 run timeout 120 python3 experiments/gpu/hf_beam_bench.py time "$CK" "$OUT/hf.csv" "150:1,16 1024:1" 3
echo "total: $((SECONDS - t0)) s" | tee -a "$LOG"
