#!/usr/bin/env bash
# plots/gpu_bench.sh: the GPU benchmark figures from experiments/results/gpu/
# (written by experiments/gpu/gpu_benchmarks.sh on a GPU machine).
#   gpu_earn_speedup  EARN over full vs prompt length (lengths.csv, batch 1 and the
#                     largest batch run: llama2-7b k=8, qwen2.5-7b k=7) and vs k
#                     (sweep_llama2_k.csv, the sweep driver's GPU sweep: llama2-7b,
#                     k = 4, 8, 16), each beside N/k
# and, through plots/sweep.sh, the sweep's own speed and KV vs k figures
# (figures/sweep/).
#   gpu_vs_hf         ms per user of earnest's and HF transformers' beam search
#                     (Llama-2-7B shape, bf16, beam 20) per prompt length and batch
# PNG and SVG into experiments/results/gpu/figures (drawn in a temporary folder,
# moved there at the end).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
R=${GPU_RESULTS:-$ROOT/experiments/results/gpu}
command -v gnuplot >/dev/null || { echo "gpu_bench: gnuplot not found" >&2; exit 1; }
for f in lengths.csv sweep_llama2_k.csv hf.csv earnest_hf.csv; do [ -f "$R/$f" ] || { echo "gpu_bench: no $R/$f" >&2; exit 1; }; done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# Speedup = full total_ms / EARN total_ms at the same (model, length): columns by name.
col() { head -1 "$1" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1; }
cm=$(col "$R/lengths.csv" method); cn=$(col "$R/lengths.csv" n_layers); cl=$(col "$R/lengths.csv" prompt_len)
ct=$(col "$R/lengths.csv" total_ms); cb=$(col "$R/lengths.csv" batch)
# len_<N layers>_<b>.dat: length, speedup, for batch 1 (b = 1) and each length's largest batch (b = max).
awk -F, -v m=$cm -v n=$cn -v l=$cl -v t=$ct -v b=$cb 'NR > 1 {
    key = $n "," $l "," $b; if ($m == "full") full[key] = $t; else earn[key] = $t
    if ($b > big[$n "," $l]) big[$n "," $l] = $b }
    END { for (key in earn) { split(key, a, ","); s = full[key] / earn[key]
            if (a[3] == 1) print a[2], s > "'"$T"'/len_" a[1] "_1.dat"
            if (a[3] == big[a[1] "," a[2]] && a[3] > 1) print a[2], s, a[3] > "'"$T"'/len_" a[1] "_max.dat" } }' "$R/lengths.csv"
for f in "$T"/len_*.dat; do sort -k1,1n "$f" -o "$f"; done
# k.dat: k, length, speedup (prefill + decode), N/k from the sweep's tidy CSV.
S="$R/sweep_llama2_k.csv"
sk=$(col "$S" k); sl=$(col "$S" prompt_len); ss=$(col "$S" bench_speedup); sn=$(col "$S" n_layers)
awk -F, -v k=$sk -v l=$sl -v s=$ss -v n=$sn 'NR > 1 { print $k, $l, $s, $n / $k }' "$S" | sort -k2,2n -k1,1n > "$T/k.dat"
for L in 1024 4096 16384; do awk -v L=$L '$2 == L' "$T/k.dat" > "$T/k_$L.dat"; done
# ms per user: earnest (earnest_hf.csv) and HF (hf.csv), by (prompt length, batch).
el=$(col "$R/earnest_hf.csv" prompt_len); eb=$(col "$R/earnest_hf.csv" batch); et=$(col "$R/earnest_hf.csv" total_ms)
hl=$(col "$R/hf.csv" prompt_len); hb=$(col "$R/hf.csv" batch); hu=$(col "$R/hf.csv" ms_per_user)
awk -F, -v l=$hl -v b=$hb -v u=$hu 'NR > 1 { print $l "_" $b, $u }' "$R/hf.csv" > "$T/hf.tsv"
awk -F, -v l=$el -v b=$eb -v t=$et 'NR == FNR { split($0, a, " "); hf[a[1]] = a[2]; next }
    FNR > 1 { key = $l "_" $b; printf "\"%d tok, batch %d\" %.2f %s\n", $l, $b, $t / $b, (key in hf) ? hf[key] : "NaN" }' \
    "$T/hf.tsv" "$R/earnest_hf.csv" > "$T/both.dat"
gnuplot <<GP
set datafile separator whitespace
do for [fmt in "png svg"] {
  if (fmt eq "png") { set terminal pngcairo size 1100,420 font ",10"; set output "$T/gpu_earn_speedup.png" } else { set terminal svg size 1100,420; set output "$T/gpu_earn_speedup.svg" }
  set multiplot layout 1,2 title "EARN over full on one H200 (bf16, beam 20; random weights)"
  set logscale x 2; set xlabel "prompt tokens"; set ylabel "speedup (total time)"; set key bottom right; set grid
  set yrange [0:4.5]
  plot "$T/len_32_1.dat" u 1:2 w lp lw 2 pt 7 lc 1 t "Llama-2-7B shape, k = 8 of 32, batch 1", \
       "$T/len_32_max.dat" u 1:2 w lp lw 2 pt 6 dt 3 lc 1 t "  same, largest batch run (64 / 16 / 4)", \
       "$T/len_28_1.dat" u 1:2 w lp lw 2 pt 5 lc 2 t "Qwen2.5-7B shape, k = 7 of 28, batch 1", \
       "$T/len_28_max.dat" u 1:2 w lp lw 2 pt 4 dt 3 lc 2 t "  same, largest batch run (16 / 16 / 4)", \
       4 w l dt 2 lc rgb "gray" t "N/k = 4"
  set yrange [0:8.5]; set logscale x 2; set xlabel "k (layers that see the prompt), Llama-2-7B shape, batch 1"; set key top right
  plot "$T/k_1024.dat" u 1:3 w lp lw 2 pt 7 t "1,024 tokens", "$T/k_4096.dat" u 1:3 w lp lw 2 pt 5 t "4,096 tokens", \
       "$T/k_16384.dat" u 1:3 w lp lw 2 pt 9 t "16,384 tokens", "$T/k_1024.dat" u 1:4 w l dt 2 lc rgb "gray" t "N/k"
  unset multiplot
  unset logscale; unset yrange
  if (fmt eq "png") { set terminal pngcairo size 800,420 font ",10"; set output "$T/gpu_vs_hf.png" } else { set terminal svg size 800,420; set output "$T/gpu_vs_hf.svg" }
  set title "Constrained beam search, Llama-2-7B shape, bf16, beam 20, one H200: ms per user"
  set style data histogram; set style histogram cluster gap 1; set style fill solid 0.8 border -1
  set logscale y; set ylabel "ms per user (log)"; set xtics rotate by -25; set key top left; set yrange [5:3000]; unset xlabel
  plot "$T/both.dat" u 2:xtic(1) t "earnest (full model)", "" u 3 t "HF transformers generate (no bar: not run)"
  unset logscale
}
GP
mkdir -p "$R/figures"
mv "$T"/*.png "$T"/*.svg "$R/figures/"
bash "$ROOT/plots/sweep.sh" --out "$R/figures/sweep" "$S"
echo "gpu_bench: figures in $R/figures"
