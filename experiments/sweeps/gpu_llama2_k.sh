# The GPU k sweep of the GPU benchmarks issue: EARN on the Llama-2-7B shape
# (random bf16 weights drawn on the GPU; bench-only points, dataset=none) at
# k = 4, 8, 16 of 32 and prompt lengths 1K, 4K, 16K, each point against the full
# model on the same weights, beside N/k and the closed-form KV reduction. Needs
# a CUDA build on a machine with a GPU (about 2 minutes on one H200):
#
#   experiments/sweep.sh experiments/sweeps/gpu_llama2_k.sh --jobs 1
#   bash plots/sweep.sh out/sweeps/gpu_llama2_k     (the speed / KV vs k figures)
name=gpu_llama2_k
dataset=none
preset=llama2-7b
device=cuda
dtype=bf16
bench_reps=3
bench_batch=1
bench_beam=20
prompt_len="1024 4096 16384"
grid method=earn k="4 8 16"
