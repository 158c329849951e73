#!/usr/bin/env bash
# The attention study in EARN's setting (issue 16): one pretrained model,
# stories260K (llama2.c, 5 layers, d = 64, pretrained on TinyStories), looked at
# on text (NLP) and on LC-Rec prompts of AtSpeed beauty (Rec), before and after
# fine-tuning on beauty (plain finetune, and EARN k = 2 of 5 with 1 + 1
# registers), with the metrics also by prompt-length bucket.
#
#   experiments/attention_study.sh [WORK_DIR]
#     env: EARNEST (binary), MINUTES (training time per model and per invocation, default 6),
#          SMALL_MINUTES (the same for the `small` model, default 10; 0 leaves it out),
#          THREADS (default 2), SAMPLES (Rec prompts dumped, default 128), EARNEST_DATA_MIRROR
#
# Steps (each skipped when its output exists, so a second run continues; a
# training cut by MINUTES continues with --resume on the next run when
# RESUME=1):
#   1. beauty prepared (Makefile.data), stories260K converted (earnest convert);
#   2. models: `before` = stories260K with its vocabulary grown by earnest train --init (registers,
#      LC-Rec template words and beauty's code tokens as new random rows) after one update at
#      lr 1e-12, i.e. the pretrained weights as fine-tuning starts from them; `finetune` and `earn`
#      = fine-tuned on beauty's train split with the LC-Rec prompt, one epoch capped at MINUTES;
#      `small` = the small preset (8 layers, d = 256) trained from scratch the same way (Rec only);
#   3. each model dumped on text (experiments/data/tinystories_long.txt: 24 passages of 57-198
#      tokens, through stories260K's own tokenizer, whose ids the grown vocabulary keeps) and on
#      SAMPLES beauty test prompts (LC-Rec, 49-150 tokens);
#      control: `before` on 48 LC-Rec prompts spelled as text through stories260K's tokenizer
#      (experiments/lcrec_text_prompts.py: one history item, ~193 tokens), input `rectext`;
#   4. `earnest analyze` of every dump, whole and by prompt length (50-100, 100-150, 150-200
#      tokens), into experiments/results/attention_study/<model>_<nlp|rec>[_len<lo>-<hi>].csv
#      (+ .summary.txt); recommendation metrics of the fine-tuned models on test beside MostPop;
#   5. experiments/attention_summary.py -> summary.csv and summary.md, and plots/attention_study.sh
#      -> experiments/results/attention_study/figures/.
# Models and dumps stay in WORK_DIR (default out/attention_study), not committed.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
EARNEST=${EARNEST:-$SRC/build/earnest}
WORK=${1:-$SRC/out/attention_study}
RES=$SRC/experiments/results/attention_study
MINUTES=${MINUTES:-6}
THREADS=${THREADS:-2}
SAMPLES=${SAMPLES:-128}
SMALL_MINUTES=${SMALL_MINUTES:-10}
export EARNEST_DATA_MIRROR=${EARNEST_DATA_MIRROR:-$SRC/../shared/datasets}
mkdir -p "$WORK" "$RES"
log() { echo "attention_study: $*" >&2; }

# 1. data and the pretrained model
[ -f "$WORK/data/beauty/meta.json" ] || make -f "$SRC/Makefile.data" beauty DATA="$WORK/data" EARNEST="$EARNEST"
DATA=$WORK/data/beauty
PRE=$WORK/stories260K
[ -f "$PRE/model.safetensors" ] || "$EARNEST" convert --llama2c "$SRC/../shared/models/stories260K/stories260K.bin" \
    --tokenizer "$SRC/../shared/models/stories260K/tok512.bin" --out "$PRE"

# 2. models (one training at a time)
common=(--data "$DATA" --init "$PRE" --template lcrec --epochs 1 --threads "$THREADS" --seed 1 --eval-users 300
        --quiet)
train() { # train NAME [options]   (every option but --out, --force / --resume)
    local name=$1; shift
    local out=$WORK/$name
    if [ -f "$out/summary.json" ] && [ "${RESUME:-0}" != 1 ]; then return 0; fi
    local extra=(--force)
    [ -d "$out/state" ] && extra=(--resume)
    log "training $name"
    ( time "$EARNEST" train "$@" "${extra[@]}" --out "$out" ) >> "$WORK/$name.train.log" 2>&1 \
        || { log "training $name failed: see $WORK/$name.train.log"; exit 1; }
}
# the starting point: one update at lr 1e-12 (the weights move by ~1e-12), then saved
[ -f "$WORK/before/summary.json" ] || \
    "$EARNEST" train "${common[@]}" --method finetune --lr 1e-12 --warmup 0 --max-minutes 0.0001 --eval-users 20 \
        --force --out "$WORK/before" > "$WORK/before.train.log" 2>&1
train finetune "${common[@]}" --method finetune --max-minutes "$MINUTES"
train earn "${common[@]}" --method earn --k 2 --prefix-regs 1 --suffix-regs 1 --max-minutes "$MINUTES"
# the `small` preset (8 layers, d = 256) trained from scratch on beauty with the LC-Rec prompt: Rec only
# (it has no text tokenizer); a stand-in for the baselines issue's small LC-Rec models
if [ "$SMALL_MINUTES" != 0 ]; then
    train small --data "$DATA" --preset small --template lcrec --epochs 1 --threads "$THREADS" --seed 1 \
        --eval-users 300 --quiet --method finetune --max-minutes "$SMALL_MINUTES"
fi

# 3 + 4. dumps and analyses
for m in before finetune earn; do
    [ -f "$WORK/${m}_nlp.h5" ] || "$EARNEST" dump-attn --model "$WORK/$m" --threads "$THREADS" \
        --text-file "$SRC/experiments/data/tinystories_long.txt" --tokenizer "$PRE/tokenizer.bin" --tokenizer-vocab 512 \
        --out "$WORK/${m}_nlp.h5"
    [ -f "$WORK/${m}_rec.h5" ] || "$EARNEST" dump-attn --model "$WORK/$m" --threads "$THREADS" \
        --data "$DATA" --split test --samples "$SAMPLES" --out "$WORK/${m}_rec.h5"
    for in in nlp rec; do
        "$EARNEST" analyze "$WORK/${m}_$in.h5" --out "$RES/${m}_$in.csv" > "$RES/${m}_$in.summary.txt"
        for b in 50,100 100,150 150,200; do
            "$EARNEST" analyze "$WORK/${m}_$in.h5" --len-range "$b" --out "$RES/${m}_${in}_len${b/,/-}.csv" \
                > "$RES/${m}_${in}_len${b/,/-}.summary.txt"
        done
    done
done
# control: the pretrained model on LC-Rec prompts spelled as text through its own tokenizer (every
# token a pretrained embedding; one history item, ~193 tokens: the 150-200 bucket)
[ -f "$WORK/rectext.txt" ] || /usr/bin/python3 "$SRC/experiments/lcrec_text_prompts.py" "$DATA" 48 "$WORK/rectext.txt"
[ -f "$WORK/before_rectext.h5" ] || "$EARNEST" dump-attn --model "$WORK/before" --threads "$THREADS" \
    --text-file "$WORK/rectext.txt" --tokenizer "$PRE/tokenizer.bin" --tokenizer-vocab 512 --out "$WORK/before_rectext.h5"
"$EARNEST" analyze "$WORK/before_rectext.h5" --out "$RES/before_rectext.csv" > "$RES/before_rectext.summary.txt"
for b in 50,100 100,150 150,200; do
    "$EARNEST" analyze "$WORK/before_rectext.h5" --len-range "$b" --out "$RES/before_rectext_len${b/,/-}.csv" \
        > "$RES/before_rectext_len${b/,/-}.summary.txt"
done
if [ "$SMALL_MINUTES" != 0 ]; then
    [ -f "$WORK/small_rec.h5" ] || "$EARNEST" dump-attn --model "$WORK/small" --threads "$THREADS" \
        --data "$DATA" --split test --samples "$SAMPLES" --out "$WORK/small_rec.h5"
    "$EARNEST" analyze "$WORK/small_rec.h5" --out "$RES/small_rec.csv" > "$RES/small_rec.summary.txt"
    for b in 50,100 100,150 150,200; do
        "$EARNEST" analyze "$WORK/small_rec.h5" --len-range "$b" --out "$RES/small_rec_len${b/,/-}.csv" \
            > "$RES/small_rec_len${b/,/-}.summary.txt"
    done
fi
for m in finetune earn $([ "$SMALL_MINUTES" != 0 ] && echo small); do
    [ -f "$RES/${m}_test.json" ] || "$EARNEST" eval --model "$WORK/$m" --data "$DATA" --split test --beam 20 \
        --threads "$THREADS" --out "$RES/${m}_test.json"
    cp "$WORK/$m/train_log.csv" "$RES/${m}_train_log.csv"
    cp "$WORK/$m/eval_log.csv" "$RES/${m}_valid_log.csv"
done
[ -f "$RES/mostpop_test.json" ] || "$EARNEST" eval --method mostpop --data "$DATA" --split test --out "$RES/mostpop_test.json"

# 5. tables and figures
/usr/bin/python3 "$SRC/experiments/attention_summary.py" "$RES"
bash "$SRC/plots/attention_study.sh" "$RES"
