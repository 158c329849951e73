# kind_mass.gp: attention mass per token kind per layer, stacked (mean over heads).
# gnuplot -c kind_mass.gp OUT PREFIX LABEL
#   reads PREFIX_decision.dat and PREFIX_all.dat; writes OUT.png and OUT.svg.
load ARG0[1:strstrt(ARG0, "kind_mass.gp") - 1]."layers_common.gp"
OUT = ARG1; PREFIX = ARG2; LABEL = ARG3
set style fill solid 0.9 border rgb "white"
set boxwidth 0.8
set yrange [0:1.05]
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size 1100,450 font "Sans,10" } else { set terminal svg noenhanced size 1100,450 font "Sans,10" }
    set output OUT.".".fmt
    set multiplot layout 1,2 title "Attention mass per token kind per layer: ".LABEL
    set ylabel "attention mass"
    do for [rows in "decision all"] {
        set title (rows eq "decision" ? "decision row" : "mean over all computed rows")
        # bar k is the cumulative mass of kinds 0..k; drawn tallest first so each shows its own band
        plot for [k=5:0:-1] sprintf("%s_%s.dat", PREFIX, rows) \
             using 1:(sum [c=0:k] column(8 + c)) with boxes lc rgb kind_rgb(k) title kind_name(k)
    }
    unset multiplot
    unset output
}
