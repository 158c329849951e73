# layers_common.gp: shared settings of the earnest figures (loaded by the others).
# The wide per-layer tables that plots/figures.sh prepares have these columns:
#   1 layer  2 density_eps  3 sink_head  4 sink_tail  5 entropy_norm  6 topk_mass
#   7 first_mass  8 mass_special  9 mass_prefix_reg  10 mass_instruction
#   11 mass_history  12 mass_suffix_reg  13 mass_target  14 entropy  15 n_keys
# every terminal below is set noenhanced: names like sink_head stay literal
set grid ytics lc rgb "#dddddd"
set key below vertical maxrows 2 height 1
set xlabel "layer"
set xtics 1
set style data linespoints
# one colour per token kind (0 special .. 5 target), also used for the heatmap bands
kind_rgb(k) = k == 0 ? 0x7f7f7f : k == 1 ? 0x1f77b4 : k == 2 ? 0xbcbd22 : k == 3 ? 0x2ca02c : k == 4 ? 0xd62728 : 0x9467bd
kind_name(k) = word("special prefix_reg instruction history suffix_reg target", int(k) + 1)
