// ref_model.h: an obviously-correct reference of the decoder for the tests.
//
// Plain loops in double precision, one sequence at a time, every token through
// every layer. The layer plan is applied as an attention mask only: at layer l
// a query i sees key j iff j <= i, depth[j] > l, and mask (if any) allows it.
// Tokens whose depth is reached keep being computed, but nobody can see them,
// so the logits of the tokens that reach the top are the plan's logits.
#ifndef EARNEST_TEST_REF_MODEL_H
#define EARNEST_TEST_REF_MODEL_H

#include <stdint.h>

#include "runtime/model.h"

// logits [T, V] (rows of tokens with depth < N are left untouched);
// attn, when not NULL, receives probabilities [L, H, T, T] (0 where not visible,
// rows of tokens not computed at a layer all 0). positions NULL = 0..T-1,
// depth NULL = all N, mask NULL = causal ([T, T], mask[i*T+j]).
void ref_forward(double *logits, double *attn, const Model *m, const int *tokens, const int *positions,
                 const int *depth, const uint8_t *mask, int T);

// The same with compress500x's LoRA: a token with lora[t] = 1 (lora NULL: none)
// computes q/k/v/o_proj with the merged weight W + (alpha / r) * B A, formed here
// entry by entry in double (not as the runtime's two low-rank products).
void ref_forward_lora(double *logits, double *attn, const Model *m, const int *tokens, const int *positions,
                      const int *depth, const uint8_t *mask, const uint8_t *lora, int T);

// A random config for tests.
ModelConfig ref_config(ModelArch arch, int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
                       int tie);

// max |a - b| / max |b| over n entries (skipping NaN in a where b is NaN-free and skip_nan).
double rel_err(const float *a, const double *b, size_t n);

#endif
