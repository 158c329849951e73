#!/usr/bin/env bash
# check_cuda_eval.sh (GPU): `earnest eval --device cuda` ranks like the CPU
# runtime on 100 users of the synthetic dataset, for a trained tiny finetune
# model and a trained tiny EARN model: the rankings TSVs are equal up to ties
# (tests/reference/compare_rankings.py; score tolerance 1e-3 in f32, 0.1 in
# bf16), and the JSON records device cuda and the dtype. Skips (77) without
# a GPU. EARNEST_PYTHON names the python with h5py/numpy (default /usr/bin/python3).
set -euo pipefail
B="${EARNEST_BIN:?}"
PY="${EARNEST_PYTHON:-/usr/bin/python3}"
SRC="${EARNEST_SOURCE_DIR:?}"
if ! nvidia-smi -L >/dev/null 2>&1; then echo "GPU check skipped: no GPU (nvidia-smi -L failed)"; exit 77; fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" prepare synthetic --out syn --users 300 --items 200 > /dev/null
"$B" train --data syn --preset tiny --method finetune --out m_full --epochs 1 --eval-users 50 > full.log 2>&1 \
    || { cat full.log; fail "train finetune"; }
"$B" train --data syn --preset tiny --method earn --k 1 --out m_earn --epochs 1 --eval-users 50 > earn.log 2>&1 \
    || { cat earn.log; fail "train earn"; }
for m in full earn; do
    "$B" eval --model m_$m --data syn --limit-users 100 --out cpu_$m.json --rankings cpu_$m.tsv > /dev/null 2>&1 \
        || fail "eval cpu $m"
    for dt in f32 bf16; do
        "$B" eval --model m_$m --data syn --limit-users 100 --device cuda --dtype $dt --out cuda_${m}_$dt.json \
            --rankings cuda_${m}_$dt.tsv > cuda_${m}_$dt.log 2>&1 || { cat cuda_${m}_$dt.log; fail "eval cuda $m $dt"; }
        tol=$([ $dt = f32 ] && echo 1e-3 || echo 0.1)
        echo -n "$m $dt: "
        "$PY" "$SRC/tests/reference/compare_rankings.py" cpu_$m.tsv cuda_${m}_$dt.tsv $tol || fail "$m $dt rankings differ"
        "$PY" -c "
import json, sys
j = json.load(open('cuda_${m}_$dt.json'))['efficiency']
assert j['device'] == 'cuda' and j['dtype'] == '$dt', j
" || fail "$m $dt: JSON device/dtype"
    done
done
"$B" eval --model m_full --data syn --device cpu --dtype bf16 --out x.json > x.log 2>&1 && fail "cpu bf16 accepted"
grep -q "f32 only" x.log || fail "cpu bf16: unclear message: $(cat x.log)"
[ ! -e x.json ] || fail "cpu bf16 wrote x.json"
echo "check_cuda_eval: OK"
