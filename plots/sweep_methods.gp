# sweep_methods.gp: every method and policy of a baselines sweep, two panels:
# test Recall@10 against the KV reduction (eval: 1 - sigma / sigma_finetune) and
# against omega (bench: prefill + beam decode over full's, same weights); one
# labelled point per method or policy, coloured by kind; finetune and MostPop as
# reference lines.
# gnuplot -c sweep_methods.gp OUT VARS.gp  (VARS: DAT TITLE BENCH FT_R MP_R)
# DAT columns: kv_red_pct omega recall10 ndcg10 kind label (kind 0..4: finetune,
# EARN, learned baseline, KV policy, prompt policy)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_methods.gp") - 1]."sweep_common.gp"
PNG = "set terminal pngcairo noenhanced size 1500,780 font 'Sans,11'"
SVG = "set terminal svg noenhanced size 1500,780 font 'Sans,11' background rgb 'white'"
array KIND[5] = ["finetune", "EARN", "learned baseline", "KV policy (training-free)", "prompt policy (training-free)"]
set key off
set yrange [0:*]
set ylabel "test Recall@10"
set bmargin 11
refs = ""
if (!isnan(FT_R)) { refs = refs.sprintf(", %g w l ls 1 dt 2 lw 1.5 t \"finetune's Recall@10\"", FT_R) }
if (!isnan(MP_R)) { refs = refs.sprintf(", %g w l ls 8 dt 3 lw 1.5 t \"MostPop's Recall@10\"", MP_R) }
kinds = "plot for [c=0:4] DAT using (column(XCOL)):($5 == c ? $3 : NaN) w p ls c + 1 t KIND[c + 1], " . \
        "DAT using (column(XCOL)):3:6 w labels left offset 0.7,0.35 font ',8' tc rgb '#333333' notitle"
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    set multiplot layout 1,2 title "Accuracy vs efficiency, every method and policy\n".TITLE."\n".BENCH
    XCOL = 1
    set title "against the KV reduction (test users' KV bytes vs finetune's)"
    set xlabel "KV reduction (%)"
    set xrange [-5:115]
    set xtics 0, 20, 100
    set key at screen 0.5, screen 0.02 center bottom horizontal maxcols 4 Left reverse box lc rgb "#bbbbbb" width 1
    eval kinds.refs
    set key off
    XCOL = 2
    set title "against the speedup (omega, bench)"
    set xlabel "omega: speedup over the full model (x)"
    set xtics autofreq
    set xrange [0:*]
    set offsets 0, graph 0.3, 0, 0
    eval kinds.refs
    set offsets 0, 0, 0, 0
    unset multiplot
    unset output
}
