# A quick sweep to try the runner (a few minutes on 2 cores): the tiny preset on
# the synthetic dataset (make -f Makefile.data synthetic DATA=data), EARN at
# k = 1, 2, 3 and plain fine-tuning, each benchmarked at two prompt lengths (the
# two points of a k share one model and one evaluation).
#
#   EARNEST_DATA=data experiments/sweep.sh experiments/sweeps/synthetic_tiny.sh --jobs 2
name=synthetic_tiny
dataset=synthetic
template=tiger
preset=tiny
epochs=2
eval_users=200
bench_reps=2
prompt_len="256 1024"
attn_samples=16
grid method=earn k="1 2 3"
grid method=finetune
