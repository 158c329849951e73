#!/usr/bin/env bash
# check_sweep_methods.sh: the baselines table's kind of sweep with the real point
# command (experiments/sweep_work.sh) on a small synthetic dataset, tiny preset,
# LC-Rec prompt: finetune, EARN, skiplayers, gist, AnLLM, POD and compress500x points, and
# SnapKV, truncation and Selective-Context points on the finetune model. Checks:
# seven models, the finetune model trained once and reused by the policy points
# and by compress500x (its --init);
# each row's figures equal its eval JSON's, policy rows name their policy and
# save KV, skiplayers' bench runs the 4-layer shape beside its closed forms,
# AnLLM skips the attention dump; experiments/beauty_table.sh renders the table
# (every row, MostPop, points not run yet); and max_minutes is one slice per
# model and run: a policy point does not give the shared finetune model a second
# slice in the run that cut it.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
export EARNEST=${EARNEST_BIN:-$SRC/build/earnest}
PY=/usr/bin/python3
W=$(mktemp -d /tmp/earnest_check_sweep_methods_XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "check_sweep_methods: FAIL: $*" >&2; exit 1; }

"$EARNEST" prepare synthetic --users 300 --out "$W/data/syn" > /dev/null
cat > "$W/spec.sh" <<EOF
name=methods
data=$W/data
dataset=syn
template=lcrec
preset=tiny
epochs=1
eval_users=20
eval_limit=40
bench_reps=1
bench_beam=4
bench_items=3
prompt_len=64
attn_samples=2
grid method=finetune policy="none snapkv:budget=0.25 truncate:items=2 selective:ratio=0.5"
grid method=earn k=1
grid method=skiplayers keep_layers=1
grid method=gist suffix_regs=2
grid method=anllm
grid method=pod prefix_regs=2
grid method=compress500x suffix_regs=2
EOF
"$SRC/experiments/sweep.sh" "$W/spec.sh" --jobs 2 --results "$W/r" > "$W/out" 2>&1 || { cat "$W/out"; fail "sweep failed"; }
[ "$(ls -d "$W"/r/models/*/ | wc -l)" = 7 ] || fail "expected 7 trained models: $(ls "$W/r/models")"
logs=("$W"/r/points/*/point.log)
[ "$(cat "${logs[@]}" | grep -c "train syn-tiny-finetune-lcrec-")" = 1 ] || fail "the finetune model was not trained exactly once"
[ "$(cat "$W"/r/points/syn-tiny-finetune-*-L64-*/point.log | grep -c "trained already, reused")" = 3 ] ||
    fail "the 3 policy points did not reuse the finetune model"
grep -q -- "train syn-tiny-compress500x-r0.2-lcrec-.* --init $W/r/models/syn-tiny-finetune-lcrec-" "$W"/r/points/syn-tiny-compress500x-*/point.log ||
    fail "compress500x did not start from the finetune model"
grep -q "model syn-tiny-finetune-lcrec-.*: trained already, reused" "$W"/r/points/syn-tiny-compress500x-*/point.log ||
    fail "compress500x trained its own finetune model"
grep -q "attention: skipped (anllm" "$W"/r/points/syn-tiny-anllm-*/point.log || fail "AnLLM's attention was not skipped"
grep -q -- "bench --preset tiny --vocab [0-9]* --seed 1 --method full,skiplayers:keep=1" "$W"/r/points/syn-tiny-skiplayers-*/point.log ||
    fail "skiplayers was not benched on the preset's shape"
"$PY" - "$W/r" <<'PY' || fail "sweep.csv"
import csv, json, os, sys
r = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(r, "sweep.csv"))))
assert len(rows) == 10 and all(x["status"] == "done" for x in rows), [(x["id"], x["status"]) for x in rows]
by = {(x["method"], x["policy"]): x for x in rows}
ft = by[("finetune", "")]
for x in rows:
    ev = json.load(open(os.path.join(r, "points", x["id"], "eval.json")))
    for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@5"):
        assert abs(float(x[k]) - ev[k]) < 1e-9, (x["id"], k)
    assert abs(float(x["eval_sigma"]) - ev["efficiency"]["sigma"]) < 1e-6 and x["eval_prefill_ms"] and x["eval_decode_ms"]
    assert float(x["bench_speedup"]) > 0 and float(x["bench_prefill_ms"]) > 0 and float(x["bench_decode_ms"]) > 0, x["id"]
    if x["policy"]:
        assert x["model_id"] == ft["model_id"], x["id"]
        assert float(x["eval_sigma"]) < float(ft["eval_sigma"]) and float(x["eval_gamma"]) > 0, x["id"]
        assert x["closed_speedup"] == "" and x["bench_tau"] and x["bench_sigma"], x["id"]
sn, tr = by[("finetune", "snapkv:budget=0.25")], by[("finetune", "truncate:items=2")]
assert sn["eval_kv_policy"].startswith("snapkv:budget=0.25") and sn["eval_prompt_policy"] == "", sn
assert tr["eval_prompt_policy"] == "truncate:items=2" and float(tr["eval_history_items_kept"]) < float(tr["eval_history_items"])
sk = by[("skiplayers", "")]
assert sk["keep_layers"] == "1" and float(sk["closed_speedup"]) == 4.0 and float(sk["closed_kv_reduction"]) == 0.75, sk
assert abs(float(sk["bench_kv_reduction"]) - 0.75) < 1e-9, sk["bench_kv_reduction"]
assert by[("gist", "")]["suffix_regs"] == "2" and by[("pod", "")]["prefix_regs"] == "2"
c5 = by[("compress500x", "")]
assert c5["suffix_regs"] == "2" and float(c5["eval_sigma"]) < float(ft["eval_sigma"]) and float(c5["bench_kv_reduction"]) > 0.5, c5
assert by[("anllm", "")]["attn_density_eps_prompt"] == "" and ft["attn_density_eps_prompt"] != ""
assert float(by[("earn", "")]["closed_speedup"]) == 4.0 and float(ft["closed_speedup"]) == 1.0
print("check_sweep_methods: 10 points (7 methods, 3 policies), 7 models, figures match the eval JSONs")
PY

# experiments/beauty_table.sh on this (finished) sweep: nothing runs again; CSV copied, table rendered.
ln -s syn "$W/data/beauty"   # the script prepares beauty when it is missing
BEAUTY_TABLE_SPEC=$W/spec.sh BEAUTY_TABLE_OUT=$W/table EARNEST_DATA=$W/data \
    "$SRC/experiments/beauty_table.sh" "$W/r" > "$W/table.out" 2>&1 || { cat "$W/table.out"; fail "beauty_table.sh"; }
grep -q "nothing to run" "$W/table.out" || fail "beauty_table.sh ran points again: $(cat "$W/table.out")"
cmp -s "$W/r/sweep.csv" "$W/table/beauty_lcrec_table.csv" || fail "the CSV was not copied"
[ -s "$W/table/figures/sweep_methods.png" ] && [ -s "$W/table/figures/sweep_methods.svg" ] ||
    fail "no accuracy-vs-efficiency figure: $(ls "$W/table/figures" 2>&1)"
md=$W/table/beauty_lcrec_table.md
for row in "| Finetune |" "| EARN (k = 1, 1+1 registers) |" "| SkipLayers (first 1 layers) |" "| Gist (2 gist tokens) |" \
           "| AnLLM (an anchor per item) |" "| POD (2 soft-prompt vectors) |" "| SnapKV (budget=0.25) on Finetune |" \
           "| 500xCompressor (2 compression tokens) |" "| truncation (items=2) on Finetune |" "| Selective-Context (ratio=0.5) on Finetune |" "| MostPop |"; do
    grep -qF -- "$row" "$md" || fail "$md lacks the row '$row': $(cat "$md")"
done
[ "$(grep -c '^| ' "$md")" = 12 ] && [ "$(grep '^| MostPop' "$md" | tr -cd '|' | wc -c)" = 12 ] || fail "$md: expected a header and 11 rows: $(cat "$md")"
"$PY" - "$md" <<'PY' || fail "the table's figures"
import sys
rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in open(sys.argv[1]) if l.startswith("| ")}
f = rows["Finetune"]
assert f[4] == "1.00" and f[7] == "1.00" and f[8] == "0.0", f     # omega (bench), omega (eval), gamma
assert abs(float(rows["SkipLayers (first 1 layers)"][8]) - 75.0) < 0.05, rows["SkipLayers (first 1 layers)"]
assert float(rows["SnapKV (budget=0.25) on Finetune"][8]) > 0 and float(rows["EARN (k = 1, 1+1 registers)"][7]) > 0
PY
head -n -1 "$W/r/sweep.csv" > "$W/partial.csv"   # one point short: listed as not yet run
"$PY" "$SRC/experiments/sweep_table.py" --csv "$W/partial.csv" --grid "$W/r/grid.json" --out "$W/partial.md"
[ "$(grep -c "(not yet run)" "$W/partial.md")" = 1 ] || fail "a missing point is not listed: $(cat "$W/partial.md")"
echo "check_sweep_methods: beauty_table.sh copied the CSV and rendered 10 rows + MostPop; a missing point shows as not yet run"

# max_minutes: one slice per model and run, whichever point continues it.
cat > "$W/slice.sh" <<EOF
name=slice
data=$W/data
dataset=syn
template=lcrec
preset=tiny
epochs=2
max_minutes=0.01
eval_users=20
eval_limit=20
bench_reps=1
bench_beam=2
prompt_len=16
grid method=finetune policy="none truncate:items=2"
grid method=compress500x
EOF
for run in 1 2; do
    "$SRC/experiments/sweep.sh" "$W/slice.sh" --jobs 2 --results "$W/s" > "$W/slice$run.out" 2>&1 &&
        fail "run $run: the 0.01-minute slices finished 2 epochs"
    [ "$(cat "$W"/s/points/*/point.log | grep -c "train syn-tiny-finetune-lcrec-")" = "$run" ] ||
        fail "run $run: the shared model got more than one slice: $(grep -h "train syn-tiny" "$W"/s/points/*/point.log)"
    [ "$(cat "$W"/s/points/*/point.log | grep -c "its slice of this run is spent")" = "$((2 * run))" ] ||
        fail "run $run: the other 2 points (a policy, compress500x's init) did not leave the model to the next run"
    ! grep -q "train syn-tiny-compress500x" "$W"/s/points/*/point.log || fail "run $run: compress500x trained on a cut init"
done
grep -q -- "--resume" "$W"/s/points/*/point.log || fail "the second run did not continue the training"
echo "check_sweep_methods: a model shared by 3 points got one max_minutes slice per run"

# compress500x alone: its point trains the finetune model it starts from, then its own.
cat > "$W/c5.sh" <<EOF
name=c5
data=$W/data
dataset=syn
template=lcrec
preset=tiny
eval_users=10
eval_limit=10
bench_reps=1
bench_beam=2
prompt_len=16
grid method=compress500x
EOF
"$SRC/experiments/sweep.sh" "$W/c5.sh" --jobs 1 --results "$W/c5" > "$W/c5.out" 2>&1 || { cat "$W/c5.out"; fail "the compress500x sweep"; }
log=("$W"/c5/points/syn-tiny-compress500x-*/point.log)
grep -q "train syn-tiny-finetune-lcrec-" "${log[@]}" && grep -q "train syn-tiny-compress500x-r0.1-lcrec-.* --init " "${log[@]}" ||
    fail "compress500x alone did not train its init model first: $(grep train "${log[@]}")"
echo "check_sweep_methods: a compress500x point without a finetune point trains its init model first"
echo "check_sweep_methods: OK"
