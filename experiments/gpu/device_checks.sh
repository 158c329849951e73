#!/usr/bin/env bash
# device_checks.sh: the GPU runtime's checks and its first benchmark row, as
# one script for a lent GPU machine (runtime/cuda/, the GPU runtime issue).
#
# That machine has CUDA, PyTorch and transformers but not this project's
# Debian libraries, so the binaries are built here and carried:
#   experiments/gpu/pack.sh            # builds build-gpu/ (-march=x86-64-v3) and .gpucarry/pkg.tar.xz
# then, on the GPU machine, from the repository root (carry .gpucarry):
#   bash experiments/gpu/device_checks.sh [all|tests|bench]
# Logs and CSVs go to $OUT (default ./gpu-out). Each step has a timeout and
# the summary at the end says which passed.
set -uo pipefail
WHAT="${1:-all}"
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
ROOT="$PWD"
EG=/tmp/earnest-gpu
rm -rf "$EG" && mkdir -p "$EG"
tar -xJf .gpucarry/pkg.tar.xz -C "$EG" || { echo "no .gpucarry/pkg.tar.xz: run experiments/gpu/pack.sh first"; exit 1; }
PY=$(command -v python3)
CUBLAS_DIR=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -e "$d/libcublas.so.13" ] && { CUBLAS_DIR="$d"; break; }
done
if [ -z "$CUBLAS_DIR" ]; then
    CUBLAS_DIR=$("$PY" -c "import nvidia.cu13, os; print(os.path.join(os.path.dirname(nvidia.cu13.__file__), 'lib'))" 2>/dev/null ||
                 dirname "$(find / -xdev -name 'libcublas.so.13' 2>/dev/null | head -1)")
fi
export LD_LIBRARY_PATH="$EG/lib:$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export EARNEST_BIN="$EG/earnest" EARNEST_SOURCE_DIR="$ROOT" EARNEST_PYTHON="$PY" OMP_NUM_THREADS=16
echo "cublas from $CUBLAS_DIR; python $PY"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
declare -A RESULT
step() { # step NAME TIMEOUT_S COMMAND...
    local name=$1 t=$2; shift 2
    local t0=$SECONDS
    echo "=== $name"
    timeout "$t" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 40 "$OUT/$name.log"
    RESULT[$name]="rc=$rc $((SECONDS - t0))s"
}
if [ "$WHAT" = all ] || [ "$WHAT" = tests ]; then
    step test_cuda_ops 60 "$EG/test_cuda_ops"
    step test_cuda_forward 60 "$EG/test_cuda_forward"
    step test_cuda_beam 60 "$EG/test_cuda_beam"
    step check_cuda_eval 150 bash tests/check_cuda_eval.sh
    step check_cuda_hf 120 bash tests/check_cuda_hf.sh
fi
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
    # The first benchmark row: full vs EARN (k = 8 of 32) at 4,096 prompt tokens on the
    # Llama-2-7B shape (random bf16 weights drawn on the GPU), batch 1, beam 20.
    step bench_llama2-7b 150 "$EARNEST_BIN" bench --device cuda --dtype bf16 --preset llama2-7b --method full,earn \
        --k 8 --prompt-len 4096 --batch 1 --beam 20 --reps 5 --out "$OUT/bench_llama2-7b_4096.csv"
fi
echo "=== summary"
for k in "${!RESULT[@]}"; do echo "$k: ${RESULT[$k]}"; done | sort | tee "$OUT/summary.txt"
