#!/usr/bin/env bash
# check_sweep_slurm.sh: experiments/sweep.sh --slurm against a real single-node
# Slurm. The test writes its own munge key and slurm.conf under a temporary folder,
# starts munged, slurmctld and slurmd (as root, on free ports), submits a 6-point
# sweep (fake per-point command) as a job array with at most 2 tasks at once,
# waits for it, and checks that every task ran the per-point command under Slurm
# and that the tasks themselves assembled sweep.csv, equal to a local run's. A
# second submission finds nothing to do. It stops the daemons it started (by PID)
# and leaves nothing running. It skips (exit 77, a clear message) only when the
# daemons cannot be started: not root, Slurm or munge not installed
# (scripts/setup.sh installs them), or a daemon that does not come up.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
SWEEP=$SRC/experiments/sweep.sh
W=$(mktemp -d /tmp/earnest_check_slurm_XXXXXX)
chmod 755 "$W"   # munged wants its socket folder reachable by all
pids=()
fail() { echo "check_sweep_slurm: FAIL: $*" >&2; exit 1; }
skip() { echo "check_sweep_slurm: SKIP: $*" >&2; exit 77; }
stop_daemons() {
    local i p
    if [ -n "${SLURM_CONF:-}" ] && [ ${#pids[@]} -ge 2 ]; then
        scancel --quiet --full --user=root 2>/dev/null || true   # this test's cluster only (SLURM_CONF)
        for i in $(seq 100); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.1; done
    fi
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do   # slurmd, slurmctld, then munged
        p=${pids[$i]}
        kill "$p" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_daemons; rm -rf "$W"' EXIT

[ "$(id -u)" = 0 ] || skip "needs root to start munged, slurmctld and slurmd"
for b in munged munge slurmctld slurmd sbatch squeue scancel sinfo parallel; do
    command -v "$b" >/dev/null || skip "$b not installed (scripts/setup.sh: munge slurmctld slurmd slurm-client parallel)"
done
host=$(hostname -s)
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# munge: its own key, socket and logs.
mkdir -p "$W/munge" "$W/state" "$W/spool" "$W/log"
chmod 755 "$W/munge"
head -c 1024 /dev/urandom > "$W/munge/munge.key"
chmod 600 "$W/munge/munge.key"
munged --foreground --force --socket="$W/munge/sock" --key-file="$W/munge/munge.key" \
    --log-file="$W/log/munged.log" --pid-file="$W/munge/munged.pid" --seed-file="$W/munge/seed" \
    > "$W/log/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$W/munge/sock" ] && break; sleep 0.1; done
munge -S "$W/munge/sock" -n 2>/dev/null | unmunge -S "$W/munge/sock" >/dev/null 2>&1 \
    || skip "munged did not start: $(tail -n 3 "$W/log/munged.out" "$W/log/munged.log" 2>/dev/null | tr '\n' ' ')"

cat > "$W/slurm.conf" <<EOF
ClusterName=earnesttest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$W/munge/sock
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=sweeptest Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$W/slurm.conf
slurmctld -D -i > "$W/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D > "$W/log/slurmd.out" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.2
done
[ "$state" = idle ] || skip "slurmctld/slurmd did not come up (node state '$state'): $(tail -n 2 "$W"/log/slurm*.out | tr '\n' ' ')"
echo "check_sweep_slurm: munged, slurmctld, slurmd up (node $host idle)"

# The sweep: 6 points, fake command (as check_sweep.sh's).
mkdir -p "$W/data/syn"
echo '{}' > "$W/data/syn/meta.json"
cat > "$W/fake.sh" <<'EOF'
set -euo pipefail
echo "$SWEEP_ID ${SLURM_ARRAY_JOB_ID:-none} ${SLURM_ARRAY_TASK_ID:-none} $SWEEP_THREADS" >> "$FAKE_LOG"
sleep 0.2
/usr/bin/python3 -c '
import json, os
e = os.environ
k, n = int(e["SWEEP_K"]), int(e["SWEEP_N_LAYERS"])
json.dump({"recall@10": 0.01 * (k + 1), "bench_speedup": n / k if k else 1.0}, open("metrics.json.tmp", "w"))
os.replace("metrics.json.tmp", "metrics.json")'
EOF
cat > "$W/spec.sh" <<EOF
name=slurmtest
data=$W/data
dataset=syn
preset=small
point_cmd="bash $W/fake.sh"
grid method=earn k="1 2 3 4 6"
grid method=finetune
EOF
export FAKE_LOG=$W/runs.log
R=$W/results
"$SWEEP" "$W/spec.sh" --jobs 2 --results "$R" --slurm --job-name=earnest-check > "$W/submit.out" 2>&1 || { cat "$W/submit.out"; fail "submission failed"; }
grep -q "submitted array job" "$W/submit.out" || fail "no submission message: $(cat "$W/submit.out")"
for _ in $(seq 600); do [ -z "$(squeue -h)" ] && break; sleep 0.2; done
[ -z "$(squeue -h)" ] || fail "the array did not finish in 120 s: $(squeue)"
script=$(ls "$R"/slurm/*/array.sbatch | head -1)
grep -q -- "--array=1-6%2" "$script" || fail "array line: $(grep array "$script")"
grep -q -- "--cpus-per-task=1" "$script" || fail "cpus-per-task line"
[ "$(wc -l < "$FAKE_LOG")" = 6 ] || fail "expected 6 task runs, got: $(cat "$FAKE_LOG")"
awk '$2 == "none" || $3 == "none" { bad = 1 } END { exit bad }' "$FAKE_LOG" || fail "a point ran outside Slurm: $(cat "$FAKE_LOG")"
[ "$(cut -d' ' -f3 "$FAKE_LOG" | sort -n | tr '\n' ' ')" = "1 2 3 4 5 6 " ] || fail "array task ids: $(cat "$FAKE_LOG")"
[ "$(tail -n +2 "$R/sweep.csv" | wc -l)" = 6 ] || fail "the tasks did not assemble a 6-row sweep.csv: $(cat "$R/sweep.csv")"
grep -q '"slurm_job": "[0-9]' "$R"/points/*/point.json || fail "point.json does not record the Slurm job"

# The same CSV as a local run of the same spec.
FAKE_LOG=$W/local.log "$SWEEP" "$W/spec.sh" --jobs 2 --results "$W/local" > "$W/local.out" 2>&1 || fail "local run"
cmp -s "$R/sweep.csv" "$W/local/sweep.csv" || { diff "$R/sweep.csv" "$W/local/sweep.csv" | head; fail "Slurm and local CSVs differ"; }
# Everything done: a second submission (with --wait) finds nothing to submit.
"$SWEEP" "$W/spec.sh" --results "$R" --slurm --wait > "$W/again.out" 2>&1 || fail "second submission: $(cat "$W/again.out")"
grep -q "nothing to submit" "$W/again.out" || fail "second submission did something: $(cat "$W/again.out")"
# --wait: one point removed, resubmitted, waited for, collected.
rm -rf "$R/points/$(ls "$R/points" | head -1)"
"$SWEEP" "$W/spec.sh" --results "$R" --slurm --wait > "$W/wait.out" 2>&1 || { cat "$W/wait.out"; fail "--slurm --wait run"; }
grep -q "all 6 points done" "$W/wait.out" || fail "--wait did not report the finished sweep: $(cat "$W/wait.out")"
cmp -s "$R/sweep.csv" "$W/local/sweep.csv" || fail "CSV after the --wait resubmission differs"
stop_daemons
echo "check_sweep_slurm: OK"
