#!/usr/bin/env bash
# check_figures.sh: plots/figures.sh turns analyze and heatmap CSVs (generated
# here, in the documented formats) into every figure, PNG and SVG, non-empty;
# ignores other CSVs; fails clearly on a malformed CSV or no input, leaving
# the figures already there untouched.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/earnest_check_figures_XXXXXX)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "check_figures: FAIL: $*" >&2; exit 1; }
command -v gnuplot >/dev/null || fail "gnuplot not installed"

"$PY" - "$WORK" <<'EOF_PY'
import sys, math, os
d = sys.argv[1]
kinds = ['special', 'prefix_reg', 'instruction', 'history', 'suffix_reg', 'target']
def analyze_csv(path, L, H, late_sparse):
    with open(path, 'w') as f:
        f.write('layer,head,rows,metric,value\n')
        for layer in list(range(L)) + [-1, -2]:
            for head in list(range(H)) + [-1]:
                for rows in ('decision', 'all'):
                    l = layer if layer >= 0 else (0 if layer == -1 else L - 1)
                    dens = 0.5 - 0.05 * l if late_sparse else 0.2 + 0.05 * l
                    m = dict(density_eps=dens, sink_head=0.3 + 0.05 * l, sink_tail=0.2 + 0.02 * l,
                             entropy=2.0 - 0.1 * l, entropy_norm=0.9 - 0.08 * l, topk_mass=0.6,
                             first_mass=0.25, n_keys=30)
                    w = [0.02, 0.2, 0.2, 0.4, 0.18, 0.0] if l < L // 2 else [0.02, 0.6, 0, 0, 0.38, 0]
                    for k, v in zip(kinds, w):
                        m['mass_' + k] = v
                    for k, v in m.items():
                        f.write('%d,%d,%s,%s,%.6g\n' % (layer, head, rows, k, v))
analyze_csv(os.path.join(d, 'games_finetune_attn.csv'), 6, 2, True)
analyze_csv(os.path.join(d, 'games_earn_attn.csv'), 6, 2, False)
T = 12
kk = [1, 1, 2, 3, 3, 3, 3, 2, 4, 4, 5, 5]
with open(os.path.join(d, 'heat_earn.csv'), 'w') as f:
    f.write('query,key,p,query_kind,key_kind\n')
    for q in range(T):
        for k in range(T):
            p = 1.0 / (q + 1) if k <= q else float('nan')
            f.write('%d,%d,%s,%d,%d\n' % (q, k, 'nan' if math.isnan(p) else '%.6g' % p, kk[q], kk[k]))
with open(os.path.join(d, 'bench.csv'), 'w') as f:
    f.write('method,k,prefix_regs,suffix_regs,prompt_len,batch,beam,device,prefill_ms\nfull,0,0,0,1024,1,20,cpu,12.5\n')
EOF_PY

OUT="$WORK/figs"
bash "$SRC/plots/figures.sh" --out "$OUT" "$WORK"/games_finetune_attn.csv "$WORK"/games_earn_attn.csv \
    "$WORK"/heat_earn.csv "$WORK"/bench.csv || fail "figures.sh failed"
for fig in density_layers sinks_layers kind_mass_games_finetune_attn kind_mass_games_earn_attn \
           earn_compare heatmap_heat_earn; do
    [ -s "$OUT/$fig.png" ] || fail "$fig.png missing or empty"
    [ -s "$OUT/$fig.svg" ] || fail "$fig.svg missing or empty"
    [ "$(head -c 8 "$OUT/$fig.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || fail "$fig.png is not a PNG"
    grep -q "<svg" "$OUT/$fig.svg" || fail "$fig.svg is not SVG"
    size=$(stat -c %s "$OUT/$fig.png")
    [ "$size" -gt 5000 ] || fail "$fig.png is suspiciously small ($size bytes)"
done
[ "$(ls "$OUT" | wc -l)" -eq 12 ] || fail "expected 12 figure files, got: $(ls "$OUT")"
ls -A "$OUT" | grep '^\.figures' > /dev/null && fail "temporary folder left in $OUT"

# the default input is experiments/results/*.csv under the source tree: check via a copy
mkdir -p "$WORK/tree/plots" "$WORK/tree/experiments/results"
cp "$SRC"/plots/*.gp "$SRC"/plots/figures.sh "$WORK/tree/plots/"
cp "$WORK"/games_*.csv "$WORK/tree/experiments/results/"
bash "$WORK/tree/plots/figures.sh" >/dev/null || fail "figures.sh with default inputs failed"
[ -s "$WORK/tree/experiments/results/figures/earn_compare.png" ] || fail "default output folder not used"

# a malformed analyze CSV: clear error naming file and line, figures untouched
before=$(md5sum "$OUT/density_layers.png")
printf 'layer,head,rows,metric,value\n0,-1,decision,density_eps\n' > "$WORK/broken.csv"
set +e
msg=$(bash "$SRC/plots/figures.sh" --out "$OUT" "$WORK/broken.csv" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "a malformed CSV was accepted"
grep -q "broken.csv:2" <<<"$msg" || fail "message does not name broken.csv line 2: $msg"
[ "$(md5sum "$OUT/density_layers.png")" = "$before" ] || fail "a failed run changed existing figures"
ls -A "$OUT" | grep '^\.figures' > /dev/null && fail "temporary folder left after failure"

# no usable CSV at all
set +e
msg=$(bash "$SRC/plots/figures.sh" --out "$OUT" "$WORK/bench.csv" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && grep -q "no analyze or heatmap CSVs" <<<"$msg" || fail "no-input case: rc $rc, '$msg'"
echo "check_figures: OK"
