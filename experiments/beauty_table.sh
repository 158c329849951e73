#!/usr/bin/env bash
# The baselines table on AtSpeed beauty (issue 11, the analogue of EARN's Table 1):
# prepares beauty, runs experiments/sweeps/beauty_lcrec_table.sh with 2 jobs x 1
# thread (every trained method, and the KV and prompt policies on the finetune
# model), copies its tidy CSV to experiments/results/baselines/ and renders
# experiments/results/baselines/beauty_lcrec_table.md (methods as rows: Recall and
# NDCG@10/20, omega (bench and eval), the prefill/decode split, gamma, KV bytes per user; the points
# not finished yet listed as such) and experiments/results/baselines/figures/sweep_methods.{png,svg}.
#
# The campaign takes about 8 hours on 2 cores (the spec's header has the estimate).
# Each run gives every unfinished training one max_minutes slice (50 min) and
# evaluates what is trained, so a run fits a 3-hour session; running this script
# again continues the campaign (a run killed at any moment loses at most the work
# in flight). The table is rendered after every run, finished or not; the exit status
# is the sweep's (75-style pauses make it nonzero until everything is done).
#
# usage: experiments/beauty_table.sh [RESULTS_DIR]   (env: EARNEST, JOBS, EARNEST_DATA, EARNEST_DATA_MIRROR;
#        BEAUTY_TABLE_SPEC and BEAUTY_TABLE_OUT replace the spec and the output folder, for tests)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export EARNEST=${EARNEST:-$SRC/build/earnest}
export EARNEST_DATA=${EARNEST_DATA:-$SRC/out/data}
export EARNEST_DATA_MIRROR=${EARNEST_DATA_MIRROR:-$SRC/../shared/datasets}
SPEC=${BEAUTY_TABLE_SPEC:-$SRC/experiments/sweeps/beauty_lcrec_table.sh}   # tests give a tiny one
RESULTS=${1:-$SRC/out/sweeps/beauty_lcrec_table}
OUT=${BEAUTY_TABLE_OUT:-$SRC/experiments/results/baselines}
[ -f "$EARNEST_DATA/beauty/meta.json" ] || make -f "$SRC/Makefile.data" beauty DATA="$EARNEST_DATA" EARNEST="$EARNEST"
status=0
"$SRC/experiments/sweep.sh" "$SPEC" --jobs "${JOBS:-2}" --results "$RESULTS" || status=$?
if [ ! -f "$RESULTS/sweep.csv" ]; then
    echo "beauty_table: $RESULTS/sweep.csv: no finished point yet; nothing to render (run again)" >&2
    exit $(( status ? status : 1 ))
fi
mkdir -p "$OUT"
cp "$RESULTS/sweep.csv" "$OUT/beauty_lcrec_table.csv.tmp.$$"
mv "$OUT/beauty_lcrec_table.csv.tmp.$$" "$OUT/beauty_lcrec_table.csv"
/usr/bin/python3 "$SRC/experiments/sweep_table.py" --csv "$OUT/beauty_lcrec_table.csv" --grid "$RESULTS/grid.json" \
    --title "Beauty, LC-Rec prompt, small preset: every method side by side" --out "$OUT/beauty_lcrec_table.md"
# The figure (Recall@10 vs KV reduction and vs omega, plots/sweep.sh's sweep_methods) once finetune is done.
bash "$SRC/plots/sweep.sh" --out "$OUT/figures" "$OUT/beauty_lcrec_table.csv" \
    || echo "beauty_table: no figure drawn (above); the table is written" >&2
echo "beauty_table: $OUT/beauty_lcrec_table.csv, $OUT/beauty_lcrec_table.md ($(tail -n +2 "$OUT/beauty_lcrec_table.csv" | wc -l) of $(grep -c '"id"' "$RESULTS/grid.json") points)"
exit $status
