#!/usr/bin/env bash
# draft_alignment.sh: the draft-alignment table (issue 12): one target, one
# teacher file, a draft per KD loss, each draft under strict and relaxed
# verification at beam 10 and 20.
#
#   experiments/draft_alignment.sh [WORK_DIR]
#   env: DATASET=synthetic (or games, beauty: prepared from EARNEST_DATA_MIRROR
#        into WORK_DIR/data), TEMPLATE=tiger, TARGET_METHOD=finetune (or earn:
#        k = N/4, 1+1 registers), TARGET_EPOCHS=2, TARGET_MINUTES=7 (time slice
#        per run of each training: a training it cuts makes the script exit 75;
#        run it again to continue with --resume), TEACHER_USERS=60 (users of the
#        teacher file = the drafts' training samples), DRAFT_EPOCHS=3,
#        EVAL_USERS=100 (test users ranked; 0: all), THREADS=2, BEAMS=20 ("10 20": both),
#        TARGET_DIR (a trained target to use instead of training one, e.g. a sweep's
#        model; it must have been trained on DATASET with TEMPLATE), LOSSES (a subset
#        of the six, space-separated)
#
# Target: the small preset (8 layers, d=256). Drafts: the draft preset (2
# layers, d=128), one per loss (sft wordkd tvdkd seqkd atspeed-s atspeed-r),
# alpha 0.7, T 1, trained on the same teacher file, --patience 0 (every epoch
# runs; the best valid epoch is kept).
# Speedups are omega from `eval --baseline`: the same target's ordinary beam
# search on the same users and threads, run right before each speculative run;
# on a shared machine they are still noisy, target_calls_per_user and the
# acceptance figures are not. Writes WORK_DIR/draft_alignment.csv and .md (the committed copies live
# in experiments/results/draft_alignment/).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${EARNEST_BIN:-$HERE/../build/earnest}
W=${1:-out/draft_alignment}
DATASET=${DATASET:-synthetic}
TEMPLATE=${TEMPLATE:-tiger}
TARGET_METHOD=${TARGET_METHOD:-finetune}
TARGET_EPOCHS=${TARGET_EPOCHS:-2}
TARGET_MINUTES=${TARGET_MINUTES:-7}
TEACHER_USERS=${TEACHER_USERS:-60}
DRAFT_EPOCHS=${DRAFT_EPOCHS:-3}
EVAL_USERS=${EVAL_USERS:-100}
THREADS=${THREADS:-2}
BEAMS=${BEAMS:-20}
ALL_LOSSES="sft wordkd tvdkd seqkd atspeed-s atspeed-r"
LOSSES=${LOSSES:-$ALL_LOSSES}
for kd in $LOSSES; do
    case " $ALL_LOSSES " in *" $kd "*) ;; *) echo "LOSSES: '$kd' is not one of: $ALL_LOSSES" >&2; exit 2 ;; esac
done
if [ -n "${TARGET_DIR:-}" ]; then
    [ -f "$TARGET_DIR/config.json" ] && [ -f "$TARGET_DIR/model.safetensors" ] ||
        { echo "TARGET_DIR: $TARGET_DIR: no trained model (config.json, model.safetensors)" >&2; exit 2; }
    TARGET_DIR=$(cd "$TARGET_DIR" && pwd)
fi
case "$DATASET" in synthetic|games|beauty) ;; *) echo "DATASET: '$DATASET' is not synthetic, games or beauty" >&2; exit 2 ;; esac
case "$TARGET_METHOD" in finetune|earn) ;; *) echo "TARGET_METHOD: '$TARGET_METHOD' is not finetune or earn" >&2; exit 2 ;; esac
mkdir -p "$W"
cd "$W"
B=$(cd "$(dirname "$B")" && pwd)/$(basename "$B")

if [ "$DATASET" = synthetic ]; then
    D=syn
    [ -d syn ] || "$B" prepare synthetic --out syn > /dev/null
else
    D=data/$DATASET
    [ -f "$D/meta.json" ] || make -s -f "$HERE/../Makefile.data" "$DATASET" DATA="$PWD/data" EARNEST="$B"
fi

# train_resumable DIR ARGS...: trains into DIR, continuing a cut run; exits 75
# (run again) when this run's time slice cut it.
train_resumable() {
    local dir=$1; shift
    local stopped
    stopped=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stopped"])' "$dir/summary.json" 2>/dev/null || echo none)
    case "$stopped" in completed|early_stop) return 0 ;; esac
    local resume=(--force)
    [ -f "$dir/state/LATEST" ] && resume=(--resume)
    rm -f "$dir/summary.json"
    "$B" train "$@" --max-minutes "$TARGET_MINUTES" --threads "$THREADS" --quiet "${resume[@]}" --out "$dir"
    stopped=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stopped"])' "$dir/summary.json")
    if [ "$stopped" = time_limit ]; then
        echo "draft_alignment: $dir cut by its ${TARGET_MINUTES}-minute slice; run again to continue" >&2
        exit 75
    fi
}

if [ -n "${TARGET_DIR:-}" ]; then
    if [ -L target ] || [ ! -e target ]; then ln -sfn "$TARGET_DIR" target
    else echo "draft_alignment: $W/target is a trained target already; TARGET_DIR=$TARGET_DIR cannot replace it" >&2; exit 2; fi
else
    TARGS=(--data "$D" --preset small --method "$TARGET_METHOD" --template "$TEMPLATE" --epochs "$TARGET_EPOCHS" --eval-users 200)
    train_resumable target "${TARGS[@]}"
fi
[ -f teacher.bin ] || "$B" teacher --model target --data "$D" --template "$TEMPLATE" --users "$TEACHER_USERS" \
    --threads "$THREADS" --quiet --out teacher.bin
for kd in $LOSSES; do
    train_resumable "drafts/$kd" --data "$D" --method draft --teacher teacher.bin --kd "$kd" --template "$TEMPLATE" \
        --epochs "$DRAFT_EPOCHS" --eval-users 200 --patience 0
done
LIMIT=()
[ "$EVAL_USERS" = 0 ] || LIMIT=(--limit-users "$EVAL_USERS")
E=(--data "$D" --template "$TEMPLATE" "${LIMIT[@]}" --threads "$THREADS")
mkdir -p evals
for beam in $BEAMS; do
    [ -f "evals/plain_b$beam.json" ] || "$B" eval --model target "${E[@]}" --beam "$beam" \
        --out "evals/plain_b$beam.json" --rankings "evals/plain_b$beam.tsv" > /dev/null 2>&1
    for kd in $LOSSES; do
        for verify in strict relaxed; do
            [ -f "evals/${kd}_${verify}_b$beam.json" ] && continue
            # omega against the ordinary search run right before (same users, threads, machine state)
            "$B" eval --model target "${E[@]}" --beam "$beam" --out "evals/base_${kd}_${verify}_b$beam.json" > /dev/null 2>&1
            "$B" eval --model target "${E[@]}" --beam "$beam" \
                --draft "drafts/$kd" --verify "$verify" --baseline "evals/base_${kd}_${verify}_b$beam.json" \
                --out "evals/${kd}_${verify}_b$beam.json" --rankings "evals/${kd}_${verify}_b$beam.tsv" > /dev/null 2>&1
        done
        # strict is lossless: the same codes in the same order as the ordinary search
        cmp -s <(cut -f1-3 "evals/plain_b$beam.tsv") <(cut -f1-3 "evals/${kd}_strict_b$beam.tsv") \
            || { echo "strict verification with the $kd draft changed the rankings" >&2; exit 1; }
    done
done

/usr/bin/python3 - "$BEAMS" "$LOSSES" <<'PYEOF'
import json, sys
beams, losses = sys.argv[1].split(), sys.argv[2].split()
# level_acceptance has the drafted levels only (level 1 is the target's prompt row,
# the last level the target's own pick after a round): 2 and 3 of 4 at gamma 3.
cols = ["loss", "verify", "beam", "users", "accepted_levels_per_round", "acc_level2", "acc_level3",
        "target_calls_per_user", "rounds_per_user", "draft_share", "omega", "recall@10", "recall@20", "ndcg@10",
        "plain_recall@10", "plain_recall@20", "draft_valid_recall@10"]
rows = []
for beam in beams:
    for kd in losses:
        dsum = json.load(open(f"drafts/{kd}/summary.json"))
        for verify in ("strict", "relaxed"):
            e = json.load(open(f"evals/{kd}_{verify}_b{beam}.json"))
            p = json.load(open(f"evals/plain_b{beam}.json"))
            d, la = e["draft"], e["draft"]["level_acceptance"]
            rows.append([kd, verify, beam, e["n_users"], d["accepted_levels_per_round"], la.get("2", ""),
                         la.get("3", ""), d["target_calls_per_user"], d["rounds_per_user"],
                         d["draft_share"], e["efficiency"]["omega"], e["recall@10"], e["recall@20"], e["ndcg@10"],
                         p["recall@10"], p["recall@20"], dsum["best_valid_recall@10"]])
def fmt(x):
    return f"{x:.4f}" if isinstance(x, float) else str(x)
with open("draft_alignment.csv", "w") as f:
    f.write(",".join(cols) + "\n")
    for r in rows:
        f.write(",".join(fmt(x) for x in r) + "\n")
show = ["loss", "verify", "beam", "accepted_levels_per_round", "acc_level2", "acc_level3",
        "target_calls_per_user", "omega", "recall@10", "recall@20"]
with open("draft_alignment.md", "w") as f:
    f.write("| " + " | ".join(show) + " |\n|" + "---|" * len(show) + "\n")
    for r in rows:
        f.write("| " + " | ".join(fmt(r[cols.index(c)]) for c in show) + " |\n")
print(open("draft_alignment.md").read())
PYEOF
