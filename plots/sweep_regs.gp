# sweep_regs.gp: test accuracy by register counts P+S (prefix + suffix) at one k;
# a configuration this runtime cannot train (EARN without a suffix register) is
# shown as such, not as a value; finetune as horizontal reference lines.
# gnuplot -c sweep_regs.gp OUT VARS.gp  (VARS: DAT N K TITLE FT_R FT_N)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_regs.gp") - 1]."sweep_common.gp"
stats DAT using 3 nooutput
YMAX = STATS_max
stats DAT using 1 nooutput
NX = STATS_records
if (!isnan(FT_R) && FT_R > YMAX) { YMAX = FT_R }
set title sprintf("Accuracy vs register counts at k = %d\n", K).TITLE
set xlabel "registers: prefix + suffix"
set ylabel "test accuracy (fraction)"
set xrange [-0.6:NX - 0.4]
set yrange [0:YMAX * 1.25]
set style fill solid 0.8 border -1
set boxwidth 0.36
set style textbox opaque noborder
refs = ""
if (!isnan(FT_R)) { refs = refs.sprintf(", %g w l ls 1 dt 2 lw 1.5 t 'finetune Recall@10'", FT_R) }
if (!isnan(FT_N)) { refs = refs.sprintf(", %g w l ls 2 dt 2 lw 1.5 t 'finetune NDCG@10'", FT_N) }
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    eval "plot DAT using ($1 - 0.19):3:xtic(2) w boxes ls 1 t 'Recall@10', DAT using ($1 + 0.19):4 w boxes ls 2 t 'NDCG@10', DAT using 1:($5 > 0 ? YMAX * 0.45 : NaN):('not trainable here:\\nno suffix register,\\nno token reaches\\nlayers >= k') w labels boxed tc rgb '#555555' notitle".refs
    unset output
}
