#!/usr/bin/env bash
# gpu_benchmarks.sh: the GPU benchmarks (earnest vs HF transformers, EARN vs
# full at 1K-16K tokens, the k sweep), as one script for a lent GPU machine.
# Run from the repository root after experiments/gpu/pack.sh, carrying
# .gpucarry; results go to $OUT (default ./gpu-out):
#   lengths.csv  EARN vs full at 1,024 / 4,096 / 16,384 prompt tokens, batch 1, beam 20:
#                llama2-7b (k = 8 of 32) and qwen2.5-7b (k = 7 of 28), random bf16 weights
#   ksweep.csv   llama2-7b, k in {4, 16} at the same lengths (k = 8 is in lengths.csv)
#   hf.csv       HF generate (20 beams, trie constraint) on the saved checkpoint
#   earnest_hf.csv  earnest bench --model on that same checkpoint
set -uo pipefail
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
EG=/tmp/earnest-gpu
rm -rf "$EG" && mkdir -p "$EG" && tar -xJf .gpucarry/pkg.tar.xz -C "$EG" || exit 1
export LD_LIBRARY_PATH="$EG/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" OMP_NUM_THREADS=16
E="$EG/earnest"
LOG="$OUT/benchmarks.log"
: > "$LOG"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; }
t0=$SECONDS
run timeout 60 "$EG/test_cuda_ops"
run timeout 60 "$EG/test_cuda_forward"
B="--device cuda --dtype bf16 --batch 1 --beam 20 --reps 3"
run timeout 150 "$E" bench $B --preset llama2-7b --method full,earn --k 8 --prompt-len 1024,4096,16384 --out "$OUT/l_llama.csv"
run timeout 150 "$E" bench $B --preset qwen2.5-7b --method full,earn --k 7 --prompt-len 1024,4096,16384 --out "$OUT/l_qwen.csv"
{ cat "$OUT/l_llama.csv"; tail -n +2 "$OUT/l_qwen.csv"; } > "$OUT/lengths.csv" && rm -f "$OUT/l_llama.csv" "$OUT/l_qwen.csv"
run timeout 100 "$E" bench $B --preset llama2-7b --method earn --k 4 --prompt-len 1024,4096,16384 --out "$OUT/k4.csv"
run timeout 100 "$E" bench $B --preset llama2-7b --method earn --k 16 --prompt-len 1024,4096,16384 --out "$OUT/k16.csv"
{ cat "$OUT/k4.csv"; tail -n +2 "$OUT/k16.csv"; } > "$OUT/ksweep.csv" && rm -f "$OUT/k4.csv" "$OUT/k16.csv"
echo "benchmarks so far: $((SECONDS - t0)) s" | tee -a "$LOG"
CK=/tmp/llama2-7b-random
PYTHONUNBUFFERED=1 run timeout 120 python3 experiments/gpu/hf_beam_bench.py write "$CK"
run timeout 150 "$E" bench --model "$CK" --device cuda --dtype bf16 --method full --prompt-len 150,1024 \
    --batch 1,4,16 --beam 20 --reps 3 --out "$OUT/earnest_hf.csv"
PYTHONUNBUFFERED=1 run timeout 200 python3 experiments/gpu/hf_beam_bench.py time "$CK" "$OUT/hf.csv" "150:1,16 1024:1,4" 2
echo "total: $((SECONDS - t0)) s" | tee -a "$LOG"
