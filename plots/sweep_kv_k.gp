# sweep_kv_k.gp: KV-cache reduction of EARN vs k: the bench's (long synthetic
# prompt), the evaluation's (real prompts, 20 beams) and the closed form (N-k)/N.
# gnuplot -c sweep_kv_k.gp OUT VARS.gp  (VARS: DAT N KEARN TITLE BENCH)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_kv_k.gp") - 1]."sweep_common.gp"
set title "KV-cache reduction vs layer split k\n".TITLE."\nbench: ".BENCH
set xlabel "layer split k"
set ylabel "KV-cache bytes saved vs full (%)"
set xrange [0.5:N - 0.5]
set xtics 1
set yrange [0:100]
@mark_k
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    plot sample [x=1:N-1] 100.0 * (N - x) / N w l ls 8 dt 2 t "closed form (N-k)/N", \
         DAT using 1:6 w lp ls 1 t "measured: bench (long prompt)", \
         DAT using 1:7 w lp ls 3 t "measured: test eval (real prompts + 20 beams)"
    unset output
}
