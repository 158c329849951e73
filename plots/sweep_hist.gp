# sweep_hist.gp: test Recall@10 by history-length bucket (items in the prompt, last
# 20 kept), one line per configuration (finetune, EARN at each k).
# gnuplot -c sweep_hist.gp OUT VARS.gp  (VARS: DAT NCFG TITLE NAME1..NAMEn)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_hist.gp") - 1]."sweep_common.gp"
stats DAT using 1 nooutput
set title "Accuracy by history length\n".TITLE
set xlabel "history length in the prompt (items; bucket and its test users)"
set ylabel "test Recall@10 (fraction)"
set xrange [-0.4:STATS_records - 0.6]
set yrange [0:*]
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    plot for [i=1:NCFG] DAT using 1:(column(i + 2)):xtic(2) w lp ls i t value("NAME".i)
    unset output
}
