#!/usr/bin/env bash
# The recommendation study on the AtSpeed `games` data: train the `small`
# preset with `finetune` and with `earn` (k = N/4 = 2, one prefix and one
# suffix register), evaluate both on test beside MostPop, dump and analyse
# their attention on 64 test prompts, and draw the comparison figures.
# Small result files land in experiments/results/ (committed); models and
# dumps in $WORK (not committed).
#
# usage: experiments/games_study.sh [WORK_DIR]   (env: EARNEST, MINUTES, THREADS_EACH, EPOCHS)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
EARNEST=${EARNEST:-$SRC/build/earnest}
WORK=${1:-$SRC/out/games_study}
RES=$SRC/experiments/results
MINUTES=${MINUTES:-50}          # per training run; both run at once, one core each
THREADS_EACH=${THREADS_EACH:-1}
EPOCHS=${EPOCHS:-2}
TEMPLATE=${TEMPLATE:-tiger}
export EARNEST_DATA_MIRROR=${EARNEST_DATA_MIRROR:-$SRC/../shared/datasets}
mkdir -p "$WORK" "$RES"

make -f "$SRC/Makefile.data" games DATA="$WORK/data" EARNEST="$EARNEST"
DATA=$WORK/data/games

common=(--data "$DATA" --preset small --template "$TEMPLATE" --epochs "$EPOCHS" --max-minutes "$MINUTES"
        --threads "$THREADS_EACH" --seed 1 --eval-users 500 --force)
( time "$EARNEST" train "${common[@]}" --method finetune --out "$WORK/finetune" ) > "$WORK/finetune.train.log" 2>&1 &
p1=$!
( time "$EARNEST" train "${common[@]}" --method earn --k 2 --prefix-regs 1 --suffix-regs 1 --out "$WORK/earn" ) \
  > "$WORK/earn.train.log" 2>&1 &
p2=$!
wait $p1 $p2

for m in finetune earn; do
  "$EARNEST" eval --model "$WORK/$m" --data "$DATA" --split test --beam 20 --template "$TEMPLATE" \
    --threads 2 --out "$RES/games_${m}_test.json" --rankings "$WORK/games_${m}_test.tsv"
  cp "$WORK/$m/train_log.csv" "$RES/games_${m}_train_log.csv"
  cp "$WORK/$m/eval_log.csv" "$RES/games_${m}_valid_log.csv"
  "$EARNEST" dump-attn --model "$WORK/$m" --data "$DATA" --split test --samples 64 --template "$TEMPLATE" \
    --out "$WORK/attn_games_$m.h5"
  "$EARNEST" analyze "$WORK/attn_games_$m.h5" --out "$RES/attn_games_$m.csv" | tee "$RES/attn_games_$m.summary.txt"
done
"$EARNEST" eval --method mostpop --data "$DATA" --split test --out "$RES/games_mostpop_test.json"
FINETUNE_CSV=$RES/attn_games_finetune.csv EARN_CSV=$RES/attn_games_earn.csv EARN_K=2 bash "$SRC/plots/figures.sh"
