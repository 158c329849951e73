// preset.h: named model shapes for training and benchmarks.
//   tiny : 4 layers, d=64,  4 heads / 2 KV heads, SwiGLU 176   (tests, the quick-start job)
//   small: 8 layers, d=256, 8 heads / 4 KV heads, SwiGLU 688   (real runs, benchmarks)
//   draft: 2 layers, d=128, 4 heads / 2 KV heads, SwiGLU 352   (AtSpeed draft model: half the small
//          preset's width; speculative beam search needs the target's vocabulary, checked at use)
//   base : 12 layers, d=768, 12 heads / 4 KV heads, SwiGLU 2048 (CPU speed curves closer to real models)
//   llama2-7b : Llama-2-7B's shape: 32 layers, d=4096, 32 heads (MHA), SwiGLU 11008, vocab 32000,
//               4096 positions, RoPE theta 1e4, eps 1e-5, untied (GPU speed runs)
//   qwen2.5-7b: Qwen2.5-7B's shape: 28 layers, d=3584, 28 heads / 4 KV heads, SwiGLU 18944, q/k/v
//               biases, vocab 152064, 32768 positions, RoPE theta 1e6, eps 1e-6, untied (GPU speed runs)
#ifndef EARNEST_PRESET_H
#define EARNEST_PRESET_H

#include "runtime/config.h"

#define PRESET_NAMES "tiny|small|draft|base|llama2-7b|qwen2.5-7b"

// Fills c for preset `name` with the given vocabulary size (<= 0: the
// preset's own: 1024 for tiny/small/base, the real model's for the 7B shapes);
// -1 if unknown.
int preset_config(ModelConfig *c, const char *name, int vocab_size, Error *e);

#endif
