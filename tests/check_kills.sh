#!/usr/bin/env bash
# check_kills.sh: kill -9 every verb that writes something at 5 moments of its
# run (10%, 30%, 50%, 70%, 90% of its measured duration) and check that
#  - its output path holds the previous complete output or the new complete
#    one (never a partial file; an eval's JSON and rankings always agree);
#  - a prepared dataset directory always exists under its name;
#  - the next complete run of the same command leaves no "*.tmp.*" beside the
#    output (it removes the dead process's temporaries) and no lock behind.
# Each verb first runs once to completion, so there is a previous output.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY=/usr/bin/python3
SHARED=${EARNEST_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" prepare synthetic --out base --users 150 --items 120 --codes 8 --levels 3 > /dev/null
"$B" train --data base --preset tiny --epochs 1 --eval-users 20 --beam 5 --threads 1 --quiet --out model > /dev/null

# valid_<kind> PATH: is PATH a complete output of that kind?
valid_dataset() { "$B" data stats "$1" > /dev/null 2>&1; }
valid_model() { "$B" forward --model "$1" --tokens "1 2 3" --out "$W/probe.h5" > /dev/null 2>&1; }
valid_h5() { "$B" analyze "$1" --out "$W/probe.csv" > /dev/null 2>&1; }
valid_forward() { $PY -c 'import h5py,sys; f=h5py.File(sys.argv[1]); assert f["logits"].shape[0] == 3' "$1" 2>/dev/null; }
valid_csv() { # PATH HEADER_START
    $PY - "$1" "$2" <<'EOF' 2>/dev/null
import sys
rows = open(sys.argv[1]).read().split("\n")
assert rows[0].startswith(sys.argv[2]) and rows[-1] == "" and len(rows) > 2
n = rows[0].count(",")
assert all(r.count(",") == n for r in rows[1:-1])
EOF
}
valid_eval() { # JSON RANKINGS: both complete and from the same run
    $PY - "$1" "$2" <<'EOF' 2>/dev/null
import hashlib, json, sys
j = json.load(open(sys.argv[1]))
assert j["rankings"]["sha256"] == hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()
EOF
}

# kill_test NAME OUTPUT CHECK -- CMD...: the cycle described above.
kill_test() {
    local name=$1 out=$2 check=$3; shift 4
    local t0 t1 dur
    t0=$(date +%s%N)
    "$@" > /dev/null 2>&1 || fail "$name: the first run failed: $*"
    t1=$(date +%s%N)
    dur=$(( (t1 - t0) / 1000000 ))   # ms
    eval "$check" || fail "$name: the first run's output is not valid"
    for pct in 10 30 50 70 90; do
        "$@" > /dev/null 2>&1 & local p=$!
        sleep "$($PY -c "print($dur * $pct / 100000)")"
        kill -9 $p 2>/dev/null || true
        wait $p 2>/dev/null || true
        eval "$check" || fail "$name: after kill -9 at $pct% of ${dur} ms, $out is not a complete output"
    done
    "$@" > /dev/null 2>&1 || fail "$name: the run after the kills failed"
    eval "$check" || fail "$name: the final output is not valid"
    local dir
    dir=$(dirname "$out")
    if ls -a "$dir" | grep "^$(basename "$out")\.\(tmp\.\|lock\)" > /dev/null; then
        fail "$name: temporaries or locks survived the next run: $(ls -a "$dir" | grep "$(basename "$out")\.")"
    fi
    echo "$name: 5 kills (run ${dur} ms): output always complete; nothing left behind"
}

kill_test prepare syn "valid_dataset syn" -- "$B" prepare synthetic --out syn --users 20000 --items 2000 --codes 32 --levels 3
kill_test train tr "valid_model tr" -- "$B" train --data base --preset tiny --epochs 1 --eval-users 20 --beam 5 \
    --threads 1 --quiet --out tr --force
kill_test eval e.json "valid_eval e.json e.tsv" -- "$B" eval --model model --data base --limit-users 100 --out e.json --rankings e.tsv
kill_test dump-attn a.h5 "valid_h5 a.h5" -- "$B" dump-attn --model model --data base --samples 16 --out a.h5
kill_test analyze m.csv "valid_csv m.csv layer,head,rows,metric,value" -- "$B" analyze a.h5 --out m.csv
kill_test forward f.h5 "valid_forward f.h5" -- "$B" forward --model model --tokens "1 2 3" --attn --out f.h5
kill_test bench b.csv "valid_csv b.csv method," -- "$B" bench --preset tiny --prompt-len 64,128 --batch 2 --beam 1,4 \
    --reps 2 --threads 1 --out b.csv
kill_test init im "valid_model im" -- "$B" init --preset small --vocab-size 4096 --out im
if [ -f "$SHARED/models/stories260K/stories260K.bin" ]; then
    kill_test convert cv "valid_model cv" -- "$B" convert --llama2c "$SHARED/models/stories260K/stories260K.bin" \
        --tokenizer "$SHARED/models/stories260K/tok512.bin" --out cv
fi
echo "check_kills: every verb, killed at 5 moments, left a complete output"
