#!/usr/bin/env bash
# The committed beauty sweep: prepares AtSpeed beauty, runs
# experiments/sweeps/beauty_tiger_small.sh with 2 jobs x 1 thread (re-running it
# continues a killed or cut sweep), copies its tidy CSV to experiments/results/ and
# draws the sweep figures into experiments/results/figures/sweep/.
#
# usage: experiments/beauty_sweep.sh [RESULTS_DIR]   (env: EARNEST, JOBS, EARNEST_DATA_MIRROR)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
export EARNEST=${EARNEST:-$SRC/build/earnest}
export EARNEST_DATA=${EARNEST_DATA:-$SRC/out/data}
export EARNEST_DATA_MIRROR=${EARNEST_DATA_MIRROR:-$SRC/../shared/datasets}
RESULTS=${1:-$SRC/out/sweeps/beauty_tiger_small}
[ -f "$EARNEST_DATA/beauty/meta.json" ] || make -f "$SRC/Makefile.data" beauty DATA="$EARNEST_DATA" EARNEST="$EARNEST"
status=0
"$SRC/experiments/sweep.sh" "$SRC/experiments/sweeps/beauty_tiger_small.sh" --jobs "${JOBS:-2}" --results "$RESULTS" || status=$?
cp "$RESULTS/sweep.csv" "$SRC/experiments/results/sweep_beauty_tiger_small.csv"
bash "$SRC/plots/sweep.sh" --out "$SRC/experiments/results/figures/sweep" \
    "$SRC/experiments/results/sweep_beauty_tiger_small.csv" "$SRC"/experiments/results/bench_lengths_*.csv || status=$?
exit $status
