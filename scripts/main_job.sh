#!/usr/bin/env bash
# The main job on the embedded default: everything earnest can do today, end
# to end, in a few minutes on 2 cores. Usage: main_job.sh EARNEST_BIN OUT_DIR
set -euo pipefail
EARNEST=${1:-build/earnest}
OUT=${2:-out}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${EARNEST_SHARED:-$SRC/../shared}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1. synthetic dataset (planted sequential structure) -> $OUT/data/synthetic"
"$EARNEST" prepare synthetic --out "$OUT/data/synthetic"
"$EARNEST" data stats "$OUT/data/synthetic"

step "2. a tiny random model -> $OUT/models/tiny-random"
"$EARNEST" init --preset tiny --vocab-size 1200 --out "$OUT/models/tiny-random" --seed 1

step "3. forward pass with attention capture -> $OUT/forward.h5"
"$EARNEST" forward --model "$OUT/models/tiny-random" --tokens "1 17 42 99 5 7 1000 3" --attn --out "$OUT/forward.h5"

if [ -f "$SHARED/models/stories260K/stories260K.bin" ]; then
  step "4. convert the pretrained llama2.c stories260K -> $OUT/models/stories260K"
  "$EARNEST" convert --llama2c "$SHARED/models/stories260K/stories260K.bin" \
    --tokenizer "$SHARED/models/stories260K/tok512.bin" --out "$OUT/models/stories260K"
  "$EARNEST" forward --model "$OUT/models/stories260K" --tokens "1 403 407 261 378" --attn --out "$OUT/stories_forward.h5"
  step "4b. attention of the pretrained LM on TinyStories-style text -> $OUT/attn/nlp_stories260K.{h5,csv}"
  mkdir -p "$OUT/attn"
  "$EARNEST" dump-attn --model "$OUT/models/stories260K" --text-file "$SRC/experiments/data/tinystories_like.txt" \
    --out "$OUT/attn/nlp_stories260K.h5"
  "$EARNEST" analyze "$OUT/attn/nlp_stories260K.h5" --out "$OUT/attn/nlp_stories260K.csv"
fi

step "5. benchmark: full vs EARN prefill/decode on the small preset -> $OUT/bench.csv"
"$EARNEST" bench --preset small --method full,earn --k 2 --prompt-len 256 --batch 4 --beam 4 --reps 2 --out "$OUT/bench.csv"

step "6. figures from the analysis CSVs -> $OUT/figures"
bash "$SRC/plots/figures.sh" --out "$OUT/figures" "$OUT"/attn/*.csv

step "done: results under $OUT/"
