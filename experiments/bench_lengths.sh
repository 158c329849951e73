#!/usr/bin/env bash
# EARN's speedup vs prompt length, 1K to 16K tokens, for the small and base
# presets (random weights: timing only, prompts may run past the models' position
# limit): one `earnest bench` run per preset, full vs EARN (k = N/4, 1 + 1
# registers) side by side, beam 20, batch 1. Writes
# experiments/results/bench_lengths_{small,base}.csv and draws
# sweep_speedup_vs_len with plots/sweep.sh (beside each preset's N/k).
#
# usage: experiments/bench_lengths.sh   (env: EARNEST, REPS (default 2), THREADS, LENGTHS, PRESETS)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
EARNEST=${EARNEST:-$SRC/build/earnest}
RES=$SRC/experiments/results
REPS=${REPS:-2}
LENGTHS=${LENGTHS:-1024,2048,4096,8192,16384}
threads=()
[ -z "${THREADS:-}" ] || threads=(--threads "$THREADS")
for preset in ${PRESETS:-small base}; do
    echo "== $preset: earnest bench --preset $preset --method full,earn --prompt-len $LENGTHS --beam 20 --reps $REPS"
    ( time "$EARNEST" bench --preset "$preset" --method full,earn --prompt-len "$LENGTHS" --batch 1 --beam 20 \
        --reps "$REPS" "${threads[@]}" --out "$RES/bench_lengths_$preset.csv" ) 2>&1 | tee "$RES/bench_lengths_$preset.txt"
done
shopt -s nullglob
bash "$SRC/plots/sweep.sh" --out "$RES/figures/sweep" "$RES"/bench_lengths_*.csv "$RES"/sweep_*.csv
