# sweep_attn_k.gp: decision-row attention of EARN vs k, averaged over the layers
# that see the prompt (0..k-1); EARN's layers >= k see only registers, so their
# figures are degenerate by construction and left out. Finetune (all layers) as
# horizontal lines.
# gnuplot -c sweep_attn_k.gp OUT VARS.gp  (VARS: DAT N KEARN TITLE FT_D FT_H FT_T)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_attn_k.gp") - 1]."sweep_common.gp"
set title "Decision-row attention vs k (mean over heads and over the layers that see the prompt)\n".TITLE."\nEARN's layers >= k attend to registers only: left out"
set xlabel "layer split k"
set ylabel "attention share (fraction)"
set xrange [0.5:N - 0.5]
set xtics 1
set yrange [0:1]
@mark_k
refs = ""
if (!isnan(FT_D)) { refs = refs.sprintf(", %g w l ls 1 dt 2 lw 1.5 t 'finetune density_eps'", FT_D) }
if (!isnan(FT_H)) { refs = refs.sprintf(", %g w l ls 2 dt 2 lw 1.5 t 'finetune sink_head'", FT_H) }
if (!isnan(FT_T)) { refs = refs.sprintf(", %g w l ls 3 dt 2 lw 1.5 t 'finetune sink_tail'", FT_T) }
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    eval "plot DAT using 1:8 w lp ls 1 t 'EARN density_eps (p > 0.05)', DAT using 1:9 w lp ls 2 t 'EARN sink_head (first 3 keys)', DAT using 1:10 w lp ls 3 t 'EARN sink_tail (last 3 keys)'".refs
    unset output
}
