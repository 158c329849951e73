#!/usr/bin/env bash
# plots/attention_study.sh: the attention-study figures (experiments/attention_study.sh).
#
#   bash plots/attention_study.sh [RES_DIR]     (default experiments/results/attention_study)
#
# Reads RES_DIR/summary.csv (experiments/attention_summary.py: model,input,bucket,
# n_samples,rows,scope,metric,value) and writes, PNG and SVG each, into RES_DIR/figures/:
#   attn_study_layers    per layer, decision row, mean over heads: density_eps, density_rel,
#                        sink_head, sink_tail (rows) for stories260K before fine-tuning, after
#                        finetune, after EARN (columns); NLP vs Rec in each panel, the uniform
#                        share 3/n of a sink window dashed; EARN's split k marked and its layers
#                        >= k (registers only: degenerate) left out.
#                        In the first column also the control "Rec as text" (LC-Rec prompts
#                        spelled by the pretrained tokenizer), when summary.csv has it; and a
#                        4th column, Rec only, for the `small` model trained from scratch, when
#                        summary.csv has it.
#   attn_study_buckets   the same metrics, early vs late layers, by prompt-length bucket
#                        (50-100, 100-150, 150-200 tokens): NLP and Rec of equal length.
# Figures are drawn into a temporary folder and moved in at the end.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RES=${1:-$(dirname "$HERE")/experiments/results/attention_study}
SUM=$RES/summary.csv
[ -r "$SUM" ] || { echo "attention_study: $SUM: cannot read (run experiments/attention_summary.py first)" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "attention_study: gnuplot not found" >&2; exit 1; }
OUT=$RES/figures
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.figures.tmp.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
K=$(awk -F, '$1 == "earn" && $5 == "decision" && $6 ~ /^[0-9]+$/ && $6 + 1 > k { k = $6 + 1 } END { print k + 0 }' "$SUM")

# per-layer tables: layer density_eps density_rel sink_head sink_tail n_keys (bucket all, decision row)
for m in before finetune earn small; do
    for in in nlp rec rectext; do
        awk -F, -v m="$m" -v in_="$in" '
            BEGIN { n = split("density_eps density_rel sink_head sink_tail n_keys", names, " "); maxl = -1 }
            $1 == m && $2 == in_ && $3 == "all" && $5 == "decision" && $6 ~ /^[0-9]+$/ {
                v[$6 "," $7] = $8; if ($6 + 0 > maxl) maxl = $6 + 0 }
            END { print "# layer density_eps density_rel sink_head sink_tail n_keys"
                  for (l = 0; l <= (maxl > 4 ? maxl : 4); l++) { printf "%d", l
                      for (i = 1; i <= n; i++) { k = l "," names[i]; printf " %s", (k in v) ? v[k] : "NaN" }
                      printf "\n" } }' "$SUM" > "$WORK/L_${m}_${in}.dat"
        # per-bucket tables: bucket index, the same metrics, for the early and the late scope
        for scope in early late; do
            awk -F, -v m="$m" -v in_="$in" -v sc="$scope" '
                BEGIN { n = split("density_eps density_rel sink_head sink_tail n_keys", names, " ")
                        nb = split("50-100 100-150 150-200", bk, " ") }
                $1 == m && $2 == in_ && $5 == "decision" && $6 == sc { v[$3 "," $7] = $8 }
                END { print "# bucket density_eps density_rel sink_head sink_tail n_keys label"
                      for (b = 1; b <= nb; b++) { printf "%d", b
                          for (i = 1; i <= n; i++) { k = bk[b] "," names[i]; printf " %s", (k in v) ? v[k] : "NaN" }
                          printf " %s\n", bk[b] } }' "$SUM" > "$WORK/B_${m}_${in}_${scope}.dat"
        done
    done
done
SMALL=$(awk -F, '$1 == "small" && $2 == "rec" { n++ } END { print (n > 0) ? 1 : 0 }' "$SUM")
# one y range per row of panels (metric), so columns compare at a glance: 1.1 x the largest value
# drawn (per-layer rows of bucket "all", or early/late rows of the buckets; the 3/n lines count too)
ymax() { # ymax layers|buckets
    awk -F, -v mode="$1" '
        NR == 1 { next }
        $5 != "decision" { next }
        mode == "layers" && !($3 == "all" && $6 ~ /^[0-9]+$/) { next }
        mode == "buckets" && !($3 != "all" && ($6 == "early" || $6 == "late")) { next }
        { x = $8 + 0; if (!($7 in m) || x > m[$7]) m[$7] = x }
        $7 == "n_keys" && $8 + 0 > 0 && mode == "layers" { u = 3.0 / ($8 + 0); if (u > un) un = u }
        END { split("density_eps density_rel sink_head sink_tail", names, " ")
              for (i = 1; i <= 4; i++) { v = m[names[i]] + 0; if (i >= 3 && un > v) v = un
                                         printf "%s%.4g", (i > 1 ? " " : ""), (v > 0 ? 1.1 * v : 1) }
              printf "\n" }' "$SUM"
}
RT=$(awk -F, '$1 == "before" && $2 == "rectext" { n++ } END { print (n > 0) ? 1 : 0 }' "$SUM")
gnuplot -c "$HERE/attention_study.gp" layers "$WORK/attn_study_layers" "$WORK" "$K" "$RT" "$SMALL" "$(ymax layers)"
gnuplot -c "$HERE/attention_study.gp" buckets "$WORK/attn_study_buckets" "$WORK" "$K" "$RT" "$SMALL" "$(ymax buckets)"
n=0
for fig in "$WORK"/*.png "$WORK"/*.svg; do
    [ -s "$fig" ] || { echo "attention_study: gnuplot wrote an empty $(basename "$fig")" >&2; exit 1; }
    mv -f "$fig" "$OUT/"
    n=$((n + 1))
done
echo "attention_study: wrote $n files to $OUT"
