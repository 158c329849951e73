// model.c: parameters of the Llama-family decoder and the forward pass.
#include "runtime/model.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/ops.h"

// ---------------------------------------------------------------------------
// Parameters

void model_param_info(const ModelConfig *c, int t, ParamTensorInfo *info) {
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, QD = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t KD = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    memset(info, 0, sizeof *info);
#define T2(name, pl, a, b) do { info->hf_name = name; info->per_layer = pl; info->ndim = 2; \
        info->shape[0] = a; info->shape[1] = b; info->numel = (pl ? L : 1) * (a) * (b); } while (0)
#define T1(name, pl, a) do { info->hf_name = name; info->per_layer = pl; info->ndim = 1; \
        info->shape[0] = a; info->shape[1] = 1; info->numel = (pl ? L : 1) * (a); } while (0)
    switch (t) {
    case 0: T2("model.embed_tokens.weight", 0, V, D); break;
    case 1: T1("model.layers.%d.input_layernorm.weight", 1, D); break;
    case 2: T2("model.layers.%d.self_attn.q_proj.weight", 1, QD, D); break;
    case 3: T2("model.layers.%d.self_attn.k_proj.weight", 1, KD, D); break;
    case 4: T2("model.layers.%d.self_attn.v_proj.weight", 1, KD, D); break;
    case 5: T1("model.layers.%d.self_attn.q_proj.bias", 1, QD); break;
    case 6: T1("model.layers.%d.self_attn.k_proj.bias", 1, KD); break;
    case 7: T1("model.layers.%d.self_attn.v_proj.bias", 1, KD); break;
    case 8: T2("model.layers.%d.self_attn.o_proj.weight", 1, D, QD); break;
    case 9: T1("model.layers.%d.post_attention_layernorm.weight", 1, D); break;
    case 10: T2("model.layers.%d.mlp.gate_proj.weight", 1, F, D); break;
    case 11: T2("model.layers.%d.mlp.up_proj.weight", 1, F, D); break;
    case 12: T2("model.layers.%d.mlp.down_proj.weight", 1, D, F); break;
    case 13: T1("model.norm.weight", 0, D); break;
    case 14: T2("lm_head.weight", 0, V, D); break;
    default: DIE("model_param_info: no tensor %d", t);
    }
#undef T1
#undef T2
    if ((t >= 5 && t <= 7) && !c->attn_bias) info->numel = 0;
    if (t == 14 && c->tie_embeddings) info->numel = 0; // shares embed
}

float **model_param_slot(ModelParams *p, int t) {
    float **slots[MODEL_N_PARAM_TENSORS] = {
        &p->embed, &p->attn_norm, &p->wq, &p->wk, &p->wv, &p->bq, &p->bk, &p->bv,
        &p->wo, &p->mlp_norm, &p->w_gate, &p->w_up, &p->w_down, &p->final_norm, &p->lm_head};
    CHECK(t >= 0 && t < MODEL_N_PARAM_TENSORS, "model_param_slot: no tensor %d", t);
    return slots[t];
}

size_t model_param_count(const ModelConfig *c) {
    size_t n = 0;
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        n += info.numel;
    }
    return n;
}

void model_alloc(Model *m, const ModelConfig *c) {
    memset(m, 0, sizeof *m);
    m->config = *c;
    m->n_params = model_param_count(c);
    m->params_memory = xcalloc(m->n_params, sizeof(float));
    float *at = m->params_memory;
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        *model_param_slot(&m->params, t) = info.numel ? at : NULL;
        at += info.numel;
    }
    if (c->tie_embeddings) m->params.lm_head = m->params.embed;
    int half = c->head_dim / 2;
    m->rope_inv_freq = xmalloc((size_t)half * sizeof(float));
    for (int i = 0; i < half; i++)
        m->rope_inv_freq[i] = (float)pow((double)c->rope_theta, -2.0 * i / (double)c->head_dim);
}

void model_init_random(Model *m, const ModelConfig *c, uint64_t seed, float std) {
    model_alloc(m, c);
    Rng rng;
    rng_seed(&rng, seed);
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        float *p = *model_param_slot(&m->params, t);
        int is_norm = (t == 1 || t == 9 || t == 13);
        for (size_t i = 0; i < info.numel; i++)
            p[i] = is_norm ? 1.0f + 0.1f * rng_normal(&rng) : std * rng_normal(&rng);
    }
}

void model_free(Model *m) {
    free(m->params_memory);
    free(m->rope_inv_freq);
    memset(m, 0, sizeof *m);
}

// ---------------------------------------------------------------------------
// Forward pass
//
// The batch is packed: the new tokens of sequence 0, then of sequence 1, ...
// Layer by layer, the rows of the activation matrix are the tokens still
// computed at that layer (depth > l), in packed order; tokens whose depth is
// reached are dropped (their hidden state is gone, their KV stays only in the
// layers below). All projections are one sgemm over all rows of all sequences;
// attention runs per (sequence, head, block of queries) in parallel.

enum { ATTN_QUERY_BLOCK = 64 };

void forward_scratch_free(ForwardScratch *s) {
    free(s->memory);
    memset(s, 0, sizeof *s);
}

static float *scratch_take(float **at, size_t n) {
    float *p = *at;
    *at += (n + 15) & ~(size_t)15; // keep every buffer 64-byte aligned relative to the base
    return p;
}

// The per-call bookkeeping of the packed batch (ints), carved from one allocation.
typedef struct {
    int *seq;       // [T] sequence of each packed token
    int *local;     // [T] index among its sequence's new tokens
    int *order;     // [T] sequence index (0 = first token ever fed to the cache)
    int *pos;       // [T] RoPE position
    int *depth;     // [T] layers the token is computed in
    int *row_tok;   // [T] packed token of each active row
    int32_t *row_order; // [T] sequence index of each active row (the hook's q_tok)
    int *row_pos;   // [T] RoPE position of each active row
    int *row_start; // [S+1] first active row of each sequence
    int *grp_first; // [S+1] first sequence of each attention group (see attention_group)
    int *task_start;// [S+1] first attention task of each group
    int n_groups;
    int grp_block;  // active rows per task of a shared-parent group
    int32_t *k_tok; // [n_threads * max_keys] key sequence indices for the attention hook
} BatchIndex;

// One attention task: sequence b, head h, queries [i0, i1) of its active rows.
static void attention_block(float *att, const float *q, float *scores, int32_t *k_tok_buf,
                            const Model *m, const ForwardBatch *fb, const BatchIndex *bi,
                            int l, int b, int h, int i0, int i1) {
    const ModelConfig *c = &m->config;
    const size_t E = (size_t)c->head_dim, QD = (size_t)c->n_heads * E;
    const int G = c->n_kv_heads, g = h / (c->n_heads / G);
    const KVCache *own = fb->caches[b], *par = own->parent;
    const int P = par ? par->len[l * G + g] : 0;
    const int O = own->len[l * G + g];
    const int r0 = bi->row_start[b], nq = bi->row_start[b + 1] - r0;
    const int n_old = O - nq;            // own entries from earlier calls
    const int n_own = n_old + i1;        // own keys any query of this block can see
    const int nk = P + n_own, bq = i1 - i0;
    const float scale = 1.0f / sqrtf((float)E);
    const float *qb = q + (size_t)(r0 + i0) * QD + (size_t)h * E;
    float *ob = att + (size_t)(r0 + i0) * QD + (size_t)h * E;

    // scores [bq, nk] = q_blk [bq, E] . [K_parent; K_own]^T
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, P, (int)E, scale, qb, (int)QD,
                    kvcache_k(par, l, g), (int)E, 0.0f, scores, nk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, n_own, (int)E, scale, qb, (int)QD,
                kvcache_k(own, l, g), (int)E, 0.0f, scores + P, nk);

    // Mask the new keys a query may not see: later ones (not even touched:
    // the softmax runs over the row's visible prefix and the rest is zeroed),
    // and earlier ones the mask forbids.
    const uint8_t *mask = fb->mask ? fb->mask[b] : NULL;
    int n_new_b = fb->n_new[b];
    for (int i = i0; i < i1; i++) {
        float *row = scores + (size_t)(i - i0) * nk;
        int n_vis = P + n_old + i + 1;
        if (mask) {
            int qi = bi->local[bi->row_tok[r0 + i]];
            for (int j = 0; j < i; j++) {
                int kj = bi->local[bi->row_tok[r0 + j]];
                if (!mask[(size_t)qi * (size_t)n_new_b + (size_t)kj]) row[P + n_old + j] = -INFINITY;
            }
        }
        softmax_row(row, (size_t)n_vis);
        memset(row + n_vis, 0, (size_t)(nk - n_vis) * sizeof(float));
    }

    if (fb->attn_hook) {
        // Hook runs use one block per (sequence, head): all rows at once.
        const int32_t *pt = par ? kvcache_tok(par, l, g) : NULL, *ot = kvcache_tok(own, l, g);
        for (int j = 0; j < P; j++) k_tok_buf[j] = pt[j];
        for (int j = 0; j < n_own; j++) k_tok_buf[P + j] = ot[j];
        fb->attn_hook(fb->attn_hook_ctx, l, b, h, bq, bi->row_order + r0 + i0, nk, k_tok_buf, scores);
    }

    // out [bq, E] = P . V
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, (int)E, P, 1.0f, scores, nk,
                    kvcache_v(par, l, g), (int)E, 0.0f, ob, (int)QD);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, (int)E, n_own, 1.0f, scores + P, nk,
                kvcache_v(own, l, g), (int)E, P > 0 ? 1.0f : 0.0f, ob, (int)QD);
}

// Beams of one user share the prompt's cache as a read-only parent. Attending
// to it beam by beam would be one matrix-vector product per (beam, head), each
// reading the whole parent: decode time would grow with beams x prompt length.
// Instead, one task takes a run of sequences b0..b1-1 with the same parent,
// one KV head g and a block [ra, rb) of their active rows (consecutive, since
// rows are packed by sequence): the queries of all those rows and of the
// hpg = H/G query heads that read kv head g are stacked into one matrix, so
// the parent's keys and values are read by one sgemm each. Each row's own keys
// (its generated tokens, a handful) are plain dot products. The softmax runs
// jointly over [parent | own], so the result is exactly that of attention_block.
static void attention_group(float *att, const float *q, float *scores, float *qbuf, float *obuf, const Model *m,
                            const ForwardBatch *fb, const BatchIndex *bi, int l, int g, int ra, int rb) {
    const ModelConfig *c = &m->config;
    const size_t E = (size_t)c->head_dim, QD = (size_t)c->n_heads * E;
    const int G = c->n_kv_heads, hpg = c->n_heads / G, nr = rb - ra, M = nr * hpg;
    const int b_first = bi->seq[bi->row_tok[ra]], b_last = bi->seq[bi->row_tok[rb - 1]];
    const KVCache *par = fb->caches[b_first]->parent;
    const int P = par->len[l * G + g];
    const float scale = 1.0f / sqrtf((float)E);
    int max_own = 0;
    for (int b = b_first; b <= b_last; b++) {
        int O = fb->caches[b]->len[l * G + g];
        max_own = O > max_own ? O : max_own;
    }
    const size_t ld = (size_t)P + (size_t)max_own;

    // qbuf [M, E]: row j*nr + (r - ra) is query head g*hpg + j of active row r.
    for (int j = 0; j < hpg; j++)
        for (int r = ra; r < rb; r++)
            memcpy(qbuf + ((size_t)j * nr + (size_t)(r - ra)) * E, q + (size_t)r * QD + (size_t)(g * hpg + j) * E,
                   E * sizeof(float));

    // scores[:, :P] = qbuf . K_parent^T, all rows at once.
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, P, (int)E, scale, qbuf, (int)E, kvcache_k(par, l, g),
                    (int)E, 0.0f, scores, (int)ld);

    // Own keys row by row (causal among the sequence's new tokens, the mask), then the joint softmax.
    for (int j = 0; j < hpg; j++) {
        for (int r = ra; r < rb; r++) {
            int b = bi->seq[bi->row_tok[r]];
            const KVCache *own = fb->caches[b];
            int r0 = bi->row_start[b], nq = bi->row_start[b + 1] - r0, i = r - r0;
            int n_old = own->len[l * G + g] - nq, n_vis_own = n_old + i + 1;
            const float *qr = qbuf + ((size_t)j * nr + (size_t)(r - ra)) * E, *ko = kvcache_k(own, l, g);
            float *row = scores + ((size_t)j * nr + (size_t)(r - ra)) * ld;
            for (int t = 0; t < n_vis_own; t++) {
                float dot = 0.0f;
                for (size_t d = 0; d < E; d++) dot += qr[d] * ko[(size_t)t * E + d];
                row[P + t] = scale * dot;
            }
            const uint8_t *mask = fb->mask ? fb->mask[b] : NULL;
            if (mask) {
                int qi = bi->local[bi->row_tok[r]], n_new_b = fb->n_new[b];
                for (int t = 0; t < i; t++) {
                    int kj = bi->local[bi->row_tok[r0 + t]];
                    if (!mask[(size_t)qi * (size_t)n_new_b + (size_t)kj]) row[P + n_old + t] = -INFINITY;
                }
            }
            softmax_row(row, (size_t)(P + n_vis_own));
            memset(row + P + n_vis_own, 0, (ld - (size_t)(P + n_vis_own)) * sizeof(float));
        }
    }

    // obuf [M, E] = probs[:, :P] . V_parent (one sgemm), then each row's own values.
    if (P > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, (int)E, P, 1.0f, scores, (int)ld,
                    kvcache_v(par, l, g), (int)E, 0.0f, obuf, (int)E);
    else
        memset(obuf, 0, (size_t)M * E * sizeof(float));
    for (int j = 0; j < hpg; j++) {
        for (int r = ra; r < rb; r++) {
            int b = bi->seq[bi->row_tok[r]];
            const KVCache *own = fb->caches[b];
            int r0 = bi->row_start[b], nq = bi->row_start[b + 1] - r0, i = r - r0;
            int n_vis_own = own->len[l * G + g] - nq + i + 1;
            const float *row = scores + ((size_t)j * nr + (size_t)(r - ra)) * ld + P, *vo = kvcache_v(own, l, g);
            float *orow = obuf + ((size_t)j * nr + (size_t)(r - ra)) * E;
            for (int t = 0; t < n_vis_own; t++)
                for (size_t d = 0; d < E; d++) orow[d] += row[t] * vo[(size_t)t * E + d];
            memcpy(att + (size_t)r * QD + (size_t)(g * hpg + j) * E, orow, E * sizeof(float));
        }
    }
}

// Validates the batch against the model and the caches.
static int forward_check(const Model *m, const ForwardBatch *fb, Error *e) {
    const ModelConfig *c = &m->config;
    if (fb->n_seqs <= 0) return err_set(e, "forward: empty batch");
    size_t at = 0;
    for (int b = 0; b < fb->n_seqs; b++) {
        const KVCache *kv = fb->caches[b];
        if (!kv) return err_set(e, "forward: sequence %d has no KV cache", b);
        if (kv->n_layers != c->n_layers || kv->n_kv_heads != c->n_kv_heads || kv->head_dim != c->head_dim)
            return err_set(e, "forward: sequence %d: KV cache shape does not match the model", b);
        if (fb->n_new[b] < 0) return err_set(e, "forward: sequence %d: negative token count", b);
        if (fb->n_new[b] == 0 && fb->logits_mode == LOGITS_LAST)
            return err_set(e, "forward: sequence %d has no new token to take logits from", b);
        for (int i = 0; i < fb->n_new[b]; i++, at++) {
            int t = fb->tokens[at];
            if (t < 0 || t >= c->vocab_size)
                return err_set(e, "forward: sequence %d token %d: id %d outside the vocabulary [0, %d)", b, i, t,
                               c->vocab_size);
            int d = fb->depth ? fb->depth[at] : c->n_layers;
            if (d < 1 || d > c->n_layers)
                return err_set(e, "forward: sequence %d token %d: depth %d outside 1..%d", b, i, d, c->n_layers);
            if (fb->positions && fb->positions[at] < 0)
                return err_set(e, "forward: sequence %d token %d: negative position", b, i);
        }
        if (fb->logits_mode == LOGITS_LAST && fb->depth && fb->depth[at - 1] != c->n_layers)
            return err_set(e, "forward: sequence %d: its last token stops before the last layer, so it has no logits", b);
        // Capacity: every layer must hold the tokens that reach it.
        for (int l = 0; l < c->n_layers; l++) {
            int need = 0;
            for (size_t i = at - (size_t)fb->n_new[b]; i < at; i++) need += (fb->depth ? fb->depth[i] : c->n_layers) > l;
            for (int g = 0; g < c->n_kv_heads; g++)
                if (kv->len[l * c->n_kv_heads + g] + need > kv->cap[l])
                    return err_set(e, "forward: sequence %d: KV cache of layer %d is full (%d held + %d new > capacity %d)",
                                   b, l, kv->len[l * c->n_kv_heads + g], need, kv->cap[l]);
        }
    }
    return 0;
}

int model_forward(float *logits, Model *m, const ForwardBatch *fb, ForwardScratch *s, Error *e) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    if (forward_check(m, fb, e)) return -1;
    const int S = fb->n_seqs, L = c->n_layers, G = c->n_kv_heads, H = c->n_heads;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, E = (size_t)c->head_dim, V = (size_t)c->vocab_size;
    const size_t QD = (size_t)H * E, KD = (size_t)G * E;
    size_t T = 0;
    for (int b = 0; b < S; b++) T += (size_t)fb->n_new[b];

    // Longest key list any attention task sees, and the number of tasks.
    size_t max_keys = 1;
    for (int b = 0; b < S; b++) {
        const KVCache *kv = fb->caches[b];
        for (int l = 0; l < L; l++) {
            size_t par = 0;
            if (kv->parent)
                for (int g = 0; g < G; g++) {
                    size_t pl = (size_t)kv->parent->len[l * G + g];
                    par = pl > par ? pl : par;
                }
            size_t k = par + (size_t)kv->cap[l];
            max_keys = k > max_keys ? k : max_keys;
        }
    }
    const int qblock = fb->attn_hook ? (int)(T > 0 ? T : 1) : ATTN_QUERY_BLOCK;
    const int n_threads = omp_get_max_threads();

    // Scratch: floats, then the int bookkeeping after them.
    size_t nf = 0, ni;
    // A shared-parent group task stacks hpg heads of up to grp_block rows each.
    const int hpg = H / G, grp_block = qblock / hpg > 0 ? qblock / hpg : 1;
    const size_t task_rows = (size_t)(qblock > hpg ? qblock : hpg);
    size_t score_floats = task_rows * max_keys + 2 * task_rows * E; // scores, then qbuf and obuf
#define F16(n) (((n) + 15) & ~(size_t)15)
    nf += 2 * F16(T * D) + F16(T * QD) + 2 * F16(T * KD) + F16(T * QD) + 2 * F16(T * F);
    nf += (size_t)n_threads * F16(score_floats);
    ni = 8 * T + 3 * ((size_t)S + 1) + (size_t)n_threads * max_keys;
    size_t need = nf + ni + 16;
#undef F16
    if (s->capacity < need) {
        free(s->memory);
        s->memory = xmalloc(need * sizeof(float));
        s->capacity = need;
    }
    float *at = s->memory;
    float *x = scratch_take(&at, T * D);     // [rows, D] residual stream
    float *xn = scratch_take(&at, T * D);    // [rows, D] normalised
    float *q = scratch_take(&at, T * QD);    // [rows, H*E]
    float *k = scratch_take(&at, T * KD);    // [rows, G*E]
    float *v = scratch_take(&at, T * KD);    // [rows, G*E]
    float *att = scratch_take(&at, T * QD);  // [rows, H*E] attention output
    float *h1 = scratch_take(&at, T * F);    // [rows, F] gate, then silu(gate)*up
    float *h2 = scratch_take(&at, T * F);    // [rows, F] up
    float *scores = scratch_take(&at, (size_t)n_threads * ((score_floats + 15) & ~(size_t)15));
    int *ip = (int *)at;
    BatchIndex bi;
    bi.seq = ip; ip += T;
    bi.local = ip; ip += T;
    bi.order = ip; ip += T;
    bi.pos = ip; ip += T;
    bi.depth = ip; ip += T;
    bi.row_tok = ip; ip += T;
    bi.row_order = (int32_t *)ip; ip += T;
    bi.row_pos = ip; ip += T;
    bi.row_start = ip; ip += S + 1;
    bi.grp_first = ip; ip += S + 1;
    bi.task_start = ip; ip += S + 1;
    bi.grp_block = grp_block;
    // Groups: runs of consecutive sequences reading the same parent (beams of one
    // prompt) attend together; any other sequence is a group of its own. A hook
    // wants per-sequence probabilities, so it turns grouping off.
    bi.n_groups = 0;
    for (int b = 0; b < S; b++) {
        const KVCache *par = fb->caches[b]->parent;
        if (b == 0 || !par || fb->attn_hook || fb->caches[b - 1]->parent != par) bi.grp_first[bi.n_groups++] = b;
    }
    bi.grp_first[bi.n_groups] = S;
    bi.k_tok = (int32_t *)ip;

    // Packed bookkeeping and the embedding lookup.
    size_t t = 0;
    for (int b = 0; b < S; b++) {
        for (int i = 0; i < fb->n_new[b]; i++, t++) {
            bi.seq[t] = b;
            bi.local[t] = i;
            bi.order[t] = fb->caches[b]->n_seen + i;
            bi.pos[t] = fb->positions ? fb->positions[t] : bi.order[t];
            bi.depth[t] = fb->depth ? fb->depth[t] : L;
            bi.row_tok[t] = (int)t;
            memcpy(x + t * D, w->embed + (size_t)fb->tokens[t] * D, D * sizeof(float));
        }
    }
    size_t rows = T;
    double flops = 0.0;

    for (int l = 0; l < L; l++) {
        // Drop the rows of tokens whose depth is reached (stable compaction).
        size_t kept = 0;
        for (size_t r = 0; r < rows; r++) {
            int tok = bi.row_tok[r];
            if (bi.depth[tok] <= l) continue;
            if (kept != r) memmove(x + kept * D, x + r * D, D * sizeof(float));
            bi.row_tok[kept++] = tok;
        }
        rows = kept;
        for (int b = 0; b <= S; b++) bi.row_start[b] = 0;
        for (size_t r = 0; r < rows; r++) {
            bi.row_start[bi.seq[bi.row_tok[r]] + 1]++;
            bi.row_order[r] = bi.order[bi.row_tok[r]];
        }
        for (int b = 0; b < S; b++) bi.row_start[b + 1] += bi.row_start[b];
        bi.task_start[0] = 0;
        for (int gi = 0; gi < bi.n_groups; gi++) {
            int b0 = bi.grp_first[gi], b1 = bi.grp_first[gi + 1];
            int nq = bi.row_start[b1] - bi.row_start[b0];
            int grouped = fb->caches[b0]->parent && !fb->attn_hook;
            bi.task_start[gi + 1] = bi.task_start[gi] + (grouped ? G * ((nq + grp_block - 1) / grp_block)
                                                                  : H * ((nq + qblock - 1) / qblock));
        }
        if (rows == 0) continue;

        // Attention block: norm, q/k/v projections, RoPE.
        size_t lD = (size_t)l * D;
        rmsnorm_forward(xn, x, w->attn_norm + lD, rows, D, c->rms_eps);
        matmul_forward(q, xn, w->wq + (size_t)l * QD * D, w->bq ? w->bq + (size_t)l * QD : NULL, rows, D, QD, 0.0f);
        matmul_forward(k, xn, w->wk + (size_t)l * KD * D, w->bk ? w->bk + (size_t)l * KD : NULL, rows, D, KD, 0.0f);
        matmul_forward(v, xn, w->wv + (size_t)l * KD * D, w->bv ? w->bv + (size_t)l * KD : NULL, rows, D, KD, 0.0f);
        flops += 2.0 * (double)rows * (double)D * (double)(QD + 2 * KD);
        for (size_t r = 0; r < rows; r++) bi.row_pos[r] = bi.pos[bi.row_tok[r]];
        rope_forward(q, bi.row_pos, m->rope_inv_freq, rows, (size_t)H, E, QD);
        rope_forward(k, bi.row_pos, m->rope_inv_freq, rows, (size_t)G, E, KD);

        // Append the new keys/values to each sequence's cache (rows of a sequence are in order).
        for (int b = 0; b < S; b++) {
            KVCache *kv = fb->caches[b];
            for (int r = bi.row_start[b]; r < bi.row_start[b + 1]; r++) {
                for (int g = 0; g < G; g++) {
                    int *len = &kv->len[l * G + g];
                    memcpy(kvcache_k(kv, l, g) + (size_t)*len * E, k + (size_t)r * KD + (size_t)g * E, E * sizeof(float));
                    memcpy(kvcache_v(kv, l, g) + (size_t)*len * E, v + (size_t)r * KD + (size_t)g * E, E * sizeof(float));
                    kvcache_tok(kv, l, g)[*len] = bi.order[bi.row_tok[r]];
                    (*len)++;
                }
            }
        }

        // Attention per (sequence, head, query block), or per (shared-parent group,
        // kv head, row block), in parallel unless a hook listens.
        int n_tasks = bi.task_start[bi.n_groups];
        #pragma omp parallel for schedule(dynamic, 1) if (!fb->attn_hook)
        for (int task = 0; task < n_tasks; task++) {
            int gi = 0;
            while (bi.task_start[gi + 1] <= task) gi++;
            int b0 = bi.grp_first[gi], b1 = bi.grp_first[gi + 1], j = task - bi.task_start[gi];
            int th = omp_get_thread_num();
            float *sc = scores + (size_t)th * ((score_floats + 15) & ~(size_t)15);
            if (fb->caches[b0]->parent && !fb->attn_hook) {
                int ra0 = bi.row_start[b0], nq = bi.row_start[b1] - ra0;
                int nb = (nq + grp_block - 1) / grp_block, g = j / nb, blk = j % nb;
                int ra = ra0 + blk * grp_block, rb = ra + grp_block < ra0 + nq ? ra + grp_block : ra0 + nq;
                float *qbuf = sc + task_rows * max_keys, *obuf = qbuf + task_rows * E;
                attention_group(att, q, sc, qbuf, obuf, m, fb, &bi, l, g, ra, rb);
                continue;
            }
            int b = b0;
            int nq = bi.row_start[b + 1] - bi.row_start[b];
            int nb = (nq + qblock - 1) / qblock;
            int h = j / nb, blk = j % nb;
            int i0 = blk * qblock, i1 = i0 + qblock < nq ? i0 + qblock : nq;
            attention_block(att, q, sc, bi.k_tok + (size_t)th * max_keys, m, fb, &bi, l, b, h, i0, i1);
        }
        for (int b = 0; b < S; b++) {
            const KVCache *kv = fb->caches[b];
            int nq = bi.row_start[b + 1] - bi.row_start[b];
            for (int g = 0; g < G; g++) {
                double before = (double)(kv->len[l * G + g] - nq) + (kv->parent ? kv->parent->len[l * G + g] : 0);
                // each query sees the older keys and the new ones up to itself: 2 products of E each
                flops += 4.0 * (double)E * (double)(H / G) * ((double)nq * before + 0.5 * (double)nq * (nq + 1));
            }
        }

        // Output projection into the residual stream, then the MLP block.
        matmul_forward(x, att, w->wo + (size_t)l * D * QD, NULL, rows, QD, D, 1.0f);
        rmsnorm_forward(xn, x, w->mlp_norm + lD, rows, D, c->rms_eps);
        matmul_forward(h1, xn, w->w_gate + (size_t)l * F * D, NULL, rows, D, F, 0.0f);
        matmul_forward(h2, xn, w->w_up + (size_t)l * F * D, NULL, rows, D, F, 0.0f);
        swiglu_forward(h1, h1, h2, rows, F);
        matmul_forward(x, h1, w->w_down + (size_t)l * D * F, NULL, rows, F, D, 1.0f);
        flops += 2.0 * (double)rows * (double)D * (double)QD + 6.0 * (double)rows * (double)D * (double)F;
    }
    for (int b = 0; b < S; b++) fb->caches[b]->n_seen += fb->n_new[b];

    // Logits from the final norm and the output head.
    if (fb->logits_mode == LOGITS_LAST) {
        // The last row of each sequence is its last token (checked: depth N).
        for (int b = 0; b < S; b++)
            memcpy(xn + (size_t)b * D, x + (size_t)(bi.row_start[b + 1] - 1) * D, D * sizeof(float));
        rmsnorm_forward(xn, xn, w->final_norm, (size_t)S, D, c->rms_eps);
        matmul_forward(logits, xn, w->lm_head, NULL, (size_t)S, D, V, 0.0f);
        flops += 2.0 * (double)S * (double)D * (double)V;
    } else if (fb->logits_mode == LOGITS_ALL) {
        rmsnorm_forward(xn, x, w->final_norm, rows, D, c->rms_eps);
        matmul_forward(logits, xn, w->lm_head, NULL, rows, D, V, 0.0f);
        flops += 2.0 * (double)rows * (double)D * (double)V;
        // Spread the computed rows to their tokens' places, last first (targets never precede sources).
        for (size_t r = rows; r-- > 0;) {
            size_t tok = (size_t)bi.row_tok[r];
            if (tok != r) memmove(logits + tok * V, logits + r * V, V * sizeof(float));
        }
        size_t r = 0;
        for (size_t tk = 0; tk < T; tk++) {
            if (r < rows && (size_t)bi.row_tok[r] == tk) { r++; continue; }
            for (size_t i = 0; i < V; i++) logits[tk * V + i] = NAN;
        }
    }
    s->last_flops = flops;
    return 0;
}

// ---------------------------------------------------------------------------
// Vocabulary growth (see model.h)

void model_grow_vocab(Model *out, const Model *in, int new_vocab, uint64_t seed) {
    CHECK(new_vocab >= in->config.vocab_size, "model_grow_vocab: %d tokens < %d", new_vocab, in->config.vocab_size);
    ModelConfig c = in->config;
    c.vocab_size = new_vocab;
    model_alloc(out, &c);
    Rng r;
    rng_seed(&r, seed ^ 0x6E657776ull);
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo a, b;
        model_param_info(&in->config, t, &a);
        model_param_info(&c, t, &b);
        if (b.numel == 0) continue;
        const float *src = *model_param_slot((ModelParams *)&in->params, t);
        float *dst = *model_param_slot(&out->params, t);
        memcpy(dst, src, a.numel * sizeof(float));
        if (b.numel > a.numel) { // embed or untied lm_head: [V, D] rows
            double ss = 0;
            for (size_t i = 0; i < a.numel; i++) ss += (double)src[i] * src[i];
            float s = a.numel ? (float)sqrt(ss / (double)a.numel) : 0.02f;
            for (size_t i = a.numel; i < b.numel; i++) dst[i] = s * rng_normal(&r);
        }
    }
}
