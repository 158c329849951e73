// block.c: see block.h.
#include "runtime/block.h"

#include <string.h>

#include "runtime/ops.h"

void block_qkv_forward(float *xn, float *q, float *k, float *v, float *lora_u, const Model *m, int l,
                       const float *x, const int *pos, const uint8_t *lora_on, size_t rows) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, E = (size_t)c->head_dim, H = (size_t)c->n_heads, G = (size_t)c->n_kv_heads;
    const size_t QD = H * E, KD = G * E;
    rmsnorm_forward(xn, x, w->attn_norm + (size_t)l * D, rows, D, c->rms_eps);
    matmul_forward(q, xn, w->wq + (size_t)l * QD * D, w->bq ? w->bq + (size_t)l * QD : NULL, rows, D, QD, 0.0f);
    matmul_forward(k, xn, w->wk + (size_t)l * KD * D, w->bk ? w->bk + (size_t)l * KD : NULL, rows, D, KD, 0.0f);
    matmul_forward(v, xn, w->wv + (size_t)l * KD * D, w->bv ? w->bv + (size_t)l * KD : NULL, rows, D, KD, 0.0f);
    if (lora_on) {
        const size_t R = (size_t)c->lora_rank;
        const float s = model_lora_scale(c);
        CHECK(R > 0 && lora_u, "block_qkv_forward: LoRA rows on a model without adapters (or no u buffer)");
        lora_forward(q, lora_u, xn, w->lora_qa + (size_t)l * R * D, w->lora_qb + (size_t)l * QD * R, lora_on, s,
                     rows, D, R, QD);
        lora_forward(k, lora_u + rows * R, xn, w->lora_ka + (size_t)l * R * D, w->lora_kb + (size_t)l * KD * R,
                     lora_on, s, rows, D, R, KD);
        lora_forward(v, lora_u + 2 * rows * R, xn, w->lora_va + (size_t)l * R * D, w->lora_vb + (size_t)l * KD * R,
                     lora_on, s, rows, D, R, KD);
    }
    rope_forward(q, pos, m->rope_inv_freq, rows, H, E, QD);
    rope_forward(k, pos, m->rope_inv_freq, rows, G, E, KD);
}

void block_attn_residual(float *x_out, float *lora_u, const Model *m, int l, const float *x_in, const float *att,
                         const uint8_t *lora_on, size_t rows) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, QD = (size_t)c->n_heads * (size_t)c->head_dim;
    if (x_out != x_in) memcpy(x_out, x_in, rows * D * sizeof(float));
    matmul_forward(x_out, att, w->wo + (size_t)l * D * QD, NULL, rows, QD, D, 1.0f);
    if (lora_on) {
        const size_t R = (size_t)c->lora_rank;
        CHECK(R > 0 && lora_u, "block_attn_residual: LoRA rows on a model without adapters (or no u buffer)");
        lora_forward(x_out, lora_u, att, w->lora_oa + (size_t)l * R * QD, w->lora_ob + (size_t)l * D * R, lora_on,
                     model_lora_scale(c), rows, QD, R, D);
    }
}

void block_mlp_forward(float *x_out, float *xn, float *gate, float *up, float *h, const Model *m, int l,
                       const float *x_in, size_t rows) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim;
    rmsnorm_forward(xn, x_in, w->mlp_norm + (size_t)l * D, rows, D, c->rms_eps);
    matmul_forward(gate, xn, w->w_gate + (size_t)l * F * D, NULL, rows, D, F, 0.0f);
    matmul_forward(up, xn, w->w_up + (size_t)l * F * D, NULL, rows, D, F, 0.0f);
    swiglu_forward(h, gate, up, rows, F);
    if (x_out != x_in) memcpy(x_out, x_in, rows * D * sizeof(float));
    matmul_forward(x_out, h, w->w_down + (size_t)l * D * F, NULL, rows, F, D, 1.0f);
}
