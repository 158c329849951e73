#!/usr/bin/env bash
# check_attn_minimal.sh: a dump with only the minimal schema (DESIGN.md "Files
# the tools write", analysis/attn_dump.h) analyses. h5py writes what a
# PyTorch-side tool would: the seven required root attributes (no n_kv_heads,
# dim, vocab_size, method, n_samples) and per sample tokens, positions, kinds
# and attn, without row_mask / key_mask. `earnest analyze` must read it with
# the documented defaults (every causal row and key present), and numpy,
# computing density_eps, sink_head, sink_tail and entropy straight from the
# causal rows of the attention arrays, must agree to 1e-5 (absolute).
# The format attribute is tried as a variable-length UTF-8 string (h5py's
# default), a variable-length ASCII string and a fixed-length byte string.
set -euo pipefail
BIN=${EARNEST_BIN:?EARNEST_BIN must point to the earnest binary}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/earnest_check_attn_minimal_XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_attn_minimal: FAIL: $*" >&2; exit 1; }

# ---- h5py writes minimal dumps: 3 layers, 2 heads, 3 samples --------------------
"$PY" - "$WORK" <<'EOF_PY'
import sys, h5py, numpy as np
work = sys.argv[1]
rng = np.random.default_rng(11)
L, H = 3, 2
samples = []
for s, nh in enumerate([4, 8, 6]):                    # history lengths
    # kinds: BOS, prefix reg, 2 instruction, history, suffix reg, 4 targets
    kinds = np.array([0, 1, 2, 2] + [3] * nh + [4] + [5] * 4, np.uint8)
    T = len(kinds)
    A = np.zeros((L, H, T, T), np.float32)            # entries above the diagonal stay 0
    for l in range(L):
        for h in range(H):
            for q in range(T):
                x = rng.normal(size=q + 1) * (2.5 if h == 0 else 1.0)
                if h == 1:
                    x[0] += 3.0                       # a sink on the first key
                p = np.exp(x - x.max()); p /= p.sum()
                A[l, h, q, :q + 1] = p
    samples.append((np.arange(T, dtype=np.int32) + 50 * s, np.arange(T, dtype=np.int32), kinds, A))

def write(path, fmt):
    with h5py.File(path, 'w') as f:
        if fmt == 'vlen-utf8':
            f.attrs['format'] = 'earnest-attn'        # h5py: variable-length UTF-8
        elif fmt == 'vlen-ascii':
            f.attrs.create('format', 'earnest-attn', dtype=h5py.string_dtype('ascii'))
        else:
            f.attrs['format'] = np.bytes_('earnest-attn')   # fixed-length
        # Python ints: h5py stores int64; the reader takes any integer type.
        f.attrs.update(dict(version=1, n_layers=L, n_heads=H, layer_split_k=0,
                            n_prefix_regs=1, n_suffix_regs=1))
        g = f.create_group('samples')
        for s, (tok, pos, kinds, A) in enumerate(samples):
            sg = g.create_group('%06d' % s)
            sg['tokens'], sg['positions'], sg['kinds'] = tok, pos, kinds
            if s == 0:
                sg['attn'] = A                        # contiguous
            else:
                sg.create_dataset('attn', data=A, chunks=(1, 1, A.shape[2], A.shape[3]),
                                  compression='gzip', shuffle=True)
for fmt in ('vlen-utf8', 'vlen-ascii', 'fixed'):
    write('%s/%s.h5' % (work, fmt), fmt)
with h5py.File(work + '/vlen-utf8.h5', 'r') as f:
    assert sorted(f.attrs) == ['format', 'layer_split_k', 'n_heads', 'n_layers', 'n_prefix_regs',
                               'n_suffix_regs', 'version'], sorted(f.attrs)
    assert sorted(f['samples/000000']) == ['attn', 'kinds', 'positions', 'tokens']
EOF_PY

out=$("$BIN" analyze "$WORK/vlen-utf8.h5" --out "$WORK/m.csv" 2>&1) \
    || fail "analyze refused a minimal dump: $out"
echo "$out"
grep -q "3 samples, 3 layers x 2 heads, method unknown" <<<"$out" || fail "summary line: $out"
[ "$(head -1 "$WORK/m.csv")" = "layer,head,rows,metric,value" ] || fail "CSV header"
for fmt in vlen-ascii fixed; do
    "$BIN" analyze "$WORK/$fmt.h5" --out "$WORK/m_$fmt.csv" >/dev/null 2>"$WORK/err.txt" \
        || fail "analyze refused the $fmt format attribute: $(cat "$WORK/err.txt")"
    cmp -s "$WORK/m.csv" "$WORK/m_$fmt.csv" || fail "$fmt format attribute: other metrics"
done

# ---- numpy: the four metrics from the causal rows --------------------------------
"$PY" - "$WORK/vlen-utf8.h5" "$WORK/m.csv" <<'EOF_PY'
import sys, csv, h5py, numpy as np
TOL = 1e-5
eps, head_w, tail_w = 0.05, 3, 3                  # earnest analyze's defaults
def metrics(p):                                   # p: float32 probabilities of keys 0..q
    p64 = p.astype(np.float64)
    nz = p64[p64 > 0]
    return {'density_eps': np.count_nonzero(p > np.float32(eps)) / len(p),
            'sink_head': p64[:head_w].sum(), 'sink_tail': p64[-tail_w:].sum(),
            'entropy': -(nz * np.log(nz)).sum(), 'n_keys': float(len(p))}
f = h5py.File(sys.argv[1], 'r')
L, H = int(f.attrs['n_layers']), int(f.attrs['n_heads'])
ref = {}                                          # (layer, head, rows, metric) -> per-sample values
for name in sorted(f['samples']):
    A, kinds = f['samples'][name]['attn'][()], f['samples'][name]['kinds'][()]
    T = len(kinds)
    dec = np.flatnonzero(kinds != 5)[-1]          # the last non-target token
    for l in range(L):
        for h in range(H):
            rows = [metrics(A[l, h, q, :q + 1]) for q in range(T)]
            for m in rows[0]:
                ref.setdefault((l, h, 'decision', m), []).append(rows[dec][m])
                ref.setdefault((l, h, 'all', m), []).append(np.mean([r[m] for r in rows]))
ref = {k: float(np.mean(v)) for k, v in ref.items()}
for (l, h, rows, m) in list(ref):
    if h == 0:
        ref[(l, -1, rows, m)] = float(np.mean([ref[(l, x, rows, m)] for x in range(H)]))
got = {}
for r in csv.DictReader(open(sys.argv[2])):
    got[(int(r['layer']), int(r['head']), r['rows'], r['metric'])] = float(r['value'])
missing = [k for k in ref if k not in got]
assert not missing, missing[:5]
bad = [(k, got[k], ref[k]) for k in ref if abs(got[k] - ref[k]) > TOL]
assert not bad, bad[:5]
# The data are not degenerate: the planted sink shows, and rows are spread.
assert got[(0, 1, 'decision', 'sink_head')] > got[(0, 0, 'decision', 'sink_head')]
assert 0 < got[(0, -1, 'all', 'density_eps')] < 1 and got[(0, -1, 'all', 'entropy')] > 0.5
print('numpy agrees on %d values (density_eps, sink_head, sink_tail, entropy, n_keys; '
      'max abs diff %.2e, tolerance %g)' % (len(ref), max(abs(got[k] - ref[k]) for k in ref), TOL))
EOF_PY

# ---- the heatmap export with the default masks: everything causal is present ----
"$BIN" analyze "$WORK/fixed.h5" --heatmap 2,1,1 --out "$WORK/heat.csv" >/dev/null || fail "heatmap export"
"$PY" - "$WORK/fixed.h5" "$WORK/heat.csv" <<'EOF_PY'
import sys, csv, math, h5py
A = h5py.File(sys.argv[1], 'r')['samples/000001/attn'][2, 1]
n = 0
for r in csv.DictReader(open(sys.argv[2])):
    q, k, p = int(r['query']), int(r['key']), float(r['p'])
    assert (abs(p - A[q, k]) < 1e-6) if k <= q else math.isnan(p), (q, k, p)
    n += 1
assert n == A.shape[0] ** 2
print('heatmap ok')
EOF_PY

# ---- still refused: a missing required attribute, a bad optional one, absurd sizes -
expect_error() { # expect_error FILE PATTERN
    set +e; msg=$("$BIN" analyze "$1" --out "$WORK/x.csv" 2>&1); rc=$?; set -e
    [ "$rc" -eq 1 ] || fail "analyze $1 exited $rc, expected 1: $msg"
    grep -q -- "$2" <<<"$msg" || fail "analyze $1: message lacks '$2': $msg"
}
"$PY" - "$WORK" <<'EOF_PY'
import sys, shutil, h5py
w = sys.argv[1]
shutil.copy(w + '/fixed.h5', w + '/no_regs.h5')
with h5py.File(w + '/no_regs.h5', 'r+') as f: del f.attrs['n_suffix_regs']
shutil.copy(w + '/fixed.h5', w + '/bad_kv.h5')
with h5py.File(w + '/bad_kv.h5', 'r+') as f: f.attrs['n_kv_heads'] = 0
shutil.copy(w + '/fixed.h5', w + '/bad_mask.h5')
with h5py.File(w + '/bad_mask.h5', 'r+') as f: f['samples/000000/row_mask'] = [[1, 1]]
shutil.copy(w + '/fixed.h5', w + '/huge.h5')   # sized the metrics table: 10^12 cells, a fatal calloc
with h5py.File(w + '/huge.h5', 'r+') as f: f.attrs['n_layers'] = f.attrs['n_heads'] = 1000000
shutil.copy(w + '/fixed.h5', w + '/many.h5')   # each within its bound, the pairs not
with h5py.File(w + '/many.h5', 'r+') as f: f.attrs['n_layers'] = f.attrs['n_heads'] = 1000
EOF_PY
expect_error "$WORK/no_regs.h5" "missing attribute 'n_suffix_regs'"
expect_error "$WORK/bad_kv.h5" "attribute 'n_kv_heads' = 0 must be >= 1"
expect_error "$WORK/bad_mask.h5" "/samples/000000/row_mask: shape \[1,2\] disagrees"
expect_error "$WORK/huge.h5" "n_layers = 1000000 must be in 1..1024"
expect_error "$WORK/many.h5" "n_layers x n_heads = 1000 x 1000 exceeds 65536"
[ -e "$WORK/x.csv" ] && fail "a failed run left $WORK/x.csv"
ls "$WORK" | grep tmp > /dev/null && fail "temporary file left behind"
echo "check_attn_minimal: OK"
