#!/usr/bin/env bash
# experiments/sweep_work.sh: the default point command of a sweep (run by
# experiments/sweep_point.sh in RESULTS/points/ID with the SWEEP_* variables of
# `experiments/sweep.py env`). One point = a model, its evaluation, a benchmark,
# optionally an attention analysis:
#
#   model  RESULTS/models/MODEL_ID/ (earnest train --method M with the method's flags,
#          SWEEP_TRAIN_FLAGS from sweep.py's METHODS table), shared by every point with the
#          same training parameters (a policy point uses the finetune model of its
#          dataset, template, preset and seed): trained once under RESULTS/locks/MODEL_ID.lock;
#          a method that starts from another model (compress500x: --init the finetune model of
#          the same data, SWEEP_INIT_MODEL_ID) has that model trained first, the same way;
#          a finished one (summary.json says completed or early_stop) is reused; one
#          that was killed, or cut by max_minutes (a time slice per run: summary.json
#          says time_limit), is continued with --resume. A cut training leaves the
#          point unfinished (exit status 75, no metrics): the next run of the sweep
#          continues it, so max_minutes bounds each run, not the training. The slice
#          is per model and run (SWEEP_RUN_ID): when a point finds its model cut
#          earlier in the same run (another point sharing it, e.g. a policy point on
#          the finetune model), it leaves it for the next run (exit 75) instead of
#          training it a second slice
#   eval   RESULTS/evals/EVAL_ID/{eval.json,rankings.tsv,buckets.json} (shared the same
#          way, under RESULTS/locks/EVAL_ID.lock): Recall/NDCG@K on the split (a policy
#          point: with --kv-policy or --prompt-policy), then the same figures by
#          history-length bucket (experiments/sweep_metrics.py buckets)
#   attn   RESULTS/attn/ATTN_ID/{attn.h5,attn.csv} when attn_samples > 0 (shared; not for
#          AnLLM and compress500x, whose mask and adapters dump-attn does not apply)
#   bench  bench.csv of this point: full vs the point's own method or policy
#          (SWEEP_BENCH_METHODS; finetune: full only) at the point's prompt length, on the
#          model's weights, or for skiplayers on random weights of the preset's N-layer
#          shape with the model's vocabulary (its model has only the kept layers)
#   then   metrics.json (experiments/sweep_metrics.py point), which sweep_point.sh
#          turns into point.json.
# A point with dataset=none is bench-only: experiments/sweep_bench.sh does it.
# EARN with 0 suffix registers cannot be trained by this runtime (no prompt token
# reaches the layers above k to predict the first code token): such a point is
# recorded with status "unsupported" and no metrics.
set -euo pipefail
PY="${EARNEST_PYTHON:-/usr/bin/python3}"
E=$SWEEP_EARNEST
T=$SWEEP_THREADS
METRICS=$SWEEP_SRC/experiments/sweep_metrics.py
R=$SWEEP_RESULTS
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ "$SWEEP_DATASET" = none ]; then   # a bench-only point: random weights of the preset, no model to train
    exec bash "$SWEEP_SRC/experiments/sweep_bench.sh"
fi
if [ "$SWEEP_METHOD" = earn ] && [ "$SWEEP_SUFFIX_REGS" = 0 ]; then
    say "EARN with 0 suffix registers: unsupported by this runtime; recorded as such"
    exec "$PY" "$METRICS" unsupported --out metrics.json \
        --note "EARN needs a suffix register: without one no token reaches layers >= k to predict the first code token"
fi

mkdir -p "$R/models" "$R/evals" "$R/attn" "$R/locks"
run=${SWEEP_RUN_ID:-}

# train_model ID METHOD FLAGS [EXTRA...]: trains RESULTS/models/ID (continuing a killed or cut run)
train_model() {
    local id=$1 method=$2 flags=$3; shift 3
    local dir=$R/models/$id
    local args=(--data "$SWEEP_DATA" --preset "$SWEEP_PRESET" --method "$method" --template "$SWEEP_TEMPLATE"
                --epochs "$SWEEP_EPOCHS" --seed "$SWEEP_SEED" --threads "$T" --eval-users "$SWEEP_EVAL_USERS"
                --beam "$SWEEP_BEAM" --out "$dir" --quiet "$@")
    # shellcheck disable=SC2206 # the method's flags (sweep.py's METHODS table): a word list by design
    args+=($flags)
    [ "$SWEEP_MAX_MINUTES" = 0 ] || args+=(--max-minutes "$SWEEP_MAX_MINUTES")
    # shellcheck disable=SC2206 # train_args is a word list by design
    [ -z "$SWEEP_TRAIN_ARGS" ] || args+=($SWEEP_TRAIN_ARGS)
    if [ -f "$dir/state/LATEST" ]; then args+=(--resume); else args+=(--force); fi
    rm -f "$dir/summary.json.cut"
    [ ! -f "$dir/summary.json" ] || mv "$dir/summary.json" "$dir/summary.json.cut"   # the cut run's; the resumed run writes its own
    say "train $id: earnest train ${args[*]}"
    "$E" train "${args[@]}" >> "$R/models/$id.train.log" 2>&1 \
        || { tail -n 5 "$R/models/$id.train.log"; return 1; }
}
stopped() { "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["stopped"])' "$R/models/$1/summary.json" 2>/dev/null || echo none; }
# ensure_model ID METHOD FLAGS [EXTRA...]: with fd 8 locking it, makes model ID trained, training it (one
# max_minutes slice per model and run: RESULTS/models/ID.cut-in-run names the run whose slice cut it last);
# a training that is cut leaves the point unfinished (exit 75): the next run of the sweep continues it
ensure_model() {
    local id=$1 cut=$R/models/$1.cut-in-run
    case "$(stopped "$id")" in
        completed|early_stop) say "model $id: trained already, reused"; return 0 ;;
        time_limit)
            if [ -n "$run" ] && [ "$(cat "$cut" 2>/dev/null)" = "$run" ]; then
                say "training cut by max_minutes=$SWEEP_MAX_MINUTES: its slice of this run is spent (another point of" \
                    "model $id had it); the point stays unfinished; run the sweep again to continue it"
                exit 75
            fi ;;
    esac
    train_model "$@"
    if [ "$(stopped "$id")" = time_limit ]; then
        [ -z "$run" ] || { echo "$run" > "$cut.tmp" && mv "$cut.tmp" "$cut"; }
        say "training cut by max_minutes=$SWEEP_MAX_MINUTES: the point stays unfinished; run the sweep again to continue it"
        exit 75
    fi
    [ -f "$R/models/$id/config.json" ] && [ -f "$R/models/$id/model.safetensors" ] || { say "no model in $R/models/$id after training"; exit 1; }
}

# The shared work below: one point at a time per model, evaluation and attention
# analysis (earnest's own output locks would make a second trainer fail; this one
# waits, then finds the work done).
init=()
if [ -n "${SWEEP_INIT_MODEL_ID:-}" ]; then   # compress500x: starts from the finetune model of the same data
    exec 8>"$R/locks/$SWEEP_INIT_MODEL_ID.lock"
    flock 8
    ensure_model "$SWEEP_INIT_MODEL_ID" "$SWEEP_INIT_METHOD" "$SWEEP_INIT_TRAIN_FLAGS"
    flock -u 8
    init=(--init "$R/models/$SWEEP_INIT_MODEL_ID")
fi
exec 8>"$R/locks/$SWEEP_MODEL_ID.lock"
flock 8
M=$SWEEP_MODEL_DIR
ensure_model "$SWEEP_MODEL_ID" "$SWEEP_METHOD" "$SWEEP_TRAIN_FLAGS" "${init[@]}"
flock -u 8   # the model is final now (a finished training is never continued): the evaluations may run side by side
ln -sfn "../../models/$SWEEP_MODEL_ID" model

# The evaluation and the attention analysis belong to the weights they were made
# from: each folder records the weights' SHA-1 last, and is redone when the model
# changed (a cut training continued since).
stamp=$(sha1sum "$M/model.safetensors" | cut -d' ' -f1)
current() { [ "$(cat "$1/model.sha1" 2>/dev/null)" = "$stamp" ]; }
mark() { echo "$stamp" > "$1/model.sha1.tmp" && mv "$1/model.sha1.tmp" "$1/model.sha1"; }
EV=$SWEEP_EVAL_DIR
mkdir -p "$EV"
exec 8>"$R/locks/$SWEEP_EVAL_ID.lock"
flock 8
if current "$EV"; then
    say "eval $SWEEP_EVAL_ID: done already on these weights, reused"
else
    rm -f "$EV/model.sha1" "$EV/buckets.json"
    args=(--model "$M" --data "$SWEEP_DATA" --split "$SWEEP_EVAL_SPLIT" --beam "$SWEEP_BEAM" --threads "$T"
          --device "$SWEEP_DEVICE" --out "$EV/eval.json" --rankings "$EV/rankings.tsv")
    [ "$SWEEP_EVAL_LIMIT" = 0 ] || args+=(--limit-users "$SWEEP_EVAL_LIMIT")
    [ -z "$SWEEP_POLICY_FLAG" ] || args+=("$SWEEP_POLICY_FLAG" "$SWEEP_POLICY")
    say "eval: earnest eval ${args[*]}"
    "$E" eval "${args[@]}"
    "$PY" "$METRICS" buckets --data "$SWEEP_DATA" --split "$SWEEP_EVAL_SPLIT" --rankings "$EV/rankings.tsv" \
        --eval "$EV/eval.json" --buckets "$SWEEP_HIST_BUCKETS" --out "$EV/buckets.json"
    mark "$EV"
fi
flock -u 8
ln -sfn "../../evals/$SWEEP_EVAL_ID/eval.json" eval.json

attn=$SWEEP_ATTN_SAMPLES
if [ "$attn" != 0 ] && [ "$SWEEP_ATTN_OK" = 0 ]; then
    say "attention: skipped ($SWEEP_METHOD: dump-attn applies neither its mask nor its adapters)"
    attn=0
fi
if [ "$attn" != 0 ]; then
    A=$SWEEP_ATTN_DIR
    mkdir -p "$A"
    exec 8>"$R/locks/$SWEEP_ATTN_ID.lock"
    flock 8
    if ! current "$A"; then
        rm -f "$A/model.sha1"
        say "attention: dump-attn --samples $SWEEP_ATTN_SAMPLES, analyze"
        "$E" dump-attn --model "$M" --data "$SWEEP_DATA" --split "$SWEEP_EVAL_SPLIT" --samples "$SWEEP_ATTN_SAMPLES" \
            --threads "$T" --out "$A/attn.h5"
        "$E" analyze "$A/attn.h5" --out "$A/attn.csv" > "$A/attn.summary.txt"
        mark "$A"
    fi
    flock -u 8
    ln -sfn "../../attn/$SWEEP_ATTN_ID/attn.csv" attn.csv
fi

if [ "$SWEEP_BENCH_ON" = preset ]; then   # skiplayers: full must have the preset's N layers
    vocab=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$M/config.json")
    args=(--preset "$SWEEP_PRESET" --vocab "$vocab" --seed "$SWEEP_SEED")
else
    args=(--model "$M")
fi
args+=(--method "$SWEEP_BENCH_METHODS" --prompt-len "$SWEEP_PROMPT_LEN" --batch "$SWEEP_BENCH_BATCH"
       --beam "$SWEEP_BENCH_BEAM" --reps "$SWEEP_BENCH_REPS" --threads "$T" --device "$SWEEP_DEVICE"
       --dtype "${SWEEP_DTYPE:-f32}" --out bench.csv)
[ "$SWEEP_METHOD" != earn ] ||
    args+=(--k "$SWEEP_K" --prefix-regs "$SWEEP_PREFIX_REGS" --suffix-regs "$SWEEP_SUFFIX_REGS")
say "bench: earnest bench ${args[*]}"
"$E" bench "${args[@]}" > bench.txt

"$PY" "$METRICS" point --model "$M" --eval "$EV/eval.json" --buckets "$EV/buckets.json" --bench bench.csv \
    --attn "$([ "$attn" = 0 ] || echo "$SWEEP_ATTN_DIR/attn.csv")" --method "$SWEEP_METHOD" \
    --own "$SWEEP_BENCH_OWN" --keep-layers "$SWEEP_KEEP_LAYERS" --k "$SWEEP_K" --n-layers "$SWEEP_N_LAYERS" \
    --out metrics.json
say "metrics.json written"
