# heatmap.gp: one attention matrix (earnest analyze --heatmap L,H,S) with token-kind bands.
# gnuplot -c heatmap.gp OUT HEAT.csv TITLE
#   HEAT.csv: query,key,p,query_kind,key_kind (p = nan where the query cannot see the key,
#   drawn blank). Colour is sqrt(p) so that small but real weights stay visible.
load ARG0[1:strstrt(ARG0, "heatmap.gp") - 1]."layers_common.gp"
OUT = ARG1; HEAT = ARG2; TITLE = ARG3
set datafile separator ","
set xlabel "key position"
set ylabel "query position"
unset grid
set xtics autofreq
set ytics autofreq
set size ratio -1
set cblabel "sqrt(p)"
set cbrange [0:1]
set palette defined (0 "white", 0.15 "#fde0c5", 0.5 "#f4845f", 1 "#6a040f")
set style fill solid 1.0 noborder
unset key
stats HEAT skip 1 using 1 nooutput
T = STATS_max + 1
set xrange [-3.5:T - 0.5]
# grey behind the matrix: entries the query cannot see (nan) are drawn transparent
set object 1 rectangle from first -0.5, first -0.5 to first T - 0.5, first T - 0.5 behind fc rgb "#d9d9d9" fs solid noborder
set yrange [T - 0.5:-3.5]
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size 800,760 font "Sans,10" } else { set terminal svg noenhanced size 800,760 font "Sans,10" }
    set output OUT.".".fmt
    set title TITLE."\nbands: token kind (blue prefix_reg, olive instruction, green history, red suffix_reg,\npurple target, grey special); grey cells: not visible to the query"
    # key-kind band above the matrix (rows with query 0 list every key once), query-kind band left of it
    plot HEAT skip 1 using 2:1:(sqrt($3)) with image, \
         HEAT skip 1 using ($1 == 0 ? $2 : NaN):(-2):(0.5):(1.0):(kind_rgb($5)) with boxxyerror lc rgb variable, \
         HEAT skip 1 using ($2 == 0 ? -2 : NaN):1:(1.0):(0.5):(kind_rgb($4)) with boxxyerror lc rgb variable
    unset output
}
