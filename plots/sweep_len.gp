# sweep_len.gp: speedup of EARN over full vs prompt length (log2 axis), one colour
# per bench run (preset), prefill and prefill + decode, beside that run's N/k.
# gnuplot -c sweep_len.gp OUT VARS.gp  (VARS: NC, SUB, DAT1..DATn, T1..Tn)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_len.gp") - 1]."sweep_common.gp"
set title "EARN speedup vs prompt length (random weights of each preset, one bench run each)\n".SUB
set xlabel "prompt length (tokens)"
set ylabel "speedup of EARN over the full model (x)"
set logscale x 2
set xtics ("128" 128, "256" 256, "512" 512, "1K" 1024, "2K" 2048, "4K" 4096, "8K" 8192, "16K" 16384, "32K" 32768)
set offsets graph 0.04, graph 0.04, 0, 0
set yrange [0:*]
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    plot for [i=1:NC] value("DAT".i) using 1:5 w l ls i dt 2 lw 1.5 t value("T".i).": N/k", \
         for [i=1:NC] value("DAT".i) using 1:3 w lp ls i dt 1 t value("T".i).": prefill", \
         for [i=1:NC] value("DAT".i) using 1:2 w lp ls i dt 4 pt 4 t value("T".i).": prefill + decode"
    unset output
}
