#!/usr/bin/env bash
# experiments/sweep.sh: runs a sweep spec (experiments/sweeps/*.sh) locally
# through GNU parallel or as a Slurm job array.
#
#   experiments/sweep.sh SPEC [--jobs N | --slurm [sbatch options]] [--dry-run]
#                        [--results DIR] [--wait] [--collect]
#
#   --jobs N      local: N points at once through GNU parallel (default 1); each
#                 gets cores/N threads (spec threads=T caps it; jobs x threads <= cores,
#                 cores = EARNEST_CORES or nproc)
#   --slurm ...   write RESULTS/slurm/<stamp>/array.sbatch (one array task per point
#                 still to run, --array=1-M%L with L = --jobs given before --slurm, else
#                 the spec's slurm_limit, default 16; --cpus-per-task = threads, default 1)
#                 and submit it with sbatch; the arguments after --slurm go to sbatch
#                 (except --dry-run and --wait)
#   --wait        with --slurm: wait for the array to end, then report like a local run
#   --dry-run     validate the spec, print the grid and what would run; write nothing
#   --results DIR where the points go (default: the spec's results=, else out/sweeps/NAME)
#   --collect     only (re)assemble RESULTS/sweep.csv from the finished points
#
# Each point runs `experiments/sweep_point.sh RESULTS ID`: it skips a point whose
# RESULTS/points/ID/point.json exists, holds the point's lock while it works, runs
# the spec's point_cmd (default experiments/sweep_work.sh: train or reuse the model,
# eval, bench, attention) and writes point.json last, atomically; then it
# re-assembles RESULTS/sweep.csv (under a lock, via a temporary file and a rename).
# So a sweep killed at any moment (the runner, GNU parallel, a worker, a Slurm task)
# is finished by running the same command again: done points are skipped, the others
# redone, nothing duplicated. A worker stops its point when its runner is gone (even
# by SIGKILL): a killed runner leaves nothing working behind it.
# Env: EARNEST (binary, default build/earnest), EARNEST_DATA (data folder when the spec
# sets no data=), EARNEST_CORES.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="${EARNEST_PYTHON:-/usr/bin/python3}"
HELPER=$SRC/experiments/sweep.py
EARNEST=${EARNEST:-$SRC/build/earnest}
die() { echo "sweep: $*" >&2; exit 2; }

spec="" jobs="" mode=local dry=0 results="" wait=0 collect=0
sbatch_opts=()
while [ $# -gt 0 ]; do
    if [ "$mode" = slurm ]; then  # after --slurm: sbatch's, but for our own two
        case "$1" in
            --dry-run) dry=1 ;;
            --wait) wait=1 ;;
            *) sbatch_opts+=("$1") ;;
        esac
        shift; continue
    fi
    case "$1" in
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --jobs) [ $# -ge 2 ] || die "--jobs needs a number"; jobs=$2; shift 2 ;;
        --jobs=*) jobs=${1#--jobs=}; shift ;;
        --results) [ $# -ge 2 ] || die "--results needs a folder"; results=$2; shift 2 ;;
        --slurm) mode=slurm; shift ;;
        --dry-run) dry=1; shift ;;
        --wait) wait=1; shift ;;
        --collect) collect=1; shift ;;
        -*) die "unknown option '$1' (experiments/sweep.sh --help)" ;;
        *) [ -z "$spec" ] || die "one SPEC only ('$spec', then '$1')"; spec=$1; shift ;;
    esac
done
[ -n "$spec" ] || die "usage: experiments/sweep.sh SPEC [--jobs N | --slurm [sbatch options]] [--dry-run] (--help)"
[ -f "$spec" ] && [ -r "$spec" ] || die "$spec: no such spec file"
[ -z "$jobs" ] || [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs '$jobs': a positive integer"
[ "$wait" = 0 ] || [ "$mode" = slurm ] || die "--wait goes with --slurm"
spec=$(cd "$(dirname "$spec")" && pwd)/$(basename "$spec")

# The spec, sourced in a clean shell: every variable it sets and every `grid` call.
dump_spec() {
    env -i PATH="$PATH" HOME="${HOME:-/}" bash --norc --noprofile -c '
        grid() { local a; { printf "G\037@%s" "${BASH_LINENO[0]}"; for a in "$@"; do printf "\037%s" "$a"; done; printf "\n"; } >&3; }
        __before=" $(compgen -v | tr "\n" " ") "
        source "$1" 3>&1 >&2 || { echo "sweep: $1: sourcing the spec failed (status $?)" >&2; exit 2; }
        for __v in $(compgen -v); do
            case "$__before" in *" $__v "*) continue ;; esac
            case "$__v" in __*|BASH*|PIPESTATUS|FUNCNAME|OLDPWD|OPTARG|OPTIND|REPLY|COLUMNS|LINES|_) continue ;; esac
            case "$(declare -p "$__v" 2>/dev/null)" in "declare -"[aA]*) printf "A\037%s\n" "$__v"; continue ;; esac
            printf "V\037%s\037%s\n" "$__v" "${!__v}"
        done' _ "$1"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sweep.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dump_spec "$spec" > "$tmp/dump" || exit 2
plan_args=(plan --dump "$tmp/dump" --spec "$spec" --src "$SRC" --earnest "$EARNEST" --mode "$mode"
           --cores "${EARNEST_CORES:-$(nproc)}")
[ -z "$results" ] || plan_args+=(--results "$results")
[ -z "$jobs" ] || plan_args+=(--jobs "$jobs")
# First only validate (nothing written), then check the tools, then plan for real.
plan=$("$PY" "$HELPER" "${plan_args[@]}" --dry-run --quiet) || exit $?
eval "$plan"   # NAME RESULTS JOBS THREADS N_POINTS N_TODO DEVICES DEFAULT_CMD TODO_IDS

if [ "$collect" = 1 ]; then
    [ -f "$RESULTS/grid.json" ] || die "$RESULTS: no grid.json: this sweep has not run there yet"
    exec "$PY" "$HELPER" collect "$RESULTS"
fi
# Every device of the grid must exist in this build, before anything runs.
for dev in $DEVICES; do
    [ "$dev" = cpu ] && continue
    [ -x "$EARNEST" ] || die "no earnest binary at $EARNEST (build it, or set EARNEST)"
    if ! "$EARNEST" bench --preset tiny --method full --prompt-len 1 --reps 1 --device "$dev" >/dev/null 2>"$tmp/dev"; then
        die "$spec: device=$dev: $(sed 's/^earnest bench: //' "$tmp/dev" | head -1)"
    fi
done
if [ "$dry" = 0 ]; then
    [ "$DEFAULT_CMD" = 0 ] || [ -x "$EARNEST" ] || die "no earnest binary at $EARNEST (build it, or set EARNEST)"
    if [ "$mode" = local ]; then
        command -v parallel >/dev/null || die "GNU parallel is not installed (apt-get install parallel; scripts/setup.sh)"
    else
        command -v sbatch >/dev/null || die "sbatch not found (Slurm's client; apt-get install slurm-client)"
    fi
else
    plan_args+=(--dry-run)
fi
plan=$("$PY" "$HELPER" "${plan_args[@]}") || exit $?
eval "$plan"

report() { # after a local run or a waited-for array: collect, then say what is missing
    "$PY" "$HELPER" collect "$RESULTS"
    local missing
    missing=$("$PY" "$HELPER" status "$RESULTS" | awk '$2 == "pending" { print $1 }')
    if [ -n "$missing" ]; then
        echo "sweep: $(wc -l <<<"$missing") point(s) did not finish (logs: $RESULTS/points/ID/point.log):" >&2
        sed 's/^/  /' <<<"$missing" >&2
        echo "sweep: run the same command again to finish them" >&2
        return 1
    fi
    echo "sweep $NAME: all $N_POINTS points done; $RESULTS/sweep.csv"
}

stamp=$(date +%Y%m%d-%H%M%S)-$$
if [ "$mode" = local ]; then
    cmd=(parallel --will-cite --jobs "$JOBS" --line-buffer --joblog "$RESULTS/logs/parallel-$stamp.log"
         -a "$RESULTS/todo.txt" bash "$SRC/experiments/sweep_point.sh" "$RESULTS" "{}")
    if [ "$dry" = 1 ]; then
        echo "dry run: would run (SWEEP_THREADS=$THREADS): ${cmd[*]}"
        exit 0
    fi
    if [ "$N_TODO" = 0 ]; then
        echo "sweep $NAME: nothing to run"
        report
        exit
    fi
    mkdir -p "$RESULTS/logs"
    # SWEEP_RUNNER_PID: a worker whose runner is gone (even by SIGKILL) stops its point
    # SWEEP_RUN_ID: this run; a training cut by max_minutes gets one slice per run, whichever point continues it
    SWEEP_RUN_ID=$stamp SWEEP_RUNNER_PID=$$ SWEEP_THREADS=$THREADS "${cmd[@]}" || true  # failed points are reported below
    report
    exit
fi

# --slurm: one array task per point still to run, each the same per-point command.
[ "$N_TODO" != 0 ] || { echo "sweep $NAME: nothing to submit (all $N_POINTS points done)"; [ "$dry" = 1 ] || report; exit; }
dir=$RESULTS/slurm/$stamp
write_sbatch() { # write_sbatch IDS_FILE
    printf '#!/bin/bash\n'
    printf '#SBATCH --job-name=sweep-%s\n' "$NAME"
    printf '#SBATCH --array=1-%d%%%d\n' "$N_TODO" "$JOBS"
    printf '#SBATCH --cpus-per-task=%d\n' "$THREADS"
    printf '#SBATCH --output=%s/task-%%a.out\n' "$dir"
    printf '# sweep %s, written by experiments/sweep.sh %s; task i runs line i of %s\n' "$NAME" "$stamp" "$1"
    printf 'set -euo pipefail\n'
    printf 'id=$(sed -n "${SLURM_ARRAY_TASK_ID}p" %q)\n' "$1"
    printf 'export SWEEP_THREADS=${SLURM_CPUS_PER_TASK:-%d}\n' "$THREADS"
    printf 'export SWEEP_RUN_ID=%q\n' "$stamp"
    printf 'exec bash %q %q "$id"\n' "$SRC/experiments/sweep_point.sh" "$RESULTS"
}
if [ "$dry" = 1 ]; then
    echo "dry run: would write $dir/array.sbatch and run: sbatch ${sbatch_opts[*]} $dir/array.sbatch"
    write_sbatch "$dir/ids.txt"
    exit 0
fi
mkdir -p "$dir"
cp "$RESULTS/todo.txt" "$dir/ids.txt"
write_sbatch "$dir/ids.txt" > "$dir/array.sbatch"
submit=(sbatch --parsable "${sbatch_opts[@]}")
[ "$wait" = 0 ] || submit+=(--wait)
if [ "$wait" = 0 ]; then
    jobid=$("${submit[@]}" "$dir/array.sbatch") || die "sbatch failed; the script is $dir/array.sbatch"
    echo "sweep $NAME: submitted array job ${jobid%%;*} ($N_TODO tasks, at most $JOBS at once): $dir/array.sbatch"
    echo "  each task re-assembles $RESULTS/sweep.csv when it ends; run the same command again to submit what is missing"
    exit 0
fi
echo "sweep $NAME: submitting $N_TODO tasks (at most $JOBS at once) and waiting: $dir/array.sbatch"
"${submit[@]}" "$dir/array.sbatch" || echo "sweep: sbatch --wait reported a failure (some task failed?)" >&2
report
