# The EARN study on AtSpeed beauty (experiments/beauty_sweep.sh runs it):
# small preset (N = 8 layers), tiger template, one epoch or 10 minutes per
# training, whichever ends first, 1,024-token batches. Sweeps the layer split k with one prefix and one
# suffix register, the register counts at k = 2 (EARN's k = N/4), and plain
# fine-tuning beside them. Each point is benchmarked full vs EARN on its own
# weights at a 2,048-token prompt and its attention analysed on 32 test prompts.
#
#   experiments/sweep.sh experiments/sweeps/beauty_tiger_small.sh --jobs 2
#
# Axes take space-separated values; every `grid` call adds the cartesian product
# of its axes (over the settings above it). See experiments/sweeps/README.md.
name=beauty_tiger_small
dataset=beauty
template=tiger
preset=small
seed=1
device=cpu
epochs=1
max_minutes=10
train_args="--batch-tokens 1024"   # ~1,300 updates per epoch: 4096-token batches leave a 1-epoch model below MostPop
eval_users=500
prompt_len=2048
bench_reps=3
attn_samples=32
grid method=finetune
grid method=earn k="1 2 3 4 6" regs="1,1"
grid method=earn k=2 regs="0,1 1,0 2,2 3,3"
