# density.gp: density_eps per layer (mean over heads), one line per analyze CSV.
# gnuplot -c density.gp OUT DATADIR "LABEL1 LABEL2 ..."
#   reads DATADIR/m<i>_decision.dat and DATADIR/m<i>_all.dat (i = 1..words(LABELS));
#   writes OUT.png and OUT.svg.
load ARG0[1:strstrt(ARG0, "density.gp") - 1]."layers_common.gp"
OUT = ARG1; DIR = ARG2; LABELS = ARG3
n = words(LABELS)
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size 1100,450 font "Sans,10" } else { set terminal svg noenhanced size 1100,450 font "Sans,10" }
    set output OUT.".".fmt
    set multiplot layout 1,2 title "Attention density per layer (density_eps = share of visible keys with p > eps)"
    set ylabel "density_eps"
    set yrange [0:*]
    set title "decision row (last prompt position)"
    plot for [i=1:n] sprintf("%s/m%d_decision.dat", DIR, i) using 1:2 title word(LABELS, i) lw 2
    set title "mean over all computed rows"
    plot for [i=1:n] sprintf("%s/m%d_all.dat", DIR, i) using 1:2 title word(LABELS, i) lw 2
    unset multiplot
    unset output
}
