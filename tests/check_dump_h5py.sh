#!/usr/bin/env bash
# check_dump_h5py.sh: the attention-dump contract from the other side.
# h5py writes a dump following DESIGN.md (an independent writer, EARN-style
# masks, random post-softmax rows), `earnest analyze` reads it, and numpy
# recomputes every metric of the CSV from the definitions; they must agree to
# 1e-5 (density_rel and keys_eps included). Also checks the CLI's errors, --help, the heatmap export and that
# nothing is left half-written.
set -euo pipefail
BIN=${EARNEST_BIN:?EARNEST_BIN must point to the earnest binary}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/earnest_check_dump_XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_dump_h5py: FAIL: $*" >&2; exit 1; }

# ---- an h5py-written dump: 4 layers (k = 2), 3 heads, 3 samples ----------------
"$PY" - "$WORK/a.h5" <<'EOF'
import sys, h5py, numpy as np
rng = np.random.default_rng(7)
L, H, K = 4, 3, 2
with h5py.File(sys.argv[1], 'w') as f:
    f.attrs.update(dict(format='earnest-attn', version=np.int32(1), n_layers=L, n_heads=H,
                        n_kv_heads=1, dim=32, vocab_size=500, method='earn', layer_split_k=K,
                        n_prefix_regs=2, n_suffix_regs=2, dataset='synthetic'))
    g = f.create_group('samples')
    for s, nh in enumerate([5, 9, 7]):               # history lengths
        # kinds: BOS, 2 prefix regs, 3 instruction, history, 2 suffix regs, 4 targets
        kinds = np.array([0, 1, 1, 2, 2, 2] + [3] * nh + [4, 4] + [5] * 4, np.uint8)
        T = len(kinds)
        keep = np.ones((L, T), np.uint8)
        keep[K:, (kinds == 2) | (kinds == 3)] = 0      # EARN: layers >= k drop the prompt body
        A = np.zeros((L, H, T, T), np.float32)
        for l in range(L):
            for h in range(H):
                for q in range(T):
                    if not keep[l, q]:
                        continue
                    vis = np.flatnonzero(keep[l, :q + 1])
                    x = rng.normal(size=len(vis)) * (3.0 if h == 0 else 1.0)
                    if h == 1:
                        x[0] += 4.0                     # a head sink on the first visible key
                    p = np.exp(x - x.max()); p /= p.sum()
                    A[l, h, q, vis] = p
        sg = g.create_group('%06d' % s)
        sg['tokens'] = np.arange(T, dtype=np.int32) + 100 * s
        sg['positions'] = np.arange(T, dtype=np.int32)
        sg['kinds'] = kinds
        sg.create_dataset('attn', data=A, chunks=(1, 1, T, T), compression='gzip', shuffle=True)
        sg['row_mask'] = keep
        sg['key_mask'] = keep
    f.attrs['n_samples'] = 3
EOF

out=$("$BIN" analyze "$WORK/a.h5" --eps 0.05 --head 2 --tail 3 --topk 4 --out "$WORK/m.csv") \
    || fail "analyze failed on an h5py-written dump"
echo "$out"
grep -q "density" <<<"$out" || fail "no density summary on stdout"
grep -q "sinks" <<<"$out" || fail "no sink summary on stdout"
[ "$(head -1 "$WORK/m.csv")" = "layer,head,rows,metric,value" ] || fail "CSV header"
ls "$WORK" | grep tmp > /dev/null && fail "temporary file left behind"

# ---- numpy recomputes every CSV value ------------------------------------------
"$PY" - "$WORK/a.h5" "$WORK/m.csv" <<'EOF'
import sys, csv, math, h5py, numpy as np
eps, hw, tw, topk = 0.05, 2, 3, 4
kinds_names = ['special', 'prefix_reg', 'instruction', 'history', 'suffix_reg', 'target']
def row_metrics(p, kd):
    n = len(p); p64 = p.astype(np.float64)
    nz = p64[p64 > 0]
    ent = float(-(nz * np.log(nz)).sum())
    m = dict(density_eps=float((p > np.float32(eps)).sum()) / n, sink_head=p64[:hw].sum(),
             sink_tail=p64[max(n - tw, 0):].sum(), entropy=ent,
             entropy_norm=ent / math.log(n) if n > 1 else 0.0,
             topk_mass=np.sort(p64)[::-1][:topk].sum(), first_mass=p64[0], n_keys=n,
             density_rel=float((p > np.float32(1.0 / n)).sum()) / n, keys_eps=float((p > np.float32(eps)).sum()))
    for i, name in enumerate(kinds_names):
        m['mass_' + name] = p64[kd == i].sum()
    return m
f = h5py.File(sys.argv[1], 'r')
L, H = int(f.attrs['n_layers']), int(f.attrs['n_heads'])
per = {}   # (l, h, rows, metric) -> list of per-sample values
for name in sorted(f['samples']):
    g = f['samples'][name]
    A, kinds = g['attn'][()], g['kinds'][()]
    rm, km = g['row_mask'][()], g['key_mask'][()]
    T = len(kinds)
    dec = max(t for t in range(T) if kinds[t] != 5)
    for l in range(L):
        for h in range(H):
            rows = []
            for q in range(T):
                if not rm[l, q]:
                    continue
                vis = [j for j in range(q + 1) if km[l, j]]
                m = row_metrics(A[l, h, q, vis], kinds[vis])
                rows.append(m)
                if q == dec:
                    for k, v in m.items(): per.setdefault((l, h, 'decision', k), []).append(v)
            for k in rows[0]:
                per.setdefault((l, h, 'all', k), []).append(np.mean([r[k] for r in rows]))
ref = {key: float(np.mean(v)) for key, v in per.items()}
metrics = sorted({k[3] for k in ref})
for rows in ('decision', 'all'):
    for k in metrics:
        for l in range(L):
            ref[(l, -1, rows, k)] = np.mean([ref[(l, h, rows, k)] for h in range(H)])
        for h in list(range(H)) + [-1]:
            ref[(-1, h, rows, k)] = np.mean([ref[(l, h, rows, k)] for l in range(L) if 2 * l < L])
            ref[(-2, h, rows, k)] = np.mean([ref[(l, h, rows, k)] for l in range(L) if 2 * l >= L])
got = {}
with open(sys.argv[2]) as fh:
    for r in csv.DictReader(fh):
        got[(int(r['layer']), int(r['head']), r['rows'], r['metric'])] = float(r['value'])
missing = set(ref) - set(got); extra = set(got) - set(ref)
assert not missing, sorted(missing)[:5]
assert not extra, sorted(extra)[:5]
worst = max(abs(got[k] - ref[k]) for k in ref)
assert worst < 1e-5, [(k, got[k], ref[k]) for k in ref if abs(got[k] - ref[k]) >= 1e-5][:5]
# the planted sink (head 1) must show in sink_head of the decision row
assert got[(0, 1, 'decision', 'sink_head')] > got[(0, 2, 'decision', 'sink_head')]
print('numpy agrees on %d values (max abs diff %.2e)' % (len(ref), worst))
EOF

# ---- heatmap export -------------------------------------------------------------
"$BIN" analyze "$WORK/a.h5" --heatmap 3,1,2 --out "$WORK/heat.csv" >/dev/null || fail "heatmap export"
"$PY" - "$WORK/a.h5" "$WORK/heat.csv" <<'EOF'
import sys, csv, math, h5py, numpy as np
g = h5py.File(sys.argv[1], 'r')['samples']['000002']
A, kinds, rm, km = g['attn'][3, 1], g['kinds'][()], g['row_mask'][3], g['key_mask'][3]
rows = list(csv.DictReader(open(sys.argv[2])))
T = len(kinds)
assert len(rows) == T * T, len(rows)
for r in rows:
    q, k, p = int(r['query']), int(r['key']), float(r['p'])
    assert int(r['query_kind']) == kinds[q] and int(r['key_kind']) == kinds[k]
    if rm[q] and km[k] and k <= q:
        assert abs(p - A[q, k]) < 1e-6, (q, k, p, A[q, k])
    else:
        assert math.isnan(p), (q, k, p)
print('heatmap ok')
EOF

# ---- errors: clear message naming the file, nonzero exit, nothing written -------
expect() { # expect CODE PATTERN -- command...
    local code=$1 pat=$2; shift 3
    set +e; msg=$("$@" 2>&1); rc=$?; set -e
    [ "$rc" -eq "$code" ] || fail "'$*' exited $rc, expected $code: $msg"
    grep -q -- "$pat" <<<"$msg" || fail "'$*' message lacks '$pat': $msg"
}
"$BIN" analyze --help | grep "layer,head,rows,metric,value" > /dev/null || fail "--help"
expect 2 "--out" -- "$BIN" analyze "$WORK/a.h5"
expect 2 "--topk" -- "$BIN" analyze "$WORK/a.h5" --topk 0 --out "$WORK/x.csv"
expect 2 "--eps" -- "$BIN" analyze "$WORK/a.h5" --eps abc --out "$WORK/x.csv"
expect 2 "unknown option" -- "$BIN" analyze "$WORK/a.h5" --frobnicate 1 --out "$WORK/x.csv"
expect 2 "LAYER,HEAD,SAMPLE" -- "$BIN" analyze "$WORK/a.h5" --heatmap 1,2 --out "$WORK/x.csv"
expect 1 "out of range" -- "$BIN" analyze "$WORK/a.h5" --heatmap 4,0,0 --out "$WORK/x.csv"
expect 1 "$WORK/missing.h5: cannot open" -- "$BIN" analyze "$WORK/missing.h5" --out "$WORK/x.csv"
echo "not hdf5" > "$WORK/text.h5"
expect 1 "$WORK/text.h5: not an HDF5 file" -- "$BIN" analyze "$WORK/text.h5" --out "$WORK/x.csv"
"$PY" -c "import h5py,sys; h5py.File(sys.argv[1],'w')['logits']=[1.0]" "$WORK/fwd.h5"
expect 1 "not an earnest attention dump" -- "$BIN" analyze "$WORK/fwd.h5" --out "$WORK/x.csv"
"$PY" -c "
import h5py, sys, shutil
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], 'r+') as f: f.attrs['n_heads'] = 2
" "$WORK/a.h5" "$WORK/shape.h5"
expect 1 "/samples/000000/attn: shape \[4,3,17,17\] disagrees" -- "$BIN" analyze "$WORK/shape.h5" --out "$WORK/x.csv"
[ -e "$WORK/x.csv" ] && fail "a failed run left $WORK/x.csv"
ls "$WORK" | grep tmp > /dev/null && fail "temporary file left behind"
echo "check_dump_h5py: OK"
