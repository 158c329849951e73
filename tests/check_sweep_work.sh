#!/usr/bin/env bash
# check_sweep_work.sh: a sweep with the real point command (experiments/sweep_work.sh)
# on a small synthetic dataset and the tiny preset: points that differ only in the
# prompt length share one model and one evaluation (trained and evaluated once);
# point.json and sweep.csv carry the parameters, the eval figures (matching the eval
# JSON), the bench figures beside the closed forms, the history-length buckets and
# the attention figures, with EARN's layers >= k left out; EARN without a suffix
# register is recorded as unsupported; a killed training is resumed.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
export EARNEST=${EARNEST_BIN:-$SRC/build/earnest}
PY=/usr/bin/python3
W=$(mktemp -d /tmp/earnest_check_sweep_work_XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "check_sweep_work: FAIL: $*" >&2; exit 1; }

"$EARNEST" prepare synthetic --users 300 --out "$W/data/syn" > /dev/null
cat > "$W/spec.sh" <<EOF
name=work
data=$W/data
dataset=syn
template=tiger
preset=tiny
epochs=1
eval_users=20
eval_limit=60
bench_reps=1
bench_beam=4
attn_samples=4
prompt_len="32 64"
grid method=earn k=1 regs="1,1 1,0"
grid method=finetune
EOF
"$SRC/experiments/sweep.sh" "$W/spec.sh" --jobs 2 --results "$W/r" > "$W/out" 2>&1 || { cat "$W/out"; fail "sweep failed"; }
[ "$(ls -d "$W"/r/models/*/ | wc -l)" = 2 ] || fail "expected 2 trained models (earn 1+1, finetune): $(ls "$W/r/models")"
[ "$(ls -d "$W"/r/evals/*/ | wc -l)" = 2 ] || fail "expected 2 evaluations"
[ "$(cat "$W"/r/points/*/point.log | grep -c "trained already, reused")" = 2 ] && [ "$(cat "$W"/r/points/*/point.log | grep -c "done already on these weights, reused")" = 2 ] || fail "models not reused"
"$PY" - "$W/r" <<'PY'
import csv, json, os, sys
r = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(r, "sweep.csv"))))
assert len(rows) == 6, len(rows)
by = {(x["method"], x["suffix_regs"], x["prompt_len"]): x for x in rows}
for L in ("32", "64"):
    e, f, u = by[("earn", "1", L)], by[("finetune", "0", L)], by[("earn", "0", L)]
    assert e["status"] == "done" and f["status"] == "done", (e["status"], f["status"])
    assert u["status"] == "unsupported" and u["recall@10"] == "" and "suffix register" in u["note"], u
    ev = json.load(open(os.path.join(r, "points", e["id"], "eval.json")))
    assert abs(float(e["recall@10"]) - ev["recall@10"]) < 1e-9, (e["recall@10"], ev["recall@10"])
    assert int(e["n_users"]) == 60 and int(e["bench_prompt_len"]) == int(L)
    assert float(e["closed_speedup"]) == 4.0 and float(e["closed_kv_reduction"]) == 0.75, e
    assert float(f["closed_speedup"]) == 1.0 and float(f["bench_speedup"]) == 1.0
    assert float(e["bench_prefill_speedup"]) > 0 and 0 < float(e["bench_kv_reduction"]) < 1
    users = sum(int(e[k]) for k in e if k.startswith("hist") and k.endswith("_users"))
    assert users == 60, users
    # EARN: the late layers (>= k) are degenerate, left out; finetune has them
    assert e["attn_density_eps_late"] == "" and e["attn_density_eps_early"] != "", e
    assert f["attn_density_eps_late"] != ""
# shared model: both prompt lengths point at one model and one eval
assert by[("earn", "1", "32")]["model_id"] == by[("earn", "1", "64")]["model_id"]
assert by[("earn", "1", "32")]["recall@10"] == by[("earn", "1", "64")]["recall@10"]
print("check_sweep_work: 6 points, 2 models, figures consistent")
PY
# A training killed mid-way (a state saved, no summary.json) is resumed by the next run.
sed -i 's/^grid method=finetune$/grid method=finetune seed=2/' "$W/spec.sh"
m=$W/r/models/syn-tiny-finetune-tiger-s2
( "$EARNEST" train --data "$W/data/syn" --preset tiny --method finetune --template tiger --epochs 1 --seed 2 \
    --eval-users 20 --save-every 2 --test-crash-after-step 3 --threads 1 --out "$W/crashed" --quiet --force; exit $? ) > /dev/null 2>&1 || true
[ -f "$W/crashed/state/LATEST" ] && [ ! -f "$W/crashed/summary.json" ] || fail "could not make a crashed training"
"$SRC/experiments/sweep.sh" "$W/spec.sh" --jobs 2 --results "$W/r" --dry-run > "$W/dry" 2>&1
mid=$(grep -o 'model syn-tiny-finetune-tiger-s2-[0-9a-f]*' "$W/dry" | head -1 | cut -d' ' -f2)
[ -n "$mid" ] || fail "no seed-2 finetune model in the plan: $(cat "$W/dry")"
mkdir -p "$W/r/models"
mv "$W/crashed" "$W/r/models/$mid"
"$SRC/experiments/sweep.sh" "$W/spec.sh" --jobs 2 --results "$W/r" > "$W/out2" 2>&1 || { cat "$W/out2"; fail "second sweep failed"; }
grep -q -- "--resume" "$W"/r/points/syn-tiny-finetune-L32-s2-*/point.log "$W"/r/points/syn-tiny-finetune-L64-s2-*/point.log \
    || fail "the killed training was not resumed"
[ -f "$W/r/models/$mid/summary.json" ] || fail "resumed training did not finish"
[ "$(tail -n +2 "$W/r/sweep.csv" | wc -l)" = 6 ] || fail "after the spec change the CSV should have the 6 points of the grid"
# max_minutes is a time slice per run: a training it cuts leaves the point unfinished,
# and each run of the sweep continues it (--resume) until the epochs are done.
cat > "$W/slice.sh" <<EOF
name=slice
data=$W/data
dataset=syn
template=tiger
preset=tiny
epochs=2
max_minutes=0.01
eval_users=20
eval_limit=30
bench_reps=1
bench_beam=2
prompt_len=16
grid method=earn k=1
EOF
runs=0
while :; do
    runs=$((runs + 1))
    [ $runs -le 60 ] || fail "max_minutes slices: the training did not end in 60 runs"
    if "$SRC/experiments/sweep.sh" "$W/slice.sh" --results "$W/s" > "$W/slice.out" 2>&1; then break; fi
    grep -q "paused .*training cut by max_minutes" "$W/slice.out" || { cat "$W/slice.out"; fail "a cut training was not reported as paused"; }
    ls "$W"/s/points/*/point.json >/dev/null 2>&1 && fail "a cut training's point got a point.json"
done
[ $runs -ge 2 ] || fail "max_minutes=0.01 did not cut the training (1 run)"
grep -q '"stopped": "completed"' "$W"/s/models/*/summary.json || fail "the sliced training did not complete"
grep -q -- "--resume" "$W"/s/points/*/point.log || fail "the sliced training was not resumed"
for d in "$W"/r/evals/* "$W"/r/attn/* "$W"/s/evals/*; do   # each evaluation names the weights it was made from
    m=$(ls -d "$W"/*/models/"$(basename "$d" | sed -E 's/-(cpu|a[0-9]+)-[0-9a-f]{8}$//')")
    [ "$(cat "$d/model.sha1")" = "$(sha1sum "$m/model.safetensors" | cut -d' ' -f1)" ] || fail "$d: not from the model's weights"
done
echo "check_sweep_work: a training cut by max_minutes was continued over $runs runs"
echo "check_sweep_work: OK"
