#!/usr/bin/env bash
# experiments/sweep_bench.sh: the point command of a bench-only point (dataset=none),
# run by experiments/sweep_work.sh in RESULTS/points/ID with the SWEEP_* variables.
# `earnest bench` on random weights of the point's preset (the 7B shapes are drawn
# on the GPU with device=cuda), full vs the point's method (EARN at its k and registers, a
# learned baseline's shape, a policy) at the point's prompt length, on the point's device and dtype; then metrics.json
# (experiments/sweep_metrics.py bench): the speedup and KV reduction beside the
# closed forms N/k and (N-k)/N, and the prefill's share of the matrix-product
# ceiling measured in the same run.
set -euo pipefail
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
args=(--preset "$SWEEP_PRESET" --method "$SWEEP_BENCH_METHODS" --prompt-len "$SWEEP_PROMPT_LEN" --batch "$SWEEP_BENCH_BATCH"
      --beam "$SWEEP_BENCH_BEAM" --reps "$SWEEP_BENCH_REPS" --threads "$SWEEP_THREADS" --seed "$SWEEP_SEED"
      --device "$SWEEP_DEVICE" --dtype "${SWEEP_DTYPE:-f32}" --out bench.csv)
[ "$SWEEP_METHOD" != earn ] ||
    args+=(--k "$SWEEP_K" --prefix-regs "$SWEEP_PREFIX_REGS" --suffix-regs "$SWEEP_SUFFIX_REGS")
say "bench-only point: earnest bench ${args[*]}"
"$SWEEP_EARNEST" bench "${args[@]}" > bench.txt
"${EARNEST_PYTHON:-/usr/bin/python3}" "$SWEEP_SRC/experiments/sweep_metrics.py" bench --bench bench.csv --method "$SWEEP_METHOD" \
    --own "$SWEEP_BENCH_OWN" --keep-layers "$SWEEP_KEEP_LAYERS" --k "$SWEEP_K" --n-layers "$SWEEP_N_LAYERS" --out metrics.json
say "metrics.json written"
