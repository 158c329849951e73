#!/usr/bin/env bash
# check_sweep.sh: experiments/sweep.sh with a fake per-point command (fast, no
# training): a 12-point grid run with 2 jobs is killed with SIGKILL mid-sweep,
# three times (the runner alone; the runner's process group; one worker), while a
# point is surely mid-run, and re-run each time. The killed run leaves nothing
# working (the workers' watchdog stops their points), the final sweep.csv equals
# that of an uninterrupted run (same rows, no duplicates), and no point finished
# before a kill ran again. Then: thread split (jobs x threads <=
# cores), --dry-run (local and --slurm) writes nothing, and bad input (unknown
# axis or value, empty grid, device without a runtime, a results folder holding
# another sweep's points) fails with a clear message before anything runs.
# The baselines' points: every trained method and policy points on the finetune
# model get the method's flags and bench entries, the policy points share the
# finetune model; bad method/policy combinations are refused naming the spec line;
# the committed beauty sweep's point and model ids are unchanged.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
export EARNEST=${EARNEST_BIN:-$SRC/build/earnest}
SWEEP=$SRC/experiments/sweep.sh
PY=/usr/bin/python3
W=$(mktemp -d /tmp/earnest_check_sweep_XXXXXX)
pgids=()
cleanup() {
    local g
    for g in "${pgids[@]}"; do kill -9 -- "-$g" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "check_sweep: FAIL: $*" >&2; exit 1; }
command -v parallel >/dev/null || fail "GNU parallel is not installed (scripts/setup.sh installs it)"

mkdir -p "$W/data/syn"
echo '{}' > "$W/data/syn/meta.json"   # the fake command reads no data; the spec check wants the folder
cat > "$W/fake.sh" <<'EOF'
#!/usr/bin/env bash
# The fake point command: logs its start, sleeps, writes metrics that depend on the parameters only.
set -euo pipefail
echo "$SWEEP_ID" >> "$FAKE_LOG"
echo "$SWEEP_ID $$ $PPID" >> "$FAKE_LOG.pids"   # the command and its worker (sweep_point.sh)
echo "$SWEEP_ID $SWEEP_THREADS" >> "$FAKE_LOG.threads"
printf '%s|%s|%s|%s|%s|%s|%s\n' "$SWEEP_ID" "$SWEEP_MODEL_ID" "$SWEEP_TRAIN_FLAGS" "$SWEEP_BENCH_METHODS" \
    "$SWEEP_BENCH_OWN" "$SWEEP_BENCH_ON" "$SWEEP_POLICY_FLAG $SWEEP_POLICY" >> "$FAKE_LOG.methods"
sleep 0.05
case "$SWEEP_ID" in *"${FAKE_SLOW:-none}"*) sleep 30 ;; esac   # a point that is surely mid-run when killed
/usr/bin/python3 - <<'PY'
import json, os
e = os.environ
k, n = int(e["SWEEP_K"]), int(e["SWEEP_N_LAYERS"])
m = {"recall@10": round(0.01 * (k + 1) + 0.001 * int(e["SWEEP_SUFFIX_REGS"]) + 1e-5 * int(e["SWEEP_PROMPT_LEN"]), 6),
     "bench_speedup": n / k if k else 1.0, "model": e["SWEEP_MODEL_ID"]}
json.dump(m, open("metrics.json.tmp", "w"))
os.replace("metrics.json.tmp", "metrics.json")
PY
EOF
spec() { # spec FILE NAME [extra lines...]: the 12-point fake grid
    local f=$1 name=$2
    shift 2
    {
        echo "name=$name"
        echo "data=$W/data"
        echo "dataset=syn"
        echo "preset=small"
        echo "point_cmd=\"bash $W/fake.sh\""
        echo 'grid method=earn k="1 2 3 4 6" regs="1,1 0,1"'
        echo 'grid method=finetune prompt_len="512 1024"'
        printf '%s\n' "$@"
    } > "$f"
}
spec "$W/fake.sh.spec" fake

# 1. The uninterrupted run.
FAKE_LOG=$W/runs_a.log "$SWEEP" "$W/fake.sh.spec" --jobs 2 --results "$W/a" > "$W/a.out" 2>&1 \
    || { cat "$W/a.out"; fail "uninterrupted run failed"; }
[ "$(tail -n +2 "$W/a/sweep.csv" | wc -l)" = 12 ] || fail "uninterrupted run: expected 12 rows"
[ "$(sort "$W/runs_a.log" | uniq -d | wc -l)" = 0 ] || fail "uninterrupted run computed a point twice"
[ "$(cut -d, -f3 "$W/a/sweep.csv" | tail -n +2 | sort -u | wc -l)" = 11 ] || fail "the finetune points share no model id"

snapshot() { # the finished points' point.json files, with inode and mtime (ns)
    local f
    for f in "$1"/points/*/point.json; do [ -e "$f" ] && echo "$f $(stat -c '%i %.9Y' "$f")"; done | sort
}
wait_points() { # wait_points RESULTS N: until at least N points are done (10 s at most)
    local i
    for i in $(seq 200); do
        [ "$(ls "$1"/points/*/point.json 2>/dev/null | wc -l)" -ge "$2" ] && return 0
        sleep 0.05
    done
    fail "$1: fewer than $2 points finished in 10 s"
}
wait_group_gone() { # wait_group_gone PGID: the killed run's survivors (orphans) end on their own
    local i
    for i in $(seq 300); do
        pgrep -g "$1" >/dev/null || return 0
        sleep 0.05
    done
    fail "processes of the killed run still alive after 15 s: $(pgrep -g "$1" | tr '\n' ' ')"
}
check_rerun() { # check_rerun RESULTS LOG BEFORE_SNAPSHOT: the re-run's CSV and the not-recomputed rule
    local r=$1 log=$2 before=$3 f
    cmp -s "$W/a/sweep.csv" "$r/sweep.csv" || { diff "$W/a/sweep.csv" "$r/sweep.csv" | head; fail "$r: CSV differs from the uninterrupted run"; }
    [ "$(tail -n +2 "$r/sweep.csv" | cut -d, -f1 | sort | uniq -d | wc -l)" = 0 ] || fail "$r: duplicate rows"
    while read -r f ino mt; do
        [ "$(stat -c '%i %.9Y' "$f")" = "$ino $mt" ] || fail "$f was rewritten after the kill"
        id=$(basename "$(dirname "$f")")
        [ "$(grep -cx "$id" "$log")" = 1 ] || fail "$id was finished before the kill but computed again"
    done < "$before"
    ls "$r"/points/*/point.json.tmp.* "$r"/sweep.csv.tmp.* 2>/dev/null && fail "$r: temporaries left"
    return 0
}

all_stopped() { # all_stopped LOG: every point command the killed run started has stopped (5 s at most)
    local i pid alive
    for i in $(seq 100); do
        alive=0
        for pid in $(cut -d' ' -f2 "$1.pids"); do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.05
    done
    fail "point commands of the killed run still alive after 5 s: $(cat "$1.pids")"
}
start_slow() { # start_slow RESULTS LOG: a run whose k=6, 1+1 point sleeps 30 s; returns once one of them works
    FAKE_SLOW=-k6-r1.1- FAKE_LOG=$2 setsid "$SWEEP" "$W/fake.sh.spec" --jobs 2 --results "$1" > "$1.out" 2>&1 &
    pid=$!
    pgids+=("$pid")
    for _ in $(seq 600); do grep -q -- "-k6-r1.1-" "$2" 2>/dev/null && return 0; sleep 0.05; done
    fail "the slow point did not start in 30 s"
}
killed_run_checks() { # killed_run_checks RESULTS LOG WHAT
    local r=$1 log=$2 n started
    all_stopped "$log"
    sleep 0.5   # a worker whose point ended just before the kill writes its point.json
    snapshot "$r" > "$r.before"
    n=$(wc -l < "$r.before")
    started=$(sort -u "$log" | wc -l)
    [ "$n" -lt 12 ] && [ "$started" -gt "$n" ] || fail "$3: no point was cut mid-way (started $started, finished $n)"
    FAKE_LOG=$log "$SWEEP" "$W/fake.sh.spec" --jobs 2 --results "$r" > "$r.rerun" 2>&1 \
        || { cat "$r.rerun"; fail "re-run after $3 failed"; }
    check_rerun "$r" "$log" "$r.before"
    echo "check_sweep: $3 with $n of 12 points done and $((started - n)) cut mid-point, nothing left running; re-run: same CSV, done points kept"
}

# 2. kill -9 of the runner alone, mid-point: its workers notice and stop their points.
start_slow "$W/b" "$W/runs_b.log"
kill -9 "$pid"
disown "$pid" 2>/dev/null || true   # no "Killed" notice from this shell
killed_run_checks "$W/b" "$W/runs_b.log" "kill -9 of the runner"
wait_group_gone "$pid"

# 3. kill -9 of the runner's whole process group (runner and GNU parallel; workers have groups of their own).
start_slow "$W/c" "$W/runs_c.log"
kill -9 -- "-$pid"
disown "$pid" 2>/dev/null || true
wait_group_gone "$pid"
killed_run_checks "$W/c" "$W/runs_c.log" "kill -9 of the runner's process group"
# A third run has nothing to do.
FAKE_LOG=$W/runs_c.log "$SWEEP" "$W/fake.sh.spec" --jobs 2 --results "$W/c" > "$W/c3.out" 2>&1
grep -q "nothing to run" "$W/c3.out" || fail "a finished sweep ran again: $(cat "$W/c3.out")"

# 4. kill -9 of one worker mid-point: the sweep goes on, reports the point, the re-run finishes it.
start_slow "$W/d" "$W/runs_d.log"
worker=$(awk '/-k6-r1.1-/ { print $3; exit }' "$W/runs_d.log.pids")
kill -9 "$worker"
wait "$pid" && fail "the runner reported success with a killed worker" || true
grep -q "did not finish" "$W/d.out" || fail "killed worker: no report of the unfinished point: $(cat "$W/d.out")"
all_stopped "$W/runs_d.log"
snapshot "$W/d" > "$W/d.before"
FAKE_LOG=$W/runs_d.log "$SWEEP" "$W/fake.sh.spec" --jobs 2 --results "$W/d" > "$W/d.rerun" 2>&1 || fail "re-run after a killed worker"
check_rerun "$W/d" "$W/runs_d.log" "$W/d.before"
echo "check_sweep: kill -9 of a worker: the point command stopped, the rest of the sweep done, the re-run finished it"

# 4. Threads: jobs x threads <= cores.
thr() { # thr CORES JOBS [SPEC_THREADS] -> the threads the points got
    local r=$W/t_$1_$2_${3:-0}
    spec "$W/t.spec" fake "threads=${3:-0}"
    EARNEST_CORES=$1 FAKE_LOG=$r.log "$SWEEP" "$W/t.spec" --jobs "$2" --results "$r" > "$r.out" 2>&1 || fail "threads run"
    cut -d' ' -f2 "$r.log.threads" | sort -u | tr '\n' ' '
}
[ "$(thr 4 2)" = "2 " ] || fail "4 cores, 2 jobs: expected 2 threads each"
[ "$(thr 4 3)" = "1 " ] || fail "4 cores, 3 jobs: expected 1 thread each"
[ "$(thr 8 2 3)" = "3 " ] || fail "8 cores, 2 jobs, threads=3: expected 3"
[ "$(thr 4 2 3)" = "2 " ] || fail "4 cores, 2 jobs, threads=3: expected 2 (capped)"
[ "$(thr 2 5)" = "1 " ] && grep -q "running 2 jobs" "$W/t_2_5_0.out" || fail "5 jobs on 2 cores: not capped to 2"

# 5. --dry-run writes nothing; --slurm --dry-run prints the array script.
FAKE_LOG=$W/dry.log "$SWEEP" "$W/fake.sh.spec" --jobs 2 --results "$W/dry" --dry-run > "$W/dry.out" 2>&1 || fail "dry run"
[ ! -e "$W/dry" ] && [ ! -e "$W/dry.log" ] || fail "--dry-run wrote something"
grep -q "12 points (0 done, 12 to run), 11 models" "$W/dry.out" || fail "dry run plan: $(cat "$W/dry.out")"
"$SWEEP" "$W/fake.sh.spec" --jobs 3 --results "$W/dry" --slurm --partition=x --dry-run > "$W/dry.out" 2>&1 || fail "slurm dry run"
grep -q -- "--array=1-12%3" "$W/dry.out" && grep -q "sbatch --partition=x" "$W/dry.out" || fail "slurm dry run: $(cat "$W/dry.out")"
[ ! -e "$W/dry" ] || fail "--slurm --dry-run wrote something"

# 6. Bad input: a clear error (exit 2) before anything runs.
bad() { # bad "MESSAGE" SPEC_LINES... : the spec fails with MESSAGE, nothing written, nothing run
    local msg=$1
    shift
    { echo "name=bad"; echo "data=$W/data"; echo "point_cmd=\"bash $W/fake.sh\""; printf '%s\n' "$@"; } > "$W/bad.spec"
    set +e
    FAKE_LOG=$W/bad.log "$SWEEP" "$W/bad.spec" --jobs 2 --results "$W/bad" > "$W/bad.out" 2>&1
    local rc=$?
    set -e
    [ $rc = 2 ] || fail "spec [$*]: exit $rc, expected 2: $(cat "$W/bad.out")"
    grep -qF -- "$msg" "$W/bad.out" || fail "spec [$*]: message lacks '$msg': $(cat "$W/bad.out")"
    [ ! -e "$W/bad" ] && [ ! -e "$W/bad.log" ] || fail "spec [$*]: something was written or run"
}
bad "unknown axis or setting kk" "dataset=syn" "kk=1"
bad "unknown axis kay" "dataset=syn" 'grid method=earn kay=2'
bad "line 5: method=fancy: unknown value (known: finetune, earn, skiplayers, gist, anllm, pod, compress500x)" "dataset=syn" "method=fancy"
bad "line 5 (grid call 1): method=fancy: unknown value" "dataset=syn" "grid method=fancy"
bad "line 6 (grid call 2): policy=snapkv:budget=0.25 with method=earn: a training-free policy runs on the finetune model" \
    "dataset=syn" "grid method=finetune policy=snapkv:budget=0.25" 'grid method=earn policy="none snapkv:budget=0.25"'
bad "line 5 (grid call 1): method=gist with prefix_regs=0 suffix_regs=0: its knob is suffix_regs, the gist tokens (at least 1)" \
    "dataset=syn" "grid method=gist suffix_regs=0"
bad "line 5: method=gist with prefix_regs=0 suffix_regs=0" "dataset=syn" "suffix_regs=0" "grid method=gist"
bad "method=pod with prefix_regs=0 suffix_regs=0: its knob is prefix_regs" "dataset=syn" "grid method=pod regs=0,0"
bad "method=anllm with prefix_regs=1 suffix_regs=1: anllm takes no registers" "dataset=syn" "grid method=anllm regs=1,1"
bad "keep_layers=8: unknown value for preset small (skiplayers keeps 1 <= M < N = 8 layers)" "dataset=syn" \
    "grid method=skiplayers keep_layers=8"
bad "policy=fancy:budget=0.2: unknown policy 'fancy'" "dataset=syn" "grid method=finetune policy=fancy:budget=0.2"
bad "policy=snapkv:windw=3: unknown key 'windw' for snapkv" "dataset=syn" "grid method=finetune policy=snapkv:windw=3"
bad "policy=snapkv:budget=0: budget=0: outside (0, 1]" "dataset=syn" "grid method=finetune policy=snapkv:budget=0"
bad "policy=truncate:items: 'items' is not key=value" "dataset=syn" "grid method=finetune policy=truncate:items"
bad "k=8: unknown value for preset small" "dataset=syn" 'k="2 8"'
bad "k=x: unknown value" "dataset=syn" 'k=x'
bad "preset=huge: unknown value" "dataset=syn" "preset=huge"
bad "template=plain: unknown value" "dataset=syn" "template=plain"
bad "regs=1: unknown value" "dataset=syn" "regs=1"
bad "dataset=nope: unknown value: no prepared dataset" "dataset=nope"
bad "device=gpu: unknown value" "dataset=syn" "device=gpu"
bad "epochs='two'" "dataset=syn" "epochs=two"
bad "axis k is empty (an empty grid)" "dataset=syn" 'k=""'
bad "axis dataset is empty (an empty grid)" 'dataset=""'
bad "no dataset" 'grid method=earn'
bad "is an array" "dataset=syn" "k=(1 2)"
if [ -x "$EARNEST" ] && ! "$EARNEST" bench --preset tiny --prompt-len 1 --reps 1 --device cuda >/dev/null 2>&1; then
    bad "device=cuda: --device cuda: " "dataset=syn" 'device="cpu cuda"'
fi
# A results folder holding another sweep's points.
spec "$W/other.spec" other
set +e
FAKE_LOG=$W/other.log "$SWEEP" "$W/other.spec" --jobs 2 --results "$W/a" > "$W/other.out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "holds sweep 'fake'" "$W/other.out" || fail "another sweep's results: rc $rc: $(cat "$W/other.out")"
[ ! -e "$W/other.log" ] || fail "another sweep's results: something ran"
mkdir -p "$W/foreign/points"
cp -r "$W/a/points/$(ls "$W/a/points" | head -1)" "$W/foreign/points/"
set +e
"$SWEEP" "$W/other.spec" --results "$W/foreign" > "$W/other.out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "not a sweep results folder" "$W/other.out" || fail "foreign points: rc $rc: $(cat "$W/other.out")"
cp "$W/a/sweep.json" "$W/foreign/" && sed -i 's/"sweep": "fake"/"sweep": "other"/' "$W/foreign/sweep.json"
set +e
"$SWEEP" "$W/other.spec" --results "$W/foreign" > "$W/other.out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "point(s) of another sweep" "$W/other.out" || fail "foreign points: rc $rc: $(cat "$W/other.out")"
set +e
"$SWEEP" "$W/fake.sh.spec" --jobs 2 --bogus > "$W/opt.out" 2>&1; rc=$?
set -e
[ $rc = 2 ] && grep -q "unknown option '--bogus'" "$W/opt.out" || fail "unknown option: rc $rc"

# 7. The baselines: every trained method, and policy points on the finetune model.
{
    echo "name=methods"; echo "data=$W/data"; echo "dataset=syn"; echo "preset=small"; echo "point_cmd=\"bash $W/fake.sh\""
    echo "bench_items=5"
    echo 'grid method=finetune policy="none snapkv:budget=.25 truncate:items=3 selective:ratio=0.5"'
    echo 'grid method=earn'
    echo 'grid method=skiplayers'
    echo 'grid method=gist suffix_regs="1 3"'
    echo 'grid method=anllm'
    echo 'grid method=pod prefix_regs=2'
} > "$W/methods.spec"
FAKE_LOG=$W/methods.log "$SWEEP" "$W/methods.spec" --jobs 2 --results "$W/m" > "$W/m.out" 2>&1 || { cat "$W/m.out"; fail "methods run"; }
grep -q "10 points (0 done, 10 to run), 7 models" "$W/m.out" || fail "methods plan: $(head -3 "$W/m.out")"
$PY - "$W/methods.log.methods" "$W/m/sweep.csv" <<'PYEOF' || fail "methods: the points' commands and parameters"
import csv, sys
got = {}
for line in open(sys.argv[1]):
    pid, mid, train, bench, own, on, pol = line.rstrip("\n").split("|")
    got[pid] = (mid, train, bench, own, on, pol.strip())
def one(prefix):
    ids = [p for p in got if p.startswith(prefix)]
    assert len(ids) == 1, (prefix, ids)
    return got[ids[0]]
ft = one("syn-small-finetune-L1024-")
assert ft[1:] == ("--prefix-regs 0 --suffix-regs 0", "full", "full", "model", "none"), ft
for tag, bench, flag in (("snapkv-budget-0.25", "full,snapkv:budget=0.25", "--kv-policy snapkv:budget=0.25"),
                         ("truncate-items-3", "full,truncate:items=3", "--prompt-policy truncate:items=3"),
                         ("selective-ratio-0.5", "full,selective:ratio=0.5", "--prompt-policy selective:ratio=0.5")):
    p = one("syn-small-finetune-%s-L1024-" % tag)
    assert p[0] == ft[0], ("a policy point must use the finetune model", p, ft)
    assert p[2] == bench and p[3] == tag.split("-")[0] and p[5] == flag, p
assert one("syn-small-earn-k2-r1.1-")[1:3] == ("--prefix-regs 1 --suffix-regs 1 --k 2", "full,earn")
assert one("syn-small-skiplayers-m2-")[1:5] == ("--keep-layers 2", "full,skiplayers:keep=2", "skiplayers", "preset")
assert one("syn-small-gist-r0.3-")[1:4] == ("--suffix-regs 3", "full,gist:tokens=3", "gist")
assert one("syn-small-gist-r0.1-")[1] == "--suffix-regs 1"
assert one("syn-small-anllm-")[1:4] == ("", "full,anllm:items=5", "anllm")
assert one("syn-small-pod-r2.0-")[1:4] == ("--prefix-regs 2", "full,pod:regs=2", "pod")
rows = list(csv.DictReader(open(sys.argv[2])))
assert len(rows) == 10 and len({r["model_id"] for r in rows}) == 7, len(rows)
for r in rows:
    if r["method"] != "finetune" or "-finetune-L" in r["id"]:
        assert r["policy"] == "", r
    assert (r["keep_layers"] == "2") == (r["method"] == "skiplayers"), r
assert {r["policy"] for r in rows} == {"", "snapkv:budget=0.25", "truncate:items=3", "selective:ratio=0.5"}
print("check_sweep: 10 baseline points (6 methods, 3 policies on the shared finetune model): flags, bench entries, CSV")
PYEOF
# The committed beauty sweep's points keep their ids (and their models') with the new axes.
mkdir -p "$W/beauty_data/beauty" && echo '{}' > "$W/beauty_data/beauty/meta.json"
EARNEST_DATA=$W/beauty_data "$SWEEP" "$SRC/experiments/sweeps/beauty_tiger_small.sh" --dry-run --results "$W/bts" > "$W/bts.out" 2>&1 \
    || { cat "$W/bts.out"; fail "beauty_tiger_small.sh dry run"; }
sed -n 's/^  todo \([^ ]*\)  (model \([^;]*\);.*/\1,\2/p' "$W/bts.out" | sort > "$W/bts.ids"
tail -n +2 "$SRC/experiments/results/sweep_beauty_tiger_small.csv" | awk -F, '{ print $1 "," $3 }' | sort > "$W/bts.committed"
[ -s "$W/bts.ids" ] && cmp -s "$W/bts.ids" "$W/bts.committed" || { diff "$W/bts.committed" "$W/bts.ids"; fail "the committed beauty sweep's ids changed"; }
echo "check_sweep: the committed beauty sweep's $(wc -l < "$W/bts.ids") point and model ids are unchanged"
echo "check_sweep: OK"
