#!/usr/bin/env bash
# gpu_benchmarks.sh: the GPU benchmarks (earnest vs HF transformers, EARN vs
# full at 1K-16K tokens, the k sweep), as one script for a lent GPU machine.
# Run from the repository root after experiments/gpu/pack.sh, carrying
# .gpucarry; results go to $OUT (default ./gpu-out):
#   lengths.csv  EARN vs full at 1,024 / 4,096 / 16,384 prompt tokens, beam 20, batch 1
#                and the larger batches that fit (16 or 64 at 1K, 16 at 4K, 4 at 16K):
#                llama2-7b (k = 8 of 32) and qwen2.5-7b (k = 7 of 28), random bf16 weights
#   short.csv    EARN vs full at 150 tokens (the LC-Rec prompt length), batch 1, 16, 64,
#                llama2-7b: tokens/s beside EARN's published 505 / 1,845
#   sweep.csv    the k sweep through the sweep driver (experiments/sweeps/gpu_llama2_k.sh:
#                k = 4, 8, 16 x 1K, 4K, 16K; bench-only points)
# HF=1 adds the HF peer below; ONLY_HF=1 runs the kernel tests and the HF peer alone.
#   hf.csv       (HF=1 only) HF generate (20 beams, trie constraint) on the saved checkpoint
#   earnest_hf.csv  (HF=1 only) earnest bench --model on that same checkpoint
# Measured (one H200, 2026-11-27) in experiments/results/gpu/: benchmarks.log is the
# second run (FlashAttention-2-style prefill, HF skipped); hf.csv and earnest_hf.csv
# come from the first run (benchmarks_run1.log, wmma prefill kernel).
set -uo pipefail
. experiments/gpu/unpack.sh # EG, E, OUT, library path, threads
LOG="$OUT/benchmarks.log"
: > "$LOG"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; }
t0=$SECONDS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
# The kernels' checks first: a wrong kernel stops the run before any figure is taken.
for t in test_cuda_ops test_cuda_forward test_cuda_beam; do
    run timeout 90 "$EG/$t" || { echo "$t failed: no benchmarks" | tee -a "$LOG"; exit 1; }
done
B="--device cuda --dtype bf16 --beam 20 --reps 3"
if [ "${ONLY_HF:-0}" != 1 ]; then # ONLY_HF=1: the kernel tests and the HF comparison alone
# EARN vs full, batch 1 and the larger batches that fit (65,536 prompt rows at most per call).
run timeout 200 "$E" bench $B --batch 1,16,64 --preset llama2-7b --method full,earn --k 8 --prompt-len 1024 --out "$OUT/l1.csv"
run timeout 200 "$E" bench $B --batch 1,16 --preset llama2-7b --method full,earn --k 8 --prompt-len 4096 --out "$OUT/l2.csv"
run timeout 200 "$E" bench $B --batch 1,4 --preset llama2-7b --method full,earn --k 8 --prompt-len 16384 --out "$OUT/l3.csv"
run timeout 200 "$E" bench $B --batch 1,16 --preset qwen2.5-7b --method full,earn --k 7 --prompt-len 1024,4096 --out "$OUT/l4.csv"
run timeout 200 "$E" bench $B --batch 1,4 --preset qwen2.5-7b --method full,earn --k 7 --prompt-len 16384 --out "$OUT/l5.csv"
{ cat "$OUT/l1.csv"; for f in l2 l3 l4 l5; do tail -n +2 "$OUT/$f.csv"; done; } > "$OUT/lengths.csv" && rm -f "$OUT"/l[1-5].csv
run timeout 100 "$E" bench $B --batch 1,16,64 --preset llama2-7b --method full,earn --k 8 --prompt-len 150 --out "$OUT/short.csv"
# The k sweep through the sweep driver (GNU parallel travels in the pack: the image has none).
export PATH="$EG:$PATH" EARNEST="$E"
run timeout 240 experiments/sweep.sh experiments/sweeps/gpu_llama2_k.sh --jobs 1 --results /tmp/gpu_llama2_k
cp /tmp/gpu_llama2_k/sweep.csv "$OUT/sweep.csv"
echo "benchmarks so far: $((SECONDS - t0)) s" | tee -a "$LOG"
fi
[ "${HF:-0}" = 1 ] || [ "${ONLY_HF:-0}" = 1 ] || { echo "HF peer skipped (HF=1 runs it)" | tee -a "$LOG"; exit 0; }
CK=/tmp/llama2-7b-random
PYTHONUNBUFFERED=1 run timeout 120 python3 experiments/gpu/hf_beam_bench.py write "$CK"
run timeout 150 "$E" bench --model "$CK" --device cuda --dtype bf16 --method full --prompt-len 150,1024 \
    --batch 1,4,16 --beam 20 --reps 3 --out "$OUT/earnest_hf.csv"
PYTHONUNBUFFERED=1 run timeout 200 python3 experiments/gpu/hf_beam_bench.py time "$CK" "$OUT/hf.csv" "150:1,16 1024:1,4" 2
echo "total: $((SECONDS - t0)) s" | tee -a "$LOG"
