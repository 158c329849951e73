#!/usr/bin/env bash
# check_attn_lennorm.sh: the length-normalised attention metrics and the
# prompt-length buckets of `earnest analyze` (analysis/attn_metrics.h) equal a
# numpy reference on a known dump.
# h5py writes a minimal dump (2 layers, 2 heads) of 9 samples whose prompts are
# 38-193 tokens long (BOS, a prefix register, instruction, history, a suffix
# register, then 4 target tokens that are not part of the prompt), with rows of
# mixed concentration (a planted head sink in head 1, spread rows in head 0).
# numpy computes, straight from the causal rows:
#   density_rel = share of keys with p > c/n (c = --eps-rel, 1 and 0.5),
#   keys_eps    = number of keys with p > eps (= density_eps * n),
#   density_eps, sink_head, sink_tail, n_keys (checked alongside),
# for the decision row and the mean over all rows, per head, the head mean and
# the early/late layer means, over all samples and over each --len-range
# bucket (prompt length = tokens up to the last non-target token); every value
# must agree to 1e-6. A bucket that holds no sample gives a header-only CSV; a
# bad --len-range or --eps-rel is refused (exit 2).
set -euo pipefail
BIN=${EARNEST_BIN:?EARNEST_BIN must point to the earnest binary}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/earnest_check_attn_lennorm_XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_attn_lennorm: FAIL: $*" >&2; exit 1; }

"$PY" - "$WORK" <<'EOF_PY'
import sys, h5py, numpy as np
work = sys.argv[1]
rng = np.random.default_rng(16)
L, H = 2, 2
with h5py.File(work + '/d.h5', 'w') as f:
    f.attrs['format'] = 'earnest-attn'
    f.attrs.update(dict(version=1, n_layers=L, n_heads=H, layer_split_k=0, n_prefix_regs=1, n_suffix_regs=1))
    for s, nh in enumerate([2, 8, 12, 17, 20, 25, 28, 31, 33]):     # prompts of 38 .. 193 tokens (28 + 5 nh)
        kinds = np.array([0, 1] + [2] * 20 + [3] * (5 * nh - 1) + [2] * 6 + [4] + [5] * 4, np.uint8)
        T = len(kinds)
        A = np.zeros((L, H, T, T), np.float32)
        for l in range(L):
            for h in range(H):
                for q in range(T):
                    x = rng.normal(size=q + 1) * (1.0 + l + 2.0 * rng.random())
                    if h == 1:
                        x[0] += 4.0                                  # a head sink
                    p = np.exp(x - x.max()); p /= p.sum()
                    A[l, h, q, :q + 1] = p
        g = f.create_group('samples/%06d' % s)
        g['tokens'], g['positions'], g['kinds'] = np.arange(T, dtype=np.int32), np.arange(T, dtype=np.int32), kinds
        g.create_dataset('attn', data=A, chunks=(1, 1, T, T), compression='gzip', shuffle=True)
EOF_PY

run() { # run OUT.csv [analyze options]
    local out=$1; shift
    "$BIN" analyze "$WORK/d.h5" "$@" --out "$WORK/$out" > "$WORK/$out.txt" 2>&1 \
        || fail "analyze $* exited $?: $(cat "$WORK/$out.txt")"
}
run all.csv
run rel05.csv --eps-rel 0.5
run b1.csv --len-range 50,100
run b2.csv --len-range 100,150
run b3.csv --len-range 150,200
run none.csv --len-range 200,300
grep -q "2 with a prompt of 50..99 tokens" "$WORK/b1.csv.txt" || fail "bucket count: $(cat "$WORK/b1.csv.txt")"
grep -q "density_rel (p > 1/n, decision rows)" "$WORK/all.csv.txt" || fail "summary lacks density_rel"
[ "$(cat "$WORK/none.csv")" = "layer,head,rows,metric,value" ] || fail "an empty bucket: not a header-only CSV"
grep -q "the CSV holds the header only" "$WORK/none.csv.txt" || fail "an empty bucket is not reported"
for bad in "--len-range 100,50" "--len-range 5" "--eps-rel 0" "--eps-rel -1"; do
    set +e; "$BIN" analyze "$WORK/d.h5" $bad --out "$WORK/bad.csv" >/dev/null 2>&1; rc=$?; set -e
    [ $rc -eq 2 ] || fail "analyze $bad: exit $rc, expected 2"
    [ ! -e "$WORK/bad.csv" ] || fail "analyze $bad wrote a CSV"
done

"$PY" - "$WORK" <<'EOF_PY'
import sys, csv, h5py, numpy as np
work = sys.argv[1]
TOL = 1e-6
eps, hw, tw = 0.05, 3, 3
def metrics(p, c):                                    # p: float32 probabilities of keys 0..q
    n = len(p); p64 = p.astype(np.float64)
    return {'density_rel': np.count_nonzero(p > np.float32(c / n)) / n,
            'keys_eps': float(np.count_nonzero(p > np.float32(eps))),
            'density_eps': np.count_nonzero(p > np.float32(eps)) / n,
            'sink_head': p64[:hw].sum(), 'sink_tail': p64[-tw:].sum(), 'n_keys': float(n)}
f = h5py.File(work + '/d.h5', 'r')
L, H = int(f.attrs['n_layers']), int(f.attrs['n_heads'])
samples = []
for name in sorted(f['samples']):
    g = f['samples'][name]
    samples.append((g['attn'][()], g['kinds'][()]))
def reference(lo, hi, c):
    ref = {}
    for A, kinds in samples:
        dec = np.flatnonzero(kinds != 5)[-1]
        if not (lo <= dec + 1 < hi):
            continue
        T = len(kinds)
        for l in range(L):
            for h in range(H):
                rows = [metrics(A[l, h, q, :q + 1], c) for q in range(T)]
                for m in rows[0]:
                    ref.setdefault((l, h, 'decision', m), []).append(rows[dec][m])
                    ref.setdefault((l, h, 'all', m), []).append(np.mean([r[m] for r in rows]))
    ref = {k: float(np.mean(v)) for k, v in ref.items()}
    for (l, h, rows, m) in list(ref):
        if h == 0:
            ref[(l, -1, rows, m)] = float(np.mean([ref[(l, x, rows, m)] for x in range(H)]))
    for (l, h, rows, m) in list(ref):
        if l == 0:                                    # early: 2l < L, late: 2l >= L
            for scope, ls in ((-1, [x for x in range(L) if 2 * x < L]), (-2, [x for x in range(L) if 2 * x >= L])):
                ref[(scope, h, rows, m)] = float(np.mean([ref[(x, h, rows, m)] for x in ls]))
    return ref
checked = 0
worst = 0.0
for out, lo, hi, c in (('all', 0, 10**9, 1.0), ('rel05', 0, 10**9, 0.5), ('b1', 50, 100, 1.0),
                       ('b2', 100, 150, 1.0), ('b3', 150, 200, 1.0)):
    ref = reference(lo, hi, c)
    assert ref, out
    got = {(int(r['layer']), int(r['head']), r['rows'], r['metric']): float(r['value'])
           for r in csv.DictReader(open('%s/%s.csv' % (work, out)))}
    missing = [k for k in ref if k not in got]
    assert not missing, (out, missing[:5])
    bad = [(k, got[k], ref[k]) for k in ref if abs(got[k] - ref[k]) > TOL]
    assert not bad, (out, bad[:5])
    worst = max(worst, max(abs(got[k] - ref[k]) for k in ref))
    checked += len(ref)
    # the metric is not degenerate: the planted sink lowers density_rel, and it is strictly between 0 and 1
    assert 0 < got[(-1, -1, 'decision', 'density_rel')] < 1, out
    assert got[(0, 1, 'all', 'density_rel')] < got[(0, 0, 'all', 'density_rel')], out
print('numpy agrees on %d values (density_rel at c = 1 and 0.5, keys_eps, density_eps, sinks, n_keys; '
      'all samples and 3 length buckets; max abs diff %.2e, tolerance %g)' % (checked, worst, TOL))
EOF_PY
echo "check_attn_lennorm: OK"
