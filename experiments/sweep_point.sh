#!/usr/bin/env bash
# experiments/sweep_point.sh RESULTS ID: runs one point of a sweep; the same
# command for a GNU parallel job and a Slurm array task (experiments/sweep.sh).
#
#   1. RESULTS/points/ID/point.json exists: the point is done; nothing happens.
#   2. Takes the point's lock (RESULTS/points/ID/.lock; waits if another worker
#      holds it, then looks again), so a point never runs twice at once.
#   3. Runs the sweep's point command (a shell command line; default
#      experiments/sweep_work.sh) in the point's folder, in a process group of its
#      own, with the point's parameters and paths in SWEEP_* variables
#      (experiments/sweep.py env) and SWEEP_THREADS; its output is appended to
#      RESULTS/points/ID/point.log. It must leave RESULTS/points/ID/metrics.json, a
#      flat JSON object. While it runs, a watchdog stops it (SIGTERM to its group:
#      `earnest train` saves its state; SIGKILL 60 s later) when this worker or the
#      runner that started it (SWEEP_RUNNER_PID, set by a local sweep.sh) is gone,
#      even by SIGKILL; SIGTERM/SIGINT/SIGHUP to this worker do the same.
#   4. Writes point.json (parameters + metrics + how it ran) atomically: last.
#   5. Re-assembles RESULTS/sweep.csv from every point.json (sweep.py collect).
# A worker killed at any moment leaves no point.json; the next run redoes the point.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="${EARNEST_PYTHON:-/usr/bin/python3}"
[ $# -eq 2 ] || { echo "usage: sweep_point.sh RESULTS ID" >&2; exit 2; }
R=$(cd "$1" && pwd) ID=$2
D=$R/points/$ID
[ -f "$D/params.json" ] || { echo "sweep_point: $D/params.json: no such point in $R" >&2; exit 2; }
if [ -f "$D/point.json" ]; then echo "skip   $ID (done)"; exit 0; fi
runner=${SWEEP_RUNNER_PID:-}
if [ -n "$runner" ] && ! kill -0 "$runner" 2>/dev/null; then
    echo "stop   $ID (its runner, PID $runner, is gone)" >&2
    exit 3
fi

exec 9>"$D/.lock"
if ! flock -n 9; then
    echo "wait   $ID (another worker holds $D/.lock)"
    flock 9
fi
if [ -f "$D/point.json" ]; then echo "skip   $ID (finished by another worker)"; exit 0; fi
# What a killed worker of this point left (no other worker runs it: we hold the lock).
rm -f "$D"/point.json.tmp.* "$D"/metrics.json.tmp.* "$D/metrics.json"

env_lines=$("$PY" "$SRC/experiments/sweep.py" env "$R" "$ID")
eval "$env_lines"
export SWEEP_THREADS=${SWEEP_THREADS:-1}
start=$(date +%s.%N)
echo "start  $ID ($SWEEP_THREADS thread(s), $(hostname))"
{
    echo "== $(date -Is) $(hostname) pid $$: $SWEEP_POINT_CMD"
} >> "$D/point.log"
# The point command, in its own process group (children keep fd 9, the point's lock).
(cd "$D" && exec setsid bash -c "$SWEEP_POINT_CMD") >> "$D/point.log" 2>&1 &
child=$!
stop_child() { # stop_child REASON
    echo "== $(date -Is) stopping the point command: $1" >> "$D/point.log"
    kill -TERM -- "-$child" 2>/dev/null || return 0
    for _ in $(seq 600); do kill -0 "$child" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$child" 2>/dev/null || true
}
trap 'stop_child "signal to the worker"; exit 143' TERM INT HUP
worker=$$
( # the watchdog: this worker and its runner must live while the point command works
    trap - TERM INT HUP
    while kill -0 "$child" 2>/dev/null; do
        if ! kill -0 "$worker" 2>/dev/null; then stop_child "its worker (PID $worker) is gone"; exit 0; fi
        if [ -n "$runner" ] && ! kill -0 "$runner" 2>/dev/null; then stop_child "the runner (PID $runner) is gone"; exit 0; fi
        sleep 0.2
    done
) 9>&- &
watchdog=$!
set +e
wait "$child"
rc=$?
set -e
kill "$watchdog" 2>/dev/null || true
wait "$watchdog" 2>/dev/null || true
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
if [ $rc -eq 75 ]; then   # EX_TEMPFAIL: e.g. a training cut by max_minutes; the next run continues it
    echo "paused $ID after ${secs} s ($(grep -v '^==' "$D/point.log" | tail -n 1)); run the sweep again to continue" >&2
    exit 75
fi
if [ $rc -ne 0 ] || [ ! -f "$D/metrics.json" ]; then
    [ $rc -ne 0 ] || rc=1
    echo "FAILED $ID (status $rc after ${secs} s; log $D/point.log):" >&2
    tail -n 5 "$D/point.log" | sed 's/^/    /' >&2
    exit $rc
fi
"$PY" "$SRC/experiments/sweep.py" finish "$R" "$ID" --seconds "$secs" --threads "$SWEEP_THREADS"
echo "done   $ID (${secs} s)"
"$PY" "$SRC/experiments/sweep.py" collect "$R" --quiet
