# attention_study.gp: the attention-study figures (plots/attention_study.sh prepares the tables).
# gnuplot -c attention_study.gp layers|buckets OUT DATADIR K RT SMALL "YMAX1 YMAX2 YMAX3 YMAX4"
#   YMAX: the top of the y axis of each row of panels (shared by the columns; default autoscale)
#   RT = 1: also DATADIR/{L,B}_before_rectext* (the "Rec as text" control) in the first column
#   SMALL = 1: a 4th column, DATADIR/{L,B}_small_rec* (8 layers, Rec only)
#   layers:  DATADIR/L_<model>_<nlp|rec>.dat  (layer density_eps density_rel sink_head sink_tail n_keys)
#   buckets: DATADIR/B_<model>_<nlp|rec>_<early|late>.dat  (bucket ... label)
# Rows of panels: density_eps, density_rel, sink_head, sink_tail; columns: before, finetune, EARN.
# One legend, below all panels, outside the data.
MODE = ARG1; OUT = ARG2; DIR = ARG3; K = int(ARG4); RT = (ARGC >= 5 && ARG5 eq "1"); SM = (ARGC >= 6 && ARG6 eq "1"); NC = SM ? 4 : 3
YM = (ARGC >= 7) ? ARG7 : ""
models = "before finetune earn small"
titles = "'stories260K, before fine-tuning' 'after finetune (beauty, LC-Rec)' 'after EARN (k = 2 of 5, 1+1 registers)' 'small (8 layers) from scratch, Rec only'"
metrics = "density_eps density_rel sink_head sink_tail"
ylabels = "'density_eps (p > 0.05)' 'density_rel (p > 1/n)' 'sink_head (first 3 keys)' 'sink_tail (last 3 keys)'"
NLPC = "#1f77b4"; RECC = "#d62728"; RTC = "#2ca02c"
set grid ytics lc rgb "#dddddd"
set style data linespoints
do for [fmt in "png svg"] {
    if (fmt eq "png") { set terminal pngcairo noenhanced size (SM ? 1750 : 1350),1250 font "Sans,10" } else { set terminal svg noenhanced size (SM ? 1750 : 1350),1250 font "Sans,10" }
    set output OUT.".".fmt
    if (MODE eq "layers") {
        set multiplot title "Same weights, two inputs: decision-row attention per layer, mean over heads (NLP = TinyStories-style text, Rec = beauty test prompts, LC-Rec template)"
    } else {
        set multiplot title "Length-matched: decision-row attention by prompt length, early vs late layers (EARN: layers before its split only)"
    }
    do for [r=1:4] {
        m = word(metrics, r)
        col = r + 1
        do for [c=1:NC] {
            md = word(models, c)
            set title (r == 1 ? word(titles, c) : "")
            set ylabel (c == 1 ? word(ylabels, r) : "")
            if (words(YM) == 4) { set yrange [0:real(word(YM, r))] } else { set yrange [0:*] }
            # panel (r, c) inside [0.07, 0.98] x [0.10, 0.93] of the canvas; 0.06 / 0.045 between panels
            set lmargin at screen 0.07 + (c - 1) * (0.91 + 0.06) / NC
            set rmargin at screen 0.07 + c * (0.91 + 0.06) / NC - 0.06
            set tmargin at screen 0.93 - (r - 1) * (0.83 + 0.045) / 4.0
            set bmargin at screen 0.93 - r * (0.83 + 0.045) / 4.0 + 0.045
            unset key
            unset arrow; unset label
            if (MODE eq "layers") {
                if (md eq "small") { set xrange [-0.5:7.5] } else { set xrange [-0.5:4.5] }
                set xtics 1
                set xlabel (r == 4 ? "layer" : "")
                if (md eq "earn" && K > 0) {
                    set arrow 1 from first K - 0.5, graph 0 to first K - 0.5, graph 1 nohead dt 3 lw 1.5 lc rgb "#555555"
                    set label 1 sprintf("split k = %d", K) at first K - 0.4, graph 0.93 left font "Sans,9" tc rgb "#555555"
                    set label 2 "layers >= k: registers only\n(degenerate, left out)" at first (K + 4.5) / 2.0 - 0.2, graph 0.5 center font "Sans,8" tc rgb "#555555"
                }
                fn = DIR."/L_".md."_nlp.dat"; fr = DIR."/L_".md."_rec.dat"; ft = DIR."/L_".md."_rectext.dat"
                RTL = c == 1 && RT   # the "Rec as text" control: pretrained model only
                if (md eq "small") {
                    if (r >= 3) {
                        plot fr using 1:col lw 2 pt 5 lc rgb RECC, fr using 1:(3.0/$6) with lines dt 2 lw 1.2 lc rgb RECC
                    } else {
                        plot fr using 1:col lw 2 pt 5 lc rgb RECC
                    }
                }
                if (md ne "small" && r >= 3 && RTL) {
                    plot fn using 1:col lw 2 pt 7 lc rgb NLPC, fr using 1:col lw 2 pt 5 lc rgb RECC, \
                         ft using 1:col lw 2 pt 9 dt 4 lc rgb RTC, \
                         fn using 1:(3.0/$6) with lines dt 2 lw 1.2 lc rgb NLPC, fr using 1:(3.0/$6) with lines dt 2 lw 1.2 lc rgb RECC
                }
                if (md ne "small" && r >= 3 && !RTL) {
                    plot fn using 1:col lw 2 pt 7 lc rgb NLPC, fr using 1:col lw 2 pt 5 lc rgb RECC, \
                         fn using 1:(3.0/$6) with lines dt 2 lw 1.2 lc rgb NLPC, fr using 1:(3.0/$6) with lines dt 2 lw 1.2 lc rgb RECC
                }
                if (md ne "small" && r < 3 && RTL) {
                    plot fn using 1:col lw 2 pt 7 lc rgb NLPC, fr using 1:col lw 2 pt 5 lc rgb RECC, ft using 1:col lw 2 pt 9 dt 4 lc rgb RTC
                }
                if (md ne "small" && r < 3 && !RTL) {
                    plot fn using 1:col lw 2 pt 7 lc rgb NLPC, fr using 1:col lw 2 pt 5 lc rgb RECC
                }
            } else {
                set xrange [0.6:3.4]; set xtics ("50-100" 1, "100-150" 2, "150-200" 3)
                set xlabel (r == 4 ? "prompt length (tokens)" : "")
                ne = DIR."/B_".md."_nlp_early.dat"; nl = DIR."/B_".md."_nlp_late.dat"
                re = DIR."/B_".md."_rec_early.dat"; rl = DIR."/B_".md."_rec_late.dat"
                if (md eq "small") {
                    plot re using 1:col lw 2 pt 5 dt 1 lc rgb RECC, rl using 1:col lw 2 pt 4 dt 2 lc rgb RECC
                }
                if (md ne "small" && c == 1 && RT) {
                    te = DIR."/B_before_rectext_early.dat"; tl = DIR."/B_before_rectext_late.dat"
                    plot ne using 1:col lw 2 pt 7 dt 1 lc rgb NLPC title "NLP, early layers", \
                         nl using 1:col lw 2 pt 6 dt 2 lc rgb NLPC title "NLP, late layers", \
                         re using 1:col lw 2 pt 5 dt 1 lc rgb RECC title "Rec, early layers", \
                         rl using 1:col lw 2 pt 4 dt 2 lc rgb RECC title "Rec, late layers", \
                         te using 1:col with points ps 1.5 pt 9 lc rgb RTC title "Rec as text, early", \
                         tl using 1:col with points ps 1.5 pt 8 lc rgb RTC title "Rec as text, late"
                }
                if (md ne "small" && !(c == 1 && RT)) {
                    plot ne using 1:col lw 2 pt 7 dt 1 lc rgb NLPC title "NLP, early layers", \
                         nl using 1:col lw 2 pt 6 dt 2 lc rgb NLPC title "NLP, late layers", \
                         re using 1:col lw 2 pt 5 dt 1 lc rgb RECC title "Rec, early layers", \
                         rl using 1:col lw 2 pt 4 dt 2 lc rgb RECC title "Rec, late layers"
                }
            }
        }
    }
    # one legend for the figure: a plot of nothing (y = -1 is outside [0:1]) spanning the strip below all panels
    set lmargin at screen 0.07; set rmargin at screen 0.98; set bmargin at screen 0.005; set tmargin at screen 0.035
    unset border; unset tics; unset xlabel; unset ylabel; unset title; unset arrow; unset label; unset grid
    set xrange [0:1]; set yrange [0:1]
    set key inside center center horizontal maxrows 1 samplen 3 width 2 font "Sans,10"
    if (MODE eq "layers" && RT) {
        plot -1 with linespoints lw 2 pt 7 lc rgb NLPC title "NLP (text)", \
             -1 with linespoints lw 2 pt 5 lc rgb RECC title "Rec (beauty LC-Rec)", \
             -1 with linespoints lw 2 pt 9 dt 4 lc rgb RTC title "Rec spelled as text (control, before only)", \
             -1 with lines dt 2 lw 1.2 lc rgb NLPC title "uniform 3/n, NLP", \
             -1 with lines dt 2 lw 1.2 lc rgb RECC title "uniform 3/n, Rec"
    }
    if (MODE eq "layers" && !RT) {
        plot -1 with linespoints lw 2 pt 7 lc rgb NLPC title "NLP (text)", \
             -1 with linespoints lw 2 pt 5 lc rgb RECC title "Rec (beauty LC-Rec)", \
             -1 with lines dt 2 lw 1.2 lc rgb NLPC title "uniform share 3/n, NLP", \
             -1 with lines dt 2 lw 1.2 lc rgb RECC title "uniform share 3/n, Rec"
    }
    if (MODE ne "layers") {
        plot -1 with linespoints lw 2 pt 7 dt 1 lc rgb NLPC title "NLP, early layers", \
             -1 with linespoints lw 2 pt 6 dt 2 lc rgb NLPC title "NLP, late layers", \
             -1 with linespoints lw 2 pt 5 dt 1 lc rgb RECC title "Rec, early layers", \
             -1 with linespoints lw 2 pt 4 dt 2 lc rgb RECC title "Rec, late layers", \
             (RT ? -1 : NaN) with points ps 1.5 pt 9 lc rgb RTC title (RT ? "Rec as text (before only), early" : ""), \
             (RT ? -1 : NaN) with points ps 1.5 pt 8 lc rgb RTC title (RT ? "Rec as text, late" : "")
    }
    unset multiplot
    unset output
    set border; set tics; set grid ytics
}
