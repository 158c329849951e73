# sweep_acc_k.gp: test Recall@10 and NDCG@10 of EARN (1+1 registers) vs the layer
# split k; finetune and MostPop as horizontal reference lines; EARN's k = N/4 marked.
# gnuplot -c sweep_acc_k.gp OUT VARS.gp  (VARS: DAT N KEARN TITLE FT_R FT_N MP_R MP_N)
load ARG2
load ARG0[1:strstrt(ARG0, "sweep_acc_k.gp") - 1]."sweep_common.gp"
set title "Accuracy vs layer split k\n".TITLE
set xlabel sprintf("layer split k (layers 0..k-1 see the prompt, k..%d only the registers)", N - 1)
set ylabel "test accuracy (Recall@10, NDCG@10; fraction)"
set xrange [0.5:N - 0.5]
set xtics 1
set yrange [0:*]
@mark_k
refs = ""
if (!isnan(FT_R)) { refs = refs.sprintf(", %g w l ls 1 dt 2 lw 1.5 t 'finetune Recall@10'", FT_R) }
if (!isnan(FT_N)) { refs = refs.sprintf(", %g w l ls 2 dt 2 lw 1.5 t 'finetune NDCG@10'", FT_N) }
if (!isnan(MP_R)) { refs = refs.sprintf(", %g w l ls 8 dt 3 lw 1.5 t 'MostPop Recall@10'", MP_R) }
do for [fmt in "png svg"] {
    if (fmt eq "png") { @PNG } else { @SVG }
    set output ARG1.".".fmt
    eval "plot DAT using 1:2 w lp ls 1 t 'EARN Recall@10', DAT using 1:3 w lp ls 2 t 'EARN NDCG@10'".refs
    unset output
}
