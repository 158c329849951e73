#!/usr/bin/env bash
# plots/figures.sh: regenerates every attention figure from CSVs (`make figures`).
#
#   bash plots/figures.sh [--out DIR] [CSV ...]
#
# Inputs: the CSVs given, else experiments/results/*.csv. Each is recognised by
# its header: `layer,head,rows,metric,value` (earnest analyze) or
# `query,key,p,query_kind,key_kind` (earnest analyze --heatmap); others are
# skipped. Curves are labelled by file name (without .csv; spaces in names are
# not supported).
# Outputs, PNG and SVG each, in DIR (default experiments/results/figures):
#   density_layers   density_eps per layer, one line per analyze CSV
#   sinks_layers     head vs tail sink mass per layer
#   kind_mass_<name> attention mass per token kind per layer (stacked), per analyze CSV
#   heatmap_<name>   per heatmap CSV, with token-kind bands
#   earn_compare     finetune vs EARN, when both are among the inputs: the files
#                    named by $FINETUNE_CSV and $EARN_CSV, else the first whose
#                    name has a word "finetune" or "full", and "earn"
#                    ($EARN_K, if set, marks the layer split).
# Figures are drawn into a temporary folder and moved into DIR at the end, so
# a failed run leaves the previous figures untouched.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${FIGURES_OUT:-$ROOT/experiments/results/figures}
files=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || { echo "figures: --out needs a folder" >&2; exit 2; }; OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "figures: unknown option '$1'" >&2; exit 2 ;;
        *) files+=("$1"); shift ;;
    esac
done
if [ ${#files[@]} -eq 0 ]; then
    shopt -s nullglob
    files=("$ROOT"/experiments/results/*.csv)
    shopt -u nullglob
fi
command -v gnuplot >/dev/null || { echo "figures: gnuplot not found" >&2; exit 1; }

metrics=() heats=()
for f in "${files[@]}"; do
    [ -r "$f" ] || { echo "figures: $f: cannot read" >&2; exit 1; }
    header=$(head -1 "$f" | tr -d '\r')
    case "$header" in
        "layer,head,rows,metric,value") metrics+=("$f") ;;
        "query,key,p,query_kind,key_kind") heats+=("$f") ;;
        *) ;; # bench, eval, ... CSVs: not attention figures
    esac
done
if [ ${#metrics[@]} -eq 0 ] && [ ${#heats[@]} -eq 0 ]; then
    echo "figures: no analyze or heatmap CSVs among: ${files[*]:-(none; experiments/results/*.csv is empty)}" >&2
    exit 1
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.figures.tmp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
label_of() { local b; b=$(basename "$1"); b=${b%.csv}; echo "${b// /_}"; }

# Wide per-layer tables (head = -1, real layers only), one per CSV and row set;
# columns as in plots/layers_common.gp. Missing values become NaN (not drawn).
pivot() { # pivot CSV ROWS > table
    awk -F, -v want="$2" -v src="$1" '
        BEGIN { n = split("density_eps sink_head sink_tail entropy_norm topk_mass first_mass mass_special mass_prefix_reg mass_instruction mass_history mass_suffix_reg mass_target entropy n_keys", names, " ")
                maxl = -1 }
        NR == 1 { next }
        NF != 5 { printf "figures: %s:%d: expected 5 fields, got %d\n", src, NR, NF > "/dev/stderr"; bad = 1; exit 1 }
        $2 == -1 && $3 == want && $1 >= 0 { v[$1 "," $4] = $5; if ($1 + 0 > maxl) maxl = $1 + 0 }
        END {
            if (bad) exit 1
            if (maxl < 0) { printf "figures: %s: no per-layer %s rows with head -1\n", src, want > "/dev/stderr"; exit 1 }
            printf "# layer"; for (i = 1; i <= n; i++) printf " %s", names[i]; printf "\n"
            for (l = 0; l <= maxl; l++) {
                printf "%d", l
                for (i = 1; i <= n; i++) { k = l "," names[i]; printf " %s", (k in v) ? v[k] : "NaN" }
                printf "\n"
            }
        }' "$1"
}

labels=""
ft="" ea=""
for i in "${!metrics[@]}"; do
    f=${metrics[$i]} n=$((i + 1))
    for rows in decision all; do pivot "$f" "$rows" > "$WORK/m${n}_${rows}.dat"; done
    lab=$(label_of "$f")
    labels="$labels $lab"
    gnuplot -c "$HERE/kind_mass.gp" "$WORK/kind_mass_$lab" "$WORK/m$n" "$lab"
    low=$(echo "$lab" | tr 'A-Z' 'a-z')
    if [ -n "${FINETUNE_CSV:-}" ]; then [ "$f" -ef "$FINETUNE_CSV" ] && ft=$n
    elif [ -z "$ft" ] && [[ "$low" =~ (^|[^a-z])(finetune|full)([^a-z]|$) ]]; then ft=$n; fi
    if [ -n "${EARN_CSV:-}" ]; then [ "$f" -ef "$EARN_CSV" ] && ea=$n
    elif [ -z "$ea" ] && [[ "$low" =~ (^|[^a-z])earn([^a-z]|$) ]]; then ea=$n; fi
done
if [ ${#metrics[@]} -gt 0 ]; then
    gnuplot -c "$HERE/density.gp" "$WORK/density_layers" "$WORK" "${labels# }"
    gnuplot -c "$HERE/sinks.gp" "$WORK/sinks_layers" "$WORK" "${labels# }"
fi
if [ -n "$ft" ] && [ -n "$ea" ] && [ "$ft" != "$ea" ]; then
    gnuplot -c "$HERE/earn_compare.gp" "$WORK/earn_compare" "$WORK/m$ft" "$WORK/m$ea" \
        "$(label_of "${metrics[$((ft - 1))]}")" "$(label_of "${metrics[$((ea - 1))]}")" "${EARN_K:-}"
elif [ ${#metrics[@]} -gt 0 ]; then
    echo "figures: no finetune + earn pair among the analyze CSVs; skipping earn_compare" >&2
fi
for f in "${heats[@]}"; do
    lab=$(label_of "$f")
    gnuplot -c "$HERE/heatmap.gp" "$WORK/heatmap_$lab" "$f" "$lab"
done

n=0
for fig in "$WORK"/*.png "$WORK"/*.svg; do
    [ -e "$fig" ] || continue
    [ -s "$fig" ] || { echo "figures: gnuplot wrote an empty $(basename "$fig")" >&2; exit 1; }
    mv -f "$fig" "$OUT/"
    n=$((n + 1))
done
echo "figures: wrote $n files to $OUT"
