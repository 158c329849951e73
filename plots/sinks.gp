# sinks.gp: head sink (first keys) vs tail sink (last keys) per layer, mean over heads.
# gnuplot -c sinks.gp OUT DATADIR "LABEL1 LABEL2 ..."   (same inputs as density.gp)
load ARG0[1:strstrt(ARG0, "sinks.gp") - 1]."layers_common.gp"
OUT = ARG1; DIR = ARG2; LABELS = ARG3
n = words(LABELS)
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size 1100,450 font "Sans,10" } else { set terminal svg noenhanced size 1100,450 font "Sans,10" }
    set output OUT.".".fmt
    set multiplot layout 1,2 title "Attention sinks per layer: head (solid) vs tail (dashed) mass"
    set ylabel "attention mass"
    set yrange [0:1]
    do for [rows in "decision all"] {
        set title (rows eq "decision" ? "decision row" : "mean over all computed rows")
        plot for [i=1:n] sprintf("%s/m%d_%s.dat", DIR, i, rows) using 1:3 title word(LABELS, i)." head" lw 2 lc i dt 1, \
             for [i=1:n] sprintf("%s/m%d_%s.dat", DIR, i, rows) using 1:4 title word(LABELS, i)." tail" lw 2 lc i dt 2
    }
    unset multiplot
    unset output
}
