# earn_compare.gp: finetune vs EARN attention metrics side by side, per layer.
# gnuplot -c earn_compare.gp OUT FT_PREFIX EARN_PREFIX FT_LABEL EARN_LABEL [K]
#   reads <PREFIX>_decision.dat of both; K (optional) marks EARN's layer split.
load ARG0[1:strstrt(ARG0, "earn_compare.gp") - 1]."layers_common.gp"
OUT = ARG1; FT = ARG2; EA = ARG3; FTL = ARG4; EAL = ARG5
K = (ARGC >= 6 && ARG6 ne "") ? real(ARG6) : -1
if (K > 0) { set arrow 1 from first K - 0.5, graph 0 to first K - 0.5, graph 1 nohead dt 3 lc rgb "#555555" }
cols = "2 3 4 5"
names = "density_eps sink_head sink_tail entropy_norm"
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size 1100,800 font "Sans,10" } else { set terminal svg noenhanced size 1100,800 font "Sans,10" }
    set output OUT.".".fmt
    set multiplot layout 2,2 title "Decision-row attention, mean over heads: ".FTL." vs ".EAL.(K > 0 ? sprintf(" (dotted: EARN split k = %d)", int(K)) : "")
    do for [j=1:4] {
        c = int(word(cols, j))
        set title word(names, j)
        set ylabel word(names, j)
        set yrange [0:*]
        plot FT."_decision.dat" using 1:c title FTL lw 2 lc 1, EA."_decision.dat" using 1:c title EAL lw 2 lc 2
    }
    unset multiplot
    unset output
}
