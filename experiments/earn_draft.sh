#!/usr/bin/env bash
# earn_draft.sh: EARN x AtSpeed (issue 12, "Combined"): does an EARN target and an
# aligned draft multiply their speedups (EARN cuts the prefill, drafting the decode)?
#
#   experiments/earn_draft.sh WORK_DIR
#   env: FT_MODEL, EARN_MODEL (required: a finetune and an EARN target trained on
#        DATASET with TEMPLATE, e.g. the beauty table sweep's models), DATASET=beauty
#        (or games, synthetic), TEMPLATE=lcrec, LOSS=atspeed-s (the drafts' KD loss),
#        VERIFY=strict (or relaxed), TEACHER_USERS=1000, DRAFT_EPOCHS=10,
#        EVAL_USERS=500 (0: all test users), BEAM=20, THREADS=2, REPS=3, LONG=4096
#
# 1. An aligned draft per target: experiments/draft_alignment.sh with TARGET_DIR
#    (teacher file, one draft, its strict and relaxed evaluations; strict checked
#    lossless) in WORK_DIR/finetune and WORK_DIR/earn.
# 2. Real prompts (the template's length): the four configurations -- finetune,
#    finetune + draft, EARN, EARN + draft -- evaluated back to back on the same test
#    users, REPS times in turn; each time's omega is over that round's finetune run,
#    and the table gives the medians (prefill, decode, total ms of the whole
#    evaluation, and Recall@10).
# 3. Long prompts (LONG tokens, random token ids: no dataset has prompts that long):
#    `earnest bench --draft` of each target with its draft, full and EARN shapes in
#    one run per target. Acceptance there is the two models' agreement on random
#    input, which says little about real prompts; the prefill and per-call times
#    are the shapes'.
# Writes WORK_DIR/earn_draft.csv (one row per configuration and prompt kind) and
# WORK_DIR/earn_draft.md. Rerunning continues: finished drafts and evaluations are kept.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${EARNEST_BIN:-$HERE/../build/earnest}
W=${1:?usage: earn_draft.sh WORK_DIR (env: FT_MODEL, EARN_MODEL, ...)}
DATASET=${DATASET:-beauty}
TEMPLATE=${TEMPLATE:-lcrec}
LOSS=${LOSS:-atspeed-s}
VERIFY=${VERIFY:-strict}
EVAL_USERS=${EVAL_USERS:-500}
BEAM=${BEAM:-20}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
LONG=${LONG:-4096}
export TEACHER_USERS=${TEACHER_USERS:-1000} DRAFT_EPOCHS=${DRAFT_EPOCHS:-10}
case "$VERIFY" in strict|relaxed) ;; *) echo "VERIFY: '$VERIFY' is not strict or relaxed" >&2; exit 2 ;; esac
for v in FT_MODEL EARN_MODEL; do
    d=${!v:-}
    [ -n "$d" ] && [ -f "$d/config.json" ] || { echo "$v: '${d}' is not a trained model folder" >&2; exit 2; }
done
method() { /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["earnest"]["method"])' "$1/config.json"; }
[ "$(method "$FT_MODEL")" = finetune ] || { echo "FT_MODEL: $FT_MODEL is not a finetune model" >&2; exit 2; }
[ "$(method "$EARN_MODEL")" = earn ] || { echo "EARN_MODEL: $EARN_MODEL is not an EARN model" >&2; exit 2; }
mkdir -p "$W"
W=$(cd "$W" && pwd)
B=$(cd "$(dirname "$B")" && pwd)/$(basename "$B")

# 1. the drafts (draft_alignment.sh prepares the data under each work folder; exit 75: run again)
for t in finetune earn; do
    dir=$FT_MODEL; [ $t = finetune ] || dir=$EARN_MODEL
    EARNEST_BIN=$B TARGET_DIR=$dir LOSSES=$LOSS BEAMS=$BEAM DATASET=$DATASET TEMPLATE=$TEMPLATE \
        EVAL_USERS=$EVAL_USERS THREADS=$THREADS bash "$HERE/draft_alignment.sh" "$W/$t" > "$W/$t.log" 2>&1 ||
        { rc=$?; tail -n 5 "$W/$t.log" >&2; exit $rc; }
done
D=$W/finetune/data/$DATASET
[ "$DATASET" != synthetic ] || D=$W/finetune/syn

# 2. real prompts: the four configurations in turn, REPS rounds
LIMIT=()
[ "$EVAL_USERS" = 0 ] || LIMIT=(--limit-users "$EVAL_USERS")
E=(--data "$D" --template "$TEMPLATE" "${LIMIT[@]}" --threads "$THREADS" --beam "$BEAM")
mkdir -p "$W/evals"
for r in $(seq "$REPS"); do
    for cfg in finetune finetune+draft earn earn+draft; do
        out=$W/evals/r${r}_$cfg.json
        [ -f "$out" ] && continue
        t=${cfg%+draft}
        model=$FT_MODEL; [ "$t" = finetune ] || model=$EARN_MODEL
        draft=()
        [ "$cfg" = "$t" ] || draft=(--draft "$W/$t/drafts/$LOSS" --verify "$VERIFY")
        "$B" eval --model "$model" "${E[@]}" "${draft[@]}" --out "$out.tmp" > /dev/null 2>&1
        mv "$out.tmp" "$out"
    done
done

# 3. long prompts: bench each target with its draft (full and EARN shapes on the target's weights)
for t in finetune earn; do
    out=$W/bench_$t.csv
    [ -f "$out" ] && continue
    model=$FT_MODEL; [ $t = finetune ] || model=$EARN_MODEL
    "$B" bench --model "$model" --method full,earn --prompt-len "$LONG" --beam "$BEAM" --reps "$REPS" \
        --threads "$THREADS" --draft "$W/$t/drafts/$LOSS" --verify "$VERIFY" --out "$out.tmp" > "$W/bench_$t.txt"
    mv "$out.tmp" "$out"
done

/usr/bin/python3 - "$W" "$REPS" "$LONG" "$VERIFY" <<'PYEOF'
import csv, json, statistics, sys
W, reps, L, verify = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfgs = ["finetune", "finetune+draft", "earn", "earn+draft"]
rows = []
# real prompts: per round, each configuration's times over that round's finetune run
ev = {(r, c): json.load(open(f"{W}/evals/r{r}_{c}.json")) for r in range(1, reps + 1) for c in cfgs}
for c in cfgs:
    e = [ev[(r, c)] for r in range(1, reps + 1)]
    ft = [ev[(r, "finetune")]["efficiency"] for r in range(1, reps + 1)]
    med = lambda key: statistics.median(x["efficiency"][key] for x in e)
    ratio = lambda key: statistics.median(f[key] / x["efficiency"][key] for f, x in zip(ft, e))
    d = e[0].get("draft", {})
    rows.append(dict(prompts="real", config=c, prompt_tokens_per_user=round(e[0]["efficiency"]["prompt_tokens"] / e[0]["n_users"], 1),
                     users=e[0]["n_users"], prefill_ms=med("prefill_ms"), decode_ms=med("decode_ms"),
                     total_ms=med("total_ms"), omega=ratio("total_ms"), prefill_speedup=ratio("prefill_ms"),
                     decode_speedup=ratio("decode_ms"), target_calls_per_user=d.get("target_calls_per_user", 4),
                     accepted_levels_per_round=d.get("accepted_levels_per_round", ""), draft_share=d.get("draft_share", ""),
                     recall10=e[0]["recall@10"]))
# long prompts: the two bench runs; omega over the finetune target's full row
bench = {t: list(csv.DictReader(open(f"{W}/bench_{t}.csv"))) for t in ("finetune", "earn")}
base = next(x for x in bench["finetune"] if x["method"] == "full")
pick = {"finetune": ("finetune", "full"), "finetune+draft": ("finetune", "full+draft"),
        "earn": ("earn", "earn"), "earn+draft": ("earn", "earn+draft")}
for c in cfgs:
    t, m = pick[c]
    x = next(x for x in bench[t] if x["method"] == m)
    f = lambda k: float(x[k])
    rows.append(dict(prompts="random", config=c, prompt_tokens_per_user=L, users=int(x["batch"]),
                     prefill_ms=f("prefill_ms"), decode_ms=f("decode_ms"), total_ms=f("total_ms"),
                     omega=float(base["total_ms"]) / f("total_ms"), prefill_speedup=float(base["prefill_ms"]) / f("prefill_ms"),
                     decode_speedup=float(base["decode_ms"]) / f("decode_ms"),
                     target_calls_per_user=float(x["target_calls_per_user"]) if x["target_calls_per_user"] else 4,
                     accepted_levels_per_round=x["accepted_levels_per_round"], draft_share=x["draft_share"], recall10=""))
cols = list(rows[0])
def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)
with open(f"{W}/earn_draft.csv.tmp", "w") as fh:
    fh.write(",".join(cols) + "\n")
    for r in rows:
        fh.write(",".join(fmt(r[c]) for c in cols) + "\n")
show = ["prompts", "config", "prompt_tokens_per_user", "prefill_ms", "decode_ms", "omega", "prefill_speedup",
        "decode_speedup", "target_calls_per_user", "accepted_levels_per_round", "recall10"]
with open(f"{W}/earn_draft.md.tmp", "w") as fh:
    fh.write(f"verification: {verify}; real prompts: medians of {reps} rounds (omega per round over that round's "
             f"finetune run); random: one bench run per target, {L} tokens\n\n")
    fh.write("| " + " | ".join(show) + " |\n|" + "---|" * len(show) + "\n")
    for r in rows:
        fh.write("| " + " | ".join(fmt(r[c]) for c in show) + " |\n")
import os
os.replace(f"{W}/earn_draft.csv.tmp", f"{W}/earn_draft.csv")
os.replace(f"{W}/earn_draft.md.tmp", f"{W}/earn_draft.md")
print(open(f"{W}/earn_draft.md").read())
PYEOF
