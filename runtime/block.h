// block.h: the body of one decoder layer, shared by inference (model.c) and
// training (train.c), and the FLOP counts of the forward.
//
// A layer is: attention input (norm, q/k/v projections, RoPE), attention
// (model.c against the KV cache, train.c over whole sequences), the output
// projection added to the residual, then the SwiGLU MLP added to the
// residual. Every function works on `rows` rows of layer l, [rows, D] in and
// out; the caller picks the buffers (training keeps them for the backward,
// inference reuses a few in place).
#ifndef EARNEST_BLOCK_H
#define EARNEST_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/model.h"

// Attention input: xn [rows, D] = input_layernorm(x [rows, D]);
// q [rows, H*E], k and v [rows, G*E] = q/k/v_proj(xn) (+ the Qwen2 biases);
// RoPE on q and k at positions pos [rows].
// compress500x: the rows flagged by lora_on [rows] (NULL: none; the model must
// have adapters) add the LoRA term to q, k and v before RoPE (ops.h
// lora_forward); lora_u [3, rows, r] receives the three low-rank inputs
// (x A^T of q, k, v) for the backward.
void block_qkv_forward(float *xn, float *q, float *k, float *v, float *lora_u, const Model *m, int l,
                       const float *x, const int *pos, const uint8_t *lora_on, size_t rows);

// Residual after attention: x_out [rows, D] = x_in + o_proj(att [rows, H*E]).
// x_out may be x_in (in place). Flagged rows add o_proj's LoRA term; lora_u
// [rows, r] receives its low-rank input (att A^T).
void block_attn_residual(float *x_out, float *lora_u, const Model *m, int l, const float *x_in, const float *att,
                         const uint8_t *lora_on, size_t rows);

// MLP and its residual: xn [rows, D] = post_attention_layernorm(x_in);
// gate, up [rows, F] = gate_proj(xn), up_proj(xn); h [rows, F] = silu(gate) * up
// (h may be gate); x_out [rows, D] = x_in + down_proj(h) (x_out may be x_in).
void block_mlp_forward(float *x_out, float *xn, float *gate, float *up, float *h, const Model *m, int l,
                       const float *x_in, size_t rows);

// FLOPs (multiply-adds x2) of the forward, for the throughput figures.
// q/k/v projections of `rows` rows:
static inline double flops_qkv(const ModelConfig *c, size_t rows) {
    double D = (double)c->dim, QD = (double)c->n_heads * c->head_dim, KD = (double)c->n_kv_heads * c->head_dim;
    return 2.0 * (double)rows * D * (QD + 2 * KD);
}
// output projection and MLP of `rows` rows:
static inline double flops_out_mlp(const ModelConfig *c, size_t rows) {
    double D = (double)c->dim, F = (double)c->hidden_dim, QD = (double)c->n_heads * c->head_dim;
    return 2.0 * (double)rows * D * QD + 6.0 * (double)rows * D * F;
}
// compress500x's LoRA terms on q, k, v and o of `rows` rows (x A^T, then u B^T; all
// rows are multiplied, unflagged ones with u = 0):
static inline double flops_lora(const ModelConfig *c, size_t rows) {
    double D = (double)c->dim, QD = (double)c->n_heads * c->head_dim, KD = (double)c->n_kv_heads * c->head_dim;
    return 2.0 * (double)rows * (double)c->lora_rank * ((D + QD) + 2 * (D + KD) + (QD + D));
}
// final norm's output head on `rows` rows:
static inline double flops_head(const ModelConfig *c, size_t rows) {
    return 2.0 * (double)rows * (double)c->dim * (double)c->vocab_size;
}
// Attention as needed (inference): nq queries of one sequence on one KV head,
// each seeing `before` older keys and the new ones up to itself (2 products of
// E each per visible key, for the H/G query heads of the KV head).
static inline double flops_attn_cached(const ModelConfig *c, int nq, double before) {
    return 4.0 * (double)c->head_dim * (double)(c->n_heads / c->n_kv_heads) *
           ((double)nq * before + 0.5 * (double)nq * (nq + 1));
}
// Attention as computed (training, attention_forward): a block of bq queries
// of every head against keys 0..i1-1.
static inline double flops_attn_block(const ModelConfig *c, size_t bq, size_t i1) {
    return 4.0 * (double)c->n_heads * (double)bq * (double)i1 * (double)c->head_dim;
}

#endif
