# sweep_common.gp: shared settings of the sweep figures (plots/sweep.sh; loaded
# after the figure's VARS file). Every terminal is noenhanced: names stay literal.
set macros
PNG = "set terminal pngcairo noenhanced size 1200,620 font 'Sans,11'"
SVG = "set terminal svg noenhanced size 1200,620 font 'Sans,11' background rgb 'white'"
set datafile separator ","
set datafile missing "NaN"
set grid xtics ytics lc rgb "#dddddd"
# the legend sits right of the plot area, never over the data, samples before texts
set key outside right top vertical Left reverse box lc rgb "#bbbbbb" spacing 1.2 width 1
set border 3
set tics nomirror
set style line 1 lc rgb "#1f77b4" lw 2 pt 7 ps 1.3
set style line 2 lc rgb "#d62728" lw 2 pt 5 ps 1.3
set style line 3 lc rgb "#2ca02c" lw 2 pt 9 ps 1.4
set style line 4 lc rgb "#9467bd" lw 2 pt 11 ps 1.4
set style line 5 lc rgb "#ff7f0e" lw 2 pt 13 ps 1.4
set style line 6 lc rgb "#8c564b" lw 2 pt 15 ps 1.4
set style line 7 lc rgb "#17becf" lw 2 pt 4 ps 1.3
set style line 8 lc rgb "#7f7f7f" lw 2 pt 6 ps 1.3
isnan(v) = v != v
# marks EARN's split k = N/4 (KEARN) with a dotted vertical line and a label at the top
mark_k = "set arrow 1 from KEARN, graph 0 to KEARN, graph 1 nohead dt 3 lw 1.5 lc rgb '#555555'; set label 1 sprintf(\"EARN's k = N/4 = %d\", KEARN) at KEARN, graph 1 offset 0.6,-1 left front tc rgb '#555555'"
