#!/usr/bin/env bash
# check_attn_study.sh: the attention study's post-processing chain
# (experiments/attention_study.sh steps 4-5) on dumps h5py writes here:
# `earnest analyze` whole and by --len-range bucket for 3 models x 2 inputs,
# experiments/attention_summary.py, plots/attention_study.sh. Checks: the
# summary's early/late means equal the per-layer values' means; an EARN dump
# (k = 2 of 5, row_mask: layers >= 2 compute only the registers) has no layer
# >= k and no "late" row in summary.csv; an 8-layer Rec-only model ("small")
# gets late = layers 4-7; a bucket with no sample is left out; both figures
# come out, PNG and SVG, non-empty, and gnuplot prints no warning.
set -euo pipefail
BIN=${EARNEST_BIN:?EARNEST_BIN must point to the earnest binary}
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/earnest_check_attn_study_XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_attn_study: FAIL: $*" >&2; exit 1; }
command -v gnuplot >/dev/null || fail "gnuplot not installed"

"$PY" - "$WORK" <<'EOF_PY'
import sys, h5py, numpy as np
work = sys.argv[1]
rng = np.random.default_rng(5)
H = 2
def write(name, lengths, rec, k=0, L=5):
    with h5py.File('%s/%s.h5' % (work, name), 'w') as f:
        f.attrs['format'] = 'earnest-attn'
        f.attrs.update(dict(version=1, n_layers=L, n_heads=H, layer_split_k=k, n_prefix_regs=1 if k else 0,
                            n_suffix_regs=1 if k else 0))
        if k:
            f.attrs['method'] = 'earn'
        for s, T in enumerate(lengths):
            if rec:
                kinds = np.array([0] + ([1] if k else []) + [2] * 10 + [3] * (T - 20 - (2 if k else 0)) + [2] * 9
                                 + ([4] if k else []), np.uint8)
            else:
                kinds = np.array([0] + [2] * (T - 1), np.uint8)
            assert len(kinds) == T
            rows = np.ones((L, T), np.uint8)
            if k:
                rows[k:] = (kinds == 1) | (kinds == 4)
            A = np.zeros((L, H, T, T), np.float32)
            for l in range(L):
                for h in range(H):
                    for q in range(T):
                        if not rows[l, q]:
                            continue
                        seen = np.flatnonzero(rows[l, :q + 1]) if l >= k > 0 else np.arange(q + 1)
                        x = rng.normal(size=len(seen)) * 2
                        x[0] += 3 * (h == 1)
                        p = np.exp(x - x.max()); p /= p.sum()
                        A[l, h, q, seen] = p
            g = f.create_group('samples/%06d' % s)
            g['tokens'], g['positions'], g['kinds'] = np.arange(T, dtype=np.int32), np.arange(T, dtype=np.int32), kinds
            g['attn'] = A
            if k:
                g['row_mask'], g['key_mask'] = rows, rows
for m, k in (('before', 0), ('finetune', 0), ('earn', 2)):
    write(m + '_nlp', [60, 70, 120, 130, 160, 190], rec=False, k=k)
    write(m + '_rec', [55, 80, 110, 140], rec=True, k=k)            # no prompt of 150-200 tokens
write('small_rec', [60, 120], rec=True, L=8)                        # 8 layers, Rec only
EOF_PY

RES=$WORK/res
mkdir -p "$RES"
for m in before finetune earn; do
    for in in nlp rec; do
        "$BIN" analyze "$WORK/${m}_$in.h5" --out "$RES/${m}_$in.csv" > "$RES/${m}_$in.summary.txt" \
            || fail "analyze ${m}_$in"
        for b in 50,100 100,150 150,200; do
            "$BIN" analyze "$WORK/${m}_$in.h5" --len-range "$b" --out "$RES/${m}_${in}_len${b/,/-}.csv" \
                > "$RES/${m}_${in}_len${b/,/-}.summary.txt" || fail "analyze ${m}_$in $b"
        done
    done
done
"$BIN" analyze "$WORK/small_rec.h5" --out "$RES/small_rec.csv" > "$RES/small_rec.summary.txt" || fail "analyze small"
for b in 50,100 100,150 150,200; do
    "$BIN" analyze "$WORK/small_rec.h5" --len-range "$b" --out "$RES/small_rec_len${b/,/-}.csv" \
        > "$RES/small_rec_len${b/,/-}.summary.txt" || fail "analyze small $b"
done
"$PY" "$SRC/experiments/attention_summary.py" "$RES" > "$WORK/summary.out" || fail "attention_summary.py"
"$PY" - "$RES" <<'EOF_PY'
import csv, sys
res = sys.argv[1]
rows = list(csv.DictReader(open(res + '/summary.csv')))
assert rows, 'empty summary'
earn = [r for r in rows if r['model'] == 'earn']
assert earn and all(r['scope'] in ('0', '1', 'early') for r in earn), \
    sorted(set(r['scope'] for r in earn))                       # no layer >= k = 2, no late scope
v = {(r['model'], r['input'], r['bucket'], r['rows'], r['scope'], r['metric']): float(r['value']) for r in rows}
for m, early in (('before', [0, 1, 2]), ('earn', [0, 1])):
    for met in ('density_eps', 'density_rel', 'sink_head', 'sink_tail'):
        x = [v[(m, 'nlp', 'all', 'decision', str(l), met)] for l in early]
        assert abs(v[(m, 'nlp', 'all', 'decision', 'early', met)] - sum(x) / len(x)) < 1e-5, (m, met)
x = [v[('before', 'rec', 'all', 'decision', str(l), 'density_eps')] for l in (3, 4)]
assert abs(v[('before', 'rec', 'all', 'decision', 'late', 'density_eps')] - sum(x) / 2) < 1e-5
assert not any(r['input'] == 'rec' and r['bucket'] == '150-200' for r in rows), 'an empty bucket has rows'
n = {(r['model'], r['input'], r['bucket']): int(r['n_samples']) for r in rows}
assert n[('finetune', 'nlp', '50-100')] == 2 and n[('finetune', 'rec', 'all')] == 4, n
x = [v[('small', 'rec', 'all', 'decision', str(l), 'sink_tail')] for l in (4, 5, 6, 7)]
assert abs(v[('small', 'rec', 'all', 'decision', 'late', 'sink_tail')] - sum(x) / 4) < 1e-5   # 8 layers: late = 4-7
md = open(res + '/summary.md').read()
assert '| after EARN (k=2) | Rec (beauty LC-Rec) | all | 4 |' in md, md
EOF_PY
[ $? -eq 0 ] || fail "summary contents"
bash "$SRC/plots/attention_study.sh" "$RES" > "$WORK/plots.out" 2>&1 || { cat "$WORK/plots.out"; fail "plots/attention_study.sh"; }
for f in attn_study_layers attn_study_buckets; do
    for ext in png svg; do
        [ -s "$RES/figures/$f.$ext" ] || fail "$f.$ext missing or empty"
    done
done
if grep -qi "warning" "$WORK/plots.out"; then cat "$WORK/plots.out"; fail "gnuplot warned"; fi
echo "check_attn_study: OK"
