#!/usr/bin/env bash
# plots/sweep.sh: the sweep figures (gnuplot) from sweep and bench CSVs.
#
#   bash plots/sweep.sh [--out DIR] [CSV ...]
#
# Inputs: the CSVs given, else experiments/results/sweep_*.csv and
# experiments/results/bench_lengths_*.csv; each is recognised by its header
# (experiments/sweep.sh's sweep.csv, `earnest bench`'s CSV), others are skipped.
# Outputs, PNG and SVG each, in DIR (default experiments/results/figures/sweep),
# per group of equal dataset/preset/template/seed/device in a sweep CSV:
#   sweep_acc_vs_k       Recall@10 and NDCG@10 of EARN (1+1 registers) vs k; finetune,
#                        MostPop as reference lines; EARN's k = N/4 marked
#   sweep_speedup_vs_k   measured speedup (prefill; prefill + decode) vs k beside N/k
#   sweep_kv_vs_k        KV reduction vs k (bench, eval) beside (N-k)/N
#   sweep_acc_vs_regs    accuracy by register counts at one k (unsupported shown as such)
#   sweep_acc_by_hist    Recall@10 by history-length bucket, finetune and each k
#   sweep_attn_vs_k      decision-row attention over the layers that see the prompt
#                        (when the sweep analysed attention)
#   (the k figures and sweep_acc_by_hist only for a sweep of at least 2 EARN k)
#   sweep_methods        a baselines sweep (methods or policies beside finetune and
#                        EARN): Recall@10 vs KV reduction and vs omega, one labelled
#                        point per method and policy
# and from the bench CSVs with several prompt lengths:
#   sweep_speedup_vs_len EARN's speedup vs prompt length per bench run, beside its N/k.
# Figures are drawn in a temporary folder and moved into DIR at the end, so a failed
# run leaves the previous figures untouched.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$ROOT/experiments/results/figures/sweep
files=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "sweep figures: --out needs a folder" >&2; exit 2; }; OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "sweep figures: unknown option '$1'" >&2; exit 2 ;;
        *) files+=("$1"); shift ;;
    esac
done
if [ ${#files[@]} -eq 0 ]; then
    shopt -s nullglob
    files=("$ROOT"/experiments/results/sweep_*.csv "$ROOT"/experiments/results/bench_lengths_*.csv)
    shopt -u nullglob
fi
command -v gnuplot >/dev/null || { echo "sweep figures: gnuplot not found" >&2; exit 1; }
for f in "${files[@]}"; do [ -r "$f" ] || { echo "sweep figures: $f: cannot read" >&2; exit 1; }; done
[ ${#files[@]} -gt 0 ] || { echo "sweep figures: no CSV given and none in experiments/results/" >&2; exit 1; }

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.sweep-figures.tmp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
/usr/bin/python3 "$HERE/sweep_tables.py" "$WORK" "${files[@]}" > "$WORK/jobs.tsv"
[ -s "$WORK/jobs.tsv" ] || { echo "sweep figures: nothing to draw from: ${files[*]}" >&2; exit 1; }
while IFS=$'\t' read -r script name vars; do
    gnuplot -c "$HERE/$script" "$WORK/$name" "$vars" 2> "$WORK/$name.err" \
        || { cat "$WORK/$name.err" >&2; echo "sweep figures: gnuplot failed on $script ($name)" >&2; exit 1; }
    grep -v -e '^$' -e 'warning: Skipping data file with no valid points' "$WORK/$name.err" >&2 || true
    for fmt in png svg; do
        [ -s "$WORK/$name.$fmt" ] || { echo "sweep figures: gnuplot wrote no $name.$fmt" >&2; exit 1; }
    done
done < "$WORK/jobs.tsv"
n=0
for fig in "$WORK"/*.png "$WORK"/*.svg; do
    mv -f "$fig" "$OUT/"
    n=$((n + 1))
done
echo "sweep figures: wrote $n files to $OUT"
