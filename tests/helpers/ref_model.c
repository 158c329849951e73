// ref_model.c: see ref_model.h. Written from the definitions (HF Llama /
// Qwen2 modelling code as the spec), not from the fast runtime.
#include "helpers/ref_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ModelConfig ref_config(ModelArch arch, int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
                       int tie) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.dim = dim;
    c.hidden_dim = hidden;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.head_dim = dim / heads;
    c.vocab_size = vocab;
    c.max_seq_len = 4096;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tie_embeddings = tie;
    c.attn_bias = arch == MODEL_ARCH_QWEN2;
    c.method = METHOD_FINETUNE;
    return c;
}

double rel_err(const float *a, const double *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(a[i]) || isnan(d)) return INFINITY;
        num = d > num ? d : num;
        den = fabs(b[i]) > den ? fabs(b[i]) : den;
    }
    return den > 0 ? num / den : num;
}

static void ref_rmsnorm(double *y, const double *x, const float *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * s * w[i];
}

// y[o] = sum_i W[o, i] x[i] (+ b[o])
static void ref_linear(double *y, const double *x, const float *W, const float *b, int in, int out) {
    for (int o = 0; o < out; o++) {
        double acc = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++) acc += (double)W[(size_t)o * in + i] * x[i];
        y[o] = acc;
    }
}

// y[o] = sum_i (W[o, i] + s * sum_k Bm[o, k] A[k, i]) x[i] (+ b[o]): the LoRA-merged weight
// (A [r, in], Bm [out, r]); on = 0 or no adapters: ref_linear.
static void ref_linear_lora(double *y, const double *x, const float *W, const float *b, const float *A,
                            const float *Bm, double s, int r, int on, int in, int out) {
    if (!on || r == 0) { ref_linear(y, x, W, b, in, out); return; }
    for (int o = 0; o < out; o++) {
        double acc = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++) {
            double w = W[(size_t)o * in + i];
            for (int k = 0; k < r; k++) w += s * (double)Bm[(size_t)o * r + k] * A[(size_t)k * in + i];
            acc += w * x[i];
        }
        y[o] = acc;
    }
}

// HF rotate_half RoPE on one head vector of size E.
static void ref_rope(double *v, int pos, int E, double theta) {
    int half = E / 2;
    double out[1024];
    for (int i = 0; i < E; i++) {
        int f = i % half;
        double ang = pos * pow(theta, -2.0 * f / E);
        double rot = i < half ? -v[i + half] : v[i - half];
        out[i] = v[i] * cos(ang) + rot * sin(ang);
    }
    memcpy(v, out, sizeof(double) * E);
}

void ref_forward(double *logits, double *attn, const Model *m, const int *tokens, const int *positions,
                 const int *depth, const uint8_t *mask, int T) {
    ref_forward_lora(logits, attn, m, tokens, positions, depth, mask, NULL, T);
}

void ref_forward_lora(double *logits, double *attn, const Model *m, const int *tokens, const int *positions,
                      const int *depth, const uint8_t *mask, const uint8_t *lora, int T) {
    const ModelConfig *c = &m->config;
    const int R = lora ? c->lora_rank : 0;
    const double ls = c->lora_rank > 0 ? (double)c->lora_alpha / c->lora_rank : 0.0;
    const ModelParams *p = &m->params;
    int D = c->dim, F = c->hidden_dim, H = c->n_heads, G = c->n_kv_heads, E = c->head_dim, V = c->vocab_size;
    int L = c->n_layers, QD = H * E, KD = G * E;
    double *x = calloc((size_t)T * D, sizeof(double));
    double *xn = calloc((size_t)D, sizeof(double));
    double *q = calloc((size_t)T * QD, sizeof(double));
    double *k = calloc((size_t)T * KD, sizeof(double));
    double *v = calloc((size_t)T * KD, sizeof(double));
    double *o = calloc((size_t)T * QD, sizeof(double));
    double *tmp = calloc((size_t)(D > F ? D : F) * 2, sizeof(double)); // gate and up, or the o projection
    double *sc = calloc((size_t)T, sizeof(double));
    double *down = calloc((size_t)D, sizeof(double));
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) x[(size_t)t * D + i] = p->embed[(size_t)tokens[t] * D + i];
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < T; t++) {
            ref_rmsnorm(xn, x + (size_t)t * D, p->attn_norm + (size_t)l * D, D, c->rms_eps);
            int on = lora && lora[t];
            size_t RD = (size_t)l * R * D;
            ref_linear_lora(q + (size_t)t * QD, xn, p->wq + (size_t)l * QD * D, p->bq ? p->bq + (size_t)l * QD : NULL,
                            R ? p->lora_qa + RD : NULL, R ? p->lora_qb + (size_t)l * QD * R : NULL, ls, R, on, D, QD);
            ref_linear_lora(k + (size_t)t * KD, xn, p->wk + (size_t)l * KD * D, p->bk ? p->bk + (size_t)l * KD : NULL,
                            R ? p->lora_ka + RD : NULL, R ? p->lora_kb + (size_t)l * KD * R : NULL, ls, R, on, D, KD);
            ref_linear_lora(v + (size_t)t * KD, xn, p->wv + (size_t)l * KD * D, p->bv ? p->bv + (size_t)l * KD : NULL,
                            R ? p->lora_va + RD : NULL, R ? p->lora_vb + (size_t)l * KD * R : NULL, ls, R, on, D, KD);
            int pos = positions ? positions[t] : t;
            for (int h = 0; h < H; h++) ref_rope(q + (size_t)t * QD + h * E, pos, E, c->rope_theta);
            for (int g = 0; g < G; g++) ref_rope(k + (size_t)t * KD + g * E, pos, E, c->rope_theta);
        }
        for (int h = 0; h < H; h++) {
            int g = h / (H / G);
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY;
                for (int j = 0; j < T; j++) {
                    int vis = j <= i && (!depth || depth[j] > l) && (!mask || j == i || mask[(size_t)i * T + j]);
                    if (!vis) { sc[j] = -INFINITY; continue; }
                    double d = 0;
                    for (int e = 0; e < E; e++) d += q[(size_t)i * QD + h * E + e] * k[(size_t)j * KD + g * E + e];
                    sc[j] = d / sqrt((double)E);
                    if (sc[j] > mx) mx = sc[j];
                }
                // A row nobody computes may see nothing: it gets all zeros.
                double sum = 0;
                for (int j = 0; j < T; j++) { sc[j] = sc[j] == -INFINITY ? 0.0 : exp(sc[j] - mx); sum += sc[j]; }
                for (int j = 0; j < T; j++) sc[j] = sum > 0 ? sc[j] / sum : 0.0;
                int computed = !depth || depth[i] > l;
                if (attn)
                    for (int j = 0; j < T; j++)
                        attn[(((size_t)l * H + h) * T + i) * T + j] = computed ? sc[j] : 0.0;
                for (int e = 0; e < E; e++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++)
                        if (sc[j] != 0.0) acc += sc[j] * v[(size_t)j * KD + g * E + e];
                    o[(size_t)i * QD + h * E + e] = acc;
                }
            }
        }
        for (int t = 0; t < T; t++) {
            double *xt = x + (size_t)t * D;
            ref_linear_lora(tmp, o + (size_t)t * QD, p->wo + (size_t)l * D * QD, NULL,
                            R ? p->lora_oa + (size_t)l * R * QD : NULL, R ? p->lora_ob + (size_t)l * D * R : NULL, ls,
                            R, lora && lora[t], QD, D);
            for (int i = 0; i < D; i++) xt[i] += tmp[i];
            ref_rmsnorm(xn, xt, p->mlp_norm + (size_t)l * D, D, c->rms_eps);
            double *gate = tmp, *up = tmp + F;
            ref_linear(gate, xn, p->w_gate + (size_t)l * F * D, NULL, D, F);
            ref_linear(up, xn, p->w_up + (size_t)l * F * D, NULL, D, F);
            for (int i = 0; i < F; i++) gate[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i];
            ref_linear(down, gate, p->w_down + (size_t)l * D * F, NULL, F, D);
            for (int i = 0; i < D; i++) xt[i] += down[i];
        }
    }
    for (int t = 0; t < T; t++) {
        if (depth && depth[t] < L) continue;
        ref_rmsnorm(xn, x + (size_t)t * D, p->final_norm, D, c->rms_eps);
        ref_linear(logits + (size_t)t * V, xn, p->lm_head, NULL, D, V);
    }
    free(x); free(xn); free(q); free(k); free(v); free(o); free(tmp); free(sc); free(down);
}
