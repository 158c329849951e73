#!/usr/bin/env bash
# check_analyze_rows.sh: `earnest analyze` reads post-softmax attention and
# refuses rows that are not probability distributions (analysis/attn_metrics.h,
# attn_head_check). h5py writes minimal dumps (analysis/attn_dump.h) whose
# attention has one bad computed row: a NaN entry, a negative entry (a sink of
# -2.5, the rest making the sum 1), or pre-softmax scores that do not sum to 1.
# Each must exit 1 with a message naming the sample, layer, head and row, and
# leave no CSV (nor temporary file) behind; --heatmap refuses it too. An EARN
# dump with row_mask and key_mask, whose skipped rows, dropped keys and future
# keys hold garbage (NaN, negative, 7), must analyse: only the rows the layer
# computed, over the keys it kept, are checked. The sum tolerance is 1e-3
# absolute by default and --sum-tol changes it.
set -euo pipefail
BIN=${EARNEST_BIN:?EARNEST_BIN must point to the earnest binary}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/earnest_check_analyze_rows_XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_analyze_rows: FAIL: $*" >&2; exit 1; }

"$PY" - "$WORK" <<'EOF_PY'
import sys, h5py, numpy as np
work = sys.argv[1]
L, H = 2, 2
kinds = np.array([0, 1, 3, 3, 3, 4, 5, 5], np.uint8)
T = len(kinds)

def causal():                                   # a valid softmax attention [L, H, T, T]
    rng = np.random.default_rng(3)
    A = np.zeros((L, H, T, T), np.float32)
    for l in range(L):
        for h in range(H):
            for q in range(T):
                x = rng.normal(size=q + 1)
                A[l, h, q, :q + 1] = np.exp(x) / np.exp(x).sum()
    return A

def write(name, samples, masks=None, k=0):
    with h5py.File('%s/%s.h5' % (work, name), 'w') as f:
        f.attrs['format'] = 'earnest-attn'
        f.attrs.update(dict(version=1, n_layers=L, n_heads=H, layer_split_k=k, n_prefix_regs=1, n_suffix_regs=1))
        for s, A in enumerate(samples):
            g = f.create_group('samples/%06d' % s)
            g['tokens'], g['positions'], g['kinds'] = np.arange(T, dtype=np.int32), np.arange(T, dtype=np.int32), kinds
            g['attn'] = A
            if masks:
                g['row_mask'], g['key_mask'] = masks

good = causal()
write('good', [good, good])
bad = causal(); bad[0, 1, 2, :3] = np.nan                      # sample 1, layer 0, head 1, row 2
write('nan', [good, bad])
bad = causal(); bad[1, 0, 4, :5] = [-2.5, 1.0, 1.0, 1.0, 0.5]   # a sink of -2.5; the row sums to 1
write('negative', [bad])
bad = causal(); bad[1, 1, 6, :7] = np.arange(7, dtype=np.float32) / 10   # scores, not probabilities
write('unnormalised', [good, good, bad])
bad = causal(); bad[0, 0, 3, :4] *= np.float32(1.004)           # off by 4e-3: refused unless --sum-tol
write('loose', [bad])

# EARN, k = 1: layer 1 computes rows 1 and 5..7 (registers, targets) over keys 1, 5..7.
row_mask = np.ones((L, T), np.uint8); row_mask[1] = [0, 1, 0, 0, 0, 1, 1, 1]
key_mask = np.ones((L, T), np.uint8); key_mask[1] = row_mask[1]
A = causal()
for h in range(H):
    for q in range(T):
        A[1, h, q, :] = 7.0                                      # garbage where nothing is read
        if row_mask[1, q]:
            seen = [j for j in range(q + 1) if key_mask[1, j]]
            A[1, h, q, :q + 1] = np.where(key_mask[1, :q + 1] == 1, 0, np.nan)
            A[1, h, q, seen] = 1.0 / len(seen)
            A[1, h, q, q + 1:] = -1.0
write('earn', [A], masks=(row_mask, key_mask), k=1)
EOF_PY

out=$("$BIN" analyze "$WORK/good.h5" --out "$WORK/good.csv" 2>&1) || fail "a valid minimal dump was refused: $out"
out=$("$BIN" analyze "$WORK/earn.h5" --out "$WORK/earn.csv" 2>&1) \
    || fail "an EARN dump with garbage outside the computed rows and kept keys was refused: $out"
"$PY" - "$WORK/earn.csv" <<'EOF_PY'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert rows and all(math.isfinite(float(r['value'])) for r in rows), 'non-finite metric'
n = {r['metric']: float(r['value']) for r in rows if r['layer'] == '1' and r['head'] == '0' and r['rows'] == 'all'}
assert abs(n['n_keys'] - (1 + 2 + 3 + 4) / 4) < 1e-6, n['n_keys']   # rows 1, 5, 6, 7 see 1, 2, 3, 4 kept keys
print('EARN dump with masks: %d finite values' % len(rows))
EOF_PY

expect_refused() { # expect_refused NAME PATTERN [FLAGS...]
    local name=$1 pat=$2
    shift 2
    set +e; msg=$("$BIN" analyze "$WORK/$name.h5" "$@" --out "$WORK/$name.csv" 2>&1); rc=$?; set -e
    [ "$rc" -eq 1 ] || fail "analyze $name.h5 $* exited $rc, expected 1: $msg"
    grep -qF -- "$pat" <<<"$msg" || fail "analyze $name.h5: message lacks '$pat': $msg"
    grep -q "not a probability distribution" <<<"$msg" || fail "analyze $name.h5: message: $msg"
    [ ! -e "$WORK/$name.csv" ] || fail "analyze $name.h5 wrote $name.csv"
    echo "refused $name.h5: $msg"
}
expect_refused nan "sample 1, layer 0, head 1, row 2"
expect_refused nan "entry at key 0 is nan"
expect_refused negative "sample 0, layer 1, head 0, row 4"
expect_refused negative "entry at key 0 is -2.5, negative"
expect_refused unnormalised "sample 2, layer 1, head 1, row 6"
expect_refused unnormalised "its 7 visible entries sum to 2.1"
expect_refused loose "sample 0, layer 0, head 0, row 3"
expect_refused loose "tolerance 0.001"
expect_refused nan "sample 1, layer 0, head 1, row 2" --heatmap 0,1,1
"$BIN" analyze "$WORK/loose.h5" --sum-tol 0.01 --out "$WORK/loose.csv" >/dev/null \
    || fail "--sum-tol 0.01 did not accept a row off by 4e-3"
ls "$WORK" | grep tmp > /dev/null && fail "temporary file left behind"
echo "check_analyze_rows: OK"
