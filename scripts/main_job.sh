#!/usr/bin/env bash
# The main job on the embedded default, end to end in a few minutes on 2
# cores: synthetic data -> tiny models (finetune and EARN) -> evaluation beside
# MostPop -> attention dumps -> analysis -> figures, plus the pretrained
# stories260K on text and a short full-vs-EARN benchmark.
# Usage: main_job.sh EARNEST_BIN OUT_DIR
set -euo pipefail
EARNEST=${1:-build/earnest}
OUT=${2:-out}
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${EARNEST_SHARED:-$SRC/../shared}
EPOCHS=${EPOCHS:-8}
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }
DATA=$OUT/data/synthetic

step "1. synthetic dataset (planted sequential structure) -> $DATA"
"$EARNEST" prepare synthetic --out "$DATA"
"$EARNEST" data stats "$DATA"

for method in finetune earn; do
  step "2. train a tiny $method model on it -> $OUT/models/tiny-$method"
  extra=()
  [ "$method" = earn ] && extra=(--k 1 --prefix-regs 1 --suffix-regs 1)
  "$EARNEST" train --data "$DATA" --preset tiny --method "$method" "${extra[@]}" --template tiger \
    --epochs "$EPOCHS" --eval-users 200 --out "$OUT/models/tiny-$method" --force
  step "3. evaluate it on test (beam 20, MostPop beside it) -> $OUT/eval/tiny-$method.json"
  "$EARNEST" eval --model "$OUT/models/tiny-$method" --data "$DATA" --split test \
    --out "$OUT/eval/tiny-$method.json" --rankings "$OUT/eval/tiny-$method.tsv"
  step "4. dump and analyse its attention on 32 test prompts -> $OUT/attn/rec_tiny-$method.{h5,csv}"
  "$EARNEST" dump-attn --model "$OUT/models/tiny-$method" --data "$DATA" --split test --samples 32 \
    --out "$OUT/attn/rec_tiny-$method.h5"
  "$EARNEST" analyze "$OUT/attn/rec_tiny-$method.h5" --out "$OUT/attn/rec_tiny-$method.csv"
done

if [ -f "$SHARED/models/stories260K/stories260K.bin" ]; then
  step "5. the pretrained llama2.c stories260K: convert, attention on TinyStories-style text"
  "$EARNEST" convert --llama2c "$SHARED/models/stories260K/stories260K.bin" \
    --tokenizer "$SHARED/models/stories260K/tok512.bin" --out "$OUT/models/stories260K"
  "$EARNEST" dump-attn --model "$OUT/models/stories260K" --text-file "$SRC/experiments/data/tinystories_like.txt" \
    --out "$OUT/attn/nlp_stories260K.h5"
  "$EARNEST" analyze "$OUT/attn/nlp_stories260K.h5" --out "$OUT/attn/nlp_stories260K.csv"
fi

step "6. figures from the analysis CSVs -> $OUT/figures"
FINETUNE_CSV=$OUT/attn/rec_tiny-finetune.csv EARN_CSV=$OUT/attn/rec_tiny-earn.csv EARN_K=1 \
  bash "$SRC/plots/figures.sh" --out "$OUT/figures" "$OUT"/attn/*.csv

step "7. benchmark: full vs EARN (k=2, 1+1 registers) on the small preset -> $OUT/bench.csv"
"$EARNEST" bench --preset small --method full,earn --k 2 --prompt-len 512 --batch 4 --beam 20 --reps 2 \
  --out "$OUT/bench.csv"

step "summary"
for method in finetune earn; do
  /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); m=j['mostpop']; \
print(f\"tiny-{sys.argv[2]:8s} test recall@10 {j['recall@10']:.4f} ndcg@10 {j['ndcg@10']:.4f} | MostPop {m['recall@10']:.4f} / {m['ndcg@10']:.4f}\")" \
    "$OUT/eval/tiny-$method.json" "$method"
done
echo "results under $OUT/ (figures in $OUT/figures)"
