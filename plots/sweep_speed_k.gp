# sweep_speed_k.gp: measured speedup of EARN over full (same weights, bench) vs k,
# total and prefill only, beside the closed form N/k.
# gnuplot -c sweep_speed_k.gp OUT VARS.gp  (VARS: DAT N KEARN TITLE BENCH)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_speed_k.gp") - 1]."sweep_common.gp"
set title "Speedup vs layer split k\n".TITLE."\nbench: ".BENCH
set xlabel "layer split k"
set ylabel "speedup of EARN over the full model (x)"
set xrange [0.5:N - 0.5]
set xtics 1
set yrange [0:*]
@mark_k
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    plot sample [x=1:N-1] N / x w l ls 8 dt 2 t "closed form N/k (prefill-bound)", \
         DAT using 1:5 w lp ls 1 t "measured: prefill", \
         DAT using 1:4 w lp ls 2 t "measured: prefill + beam decode"
    unset output
}
