// model.c: parameters of the Llama-family decoder and the forward pass.
#include "runtime/model.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/block.h"
#include "runtime/ops.h"

// ---------------------------------------------------------------------------
// Parameters

void model_param_info(const ModelConfig *c, int t, ParamTensorInfo *info) {
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, QD = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t KD = (size_t)c->n_kv_heads * (size_t)c->head_dim, R = (size_t)(c->lora_rank > 0 ? c->lora_rank : 0);
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
    case 15: T2("model.layers.%d.self_attn.q_proj.lora_A.weight", 1, R, D); break;
    case 16: T2("model.layers.%d.self_attn.q_proj.lora_B.weight", 1, QD, R); break;
    case 17: T2("model.layers.%d.self_attn.k_proj.lora_A.weight", 1, R, D); break;
    case 18: T2("model.layers.%d.self_attn.k_proj.lora_B.weight", 1, KD, R); break;
    case 19: T2("model.layers.%d.self_attn.v_proj.lora_A.weight", 1, R, D); break;
    case 20: T2("model.layers.%d.self_attn.v_proj.lora_B.weight", 1, KD, R); break;
    case 21: T2("model.layers.%d.self_attn.o_proj.lora_A.weight", 1, R, QD); break;
    case 22: T2("model.layers.%d.self_attn.o_proj.lora_B.weight", 1, D, R); break;
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
        &p->wo, &p->mlp_norm, &p->w_gate, &p->w_up, &p->w_down, &p->final_norm, &p->lm_head,
        &p->lora_qa, &p->lora_qb, &p->lora_ka, &p->lora_kb, &p->lora_va, &p->lora_vb, &p->lora_oa, &p->lora_ob};
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
//
// Steps of one call: forward_check, forward_layout (scratch), batch_index_build
// (packed bookkeeping, embeddings), then per layer compact_rows (the layer
// plan), block_qkv_forward, kv_append, forward_attention, the residual and MLP
// (block.h); last gather_logits.

enum { ATTN_QUERY_BLOCK = 128 };
enum { FUSED_MAX_ROWS = 8 }; // a layer of at most this many rows runs as layer_fused

void forward_scratch_free(ForwardScratch *s) {
    free(s->memory);
    memset(s, 0, sizeof *s);
}

static float *scratch_take(float **at, size_t n) {
    float *p = *at;
    *at += (n + 15) & ~(size_t)15; // keep every buffer 64-byte aligned relative to the base
    return p;
}

// The per-call bookkeeping of the packed batch (ints), carved from the scratch.
typedef struct {
    size_t T;       // packed tokens
    int *seq;       // [T] sequence of each packed token
    int *local;     // [T] index among its sequence's new tokens
    int *order;     // [T] sequence index (0 = first token ever fed to the cache)
    int *pos;       // [T] RoPE position
    int *depth;     // [T] layers the token is computed in
    size_t rows;    // active rows at the current layer
    int *row_tok;   // [T] packed token of each active row
    int *row_local; // [T] index of each active row among its sequence's new tokens (its mask index)
    int32_t *row_order; // [T] sequence index of each active row (the hook's q_tok)
    int *row_pos;   // [T] RoPE position of each active row
    int *row_start; // [S+1] first active row of each sequence
    int *grp_first; // [S+1] first sequence of each attention group (see group_task)
    int *task_start;// [S+1] first attention task of each group
    int n_groups;
    int qblock;     // active rows per task of a lone sequence (all of them when a hook listens)
    int grp_block;  // active rows per task of a shared-parent group
    size_t max_keys;// longest key list any attention task sees
    int32_t *k_tok; // [n_threads * max_keys] key sequence indices for the attention hook
    uint8_t *row_lora; // [T] 1: the active row adds the LoRA term (ForwardBatch.lora)
} BatchIndex;

// The float buffers of one call, carved from the scratch.
typedef struct {
    float *x;       // [rows, D] residual stream
    float *xn;      // [rows, D] normalised
    float *q;       // [rows, H*E]
    float *k, *v;   // [rows, G*E]
    float *att;     // [rows, H*E] attention output
    float *h1;      // [rows, F] gate, then silu(gate)*up
    float *h2;      // [rows, F] up
    float *xn_own;  // [n_threads, min(T, FUSED_MAX_ROWS) * D] each thread's normalised rows (layer_fused)
    float *lora_u;  // [3, rows, r] LoRA's low-rank inputs (compress500x; r = 0 otherwise)
    float *scores;  // [n_threads, score_stride] attention work of each thread
    size_t score_stride;
    size_t xn_stride;
    size_t task_rows; // query rows of the largest attention task
} ForwardBufs;

// Sizes the scratch for the batch (grown when needed) and carves it.
static void forward_layout(BatchIndex *bi, ForwardBufs *fw, ForwardScratch *s, const Model *m,
                           const ForwardBatch *fb) {
    const ModelConfig *c = &m->config;
    const int S = fb->n_seqs, L = c->n_layers, G = c->n_kv_heads, H = c->n_heads;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, E = (size_t)c->head_dim;
    const size_t QD = (size_t)H * E, KD = (size_t)G * E;
    size_t T = 0;
    for (int b = 0; b < S; b++) T += (size_t)fb->n_new[b];

    // Longest key list any attention task sees.
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
    // A hooked call takes each (sequence, head) as one block: the longest sequence's rows.
    int max_new = 1;
    for (int b = 0; b < S; b++) max_new = fb->n_new[b] > max_new ? fb->n_new[b] : max_new;
    const int qblock = fb->attn_hook ? max_new : ATTN_QUERY_BLOCK;
    const int n_threads = omp_get_max_threads();
    // A shared-parent group task stacks hpg heads of up to grp_block rows each.
    const int hpg = H / G, grp_block = qblock / hpg > 0 ? qblock / hpg : 1;
    const size_t task_rows = (size_t)(qblock > hpg ? qblock : hpg);
    size_t score_floats = task_rows * max_keys + 2 * task_rows * E; // scores, then qbuf and obuf
    if (fb->mask && !fb->attn_hook) { // or the masked op's work (seq_task)
        size_t w = attention_cached_sparse_work((size_t)qblock, max_keys, E);
        score_floats = w > score_floats ? w : score_floats;
    }
#define F16(n) (((n) + 15) & ~(size_t)15)
    size_t nf = 2 * F16(T * D) + F16(T * QD) + 2 * F16(T * KD) + F16(T * QD) + 2 * F16(T * F);
    nf += (size_t)n_threads * F16(score_floats);
    const size_t own_rows = T < FUSED_MAX_ROWS ? T : FUSED_MAX_ROWS;
    nf += (size_t)n_threads * F16(own_rows * D);
    const size_t R = fb->lora ? (size_t)c->lora_rank : 0;
    nf += F16(3 * T * R);
    size_t ni = 10 * T + 3 * ((size_t)S + 1) + (size_t)n_threads * max_keys; // row_lora: T bytes in T ints
    size_t need = nf + ni + 16;
    fw->score_stride = F16(score_floats);
    fw->xn_stride = F16(own_rows * D);
#undef F16
    if (s->capacity < need) {
        free(s->memory);
        s->memory = xmalloc(need * sizeof(float));
        s->capacity = need;
    }
    float *at = s->memory;
    fw->x = scratch_take(&at, T * D);
    fw->xn = scratch_take(&at, T * D);
    fw->q = scratch_take(&at, T * QD);
    fw->k = scratch_take(&at, T * KD);
    fw->v = scratch_take(&at, T * KD);
    fw->att = scratch_take(&at, T * QD);
    fw->h1 = scratch_take(&at, T * F);
    fw->h2 = scratch_take(&at, T * F);
    fw->scores = scratch_take(&at, (size_t)n_threads * fw->score_stride);
    fw->xn_own = scratch_take(&at, (size_t)n_threads * fw->xn_stride);
    fw->lora_u = scratch_take(&at, 3 * T * R);
    fw->task_rows = task_rows;
    int *ip = (int *)at;
    bi->T = T;
    bi->seq = ip; ip += T;
    bi->local = ip; ip += T;
    bi->order = ip; ip += T;
    bi->pos = ip; ip += T;
    bi->depth = ip; ip += T;
    bi->row_tok = ip; ip += T;
    bi->row_local = ip; ip += T;
    bi->row_order = (int32_t *)ip; ip += T;
    bi->row_pos = ip; ip += T;
    bi->row_start = ip; ip += S + 1;
    bi->grp_first = ip; ip += S + 1;
    bi->task_start = ip; ip += S + 1;
    bi->row_lora = (uint8_t *)ip; ip += T;
    bi->k_tok = (int32_t *)ip;
    bi->qblock = qblock;
    bi->grp_block = grp_block;
    bi->max_keys = max_keys;
}

// Fills the packed bookkeeping (every token active: rows = T) and the
// attention groups, and looks up the embeddings into x [T, D].
static void batch_index_build(BatchIndex *bi, float *x, const Model *m, const ForwardBatch *fb) {
    const int S = fb->n_seqs, L = m->config.n_layers;
    const size_t D = (size_t)m->config.dim;
    // Groups: runs of consecutive sequences reading the same parent (beams of one
    // prompt) attend together; any other sequence is a group of its own. A hook
    // wants per-sequence probabilities, so it turns grouping off.
    bi->n_groups = 0;
    for (int b = 0; b < S; b++) {
        const KVCache *par = fb->caches[b]->parent;
        if (b == 0 || !par || fb->attn_hook || fb->caches[b - 1]->parent != par) bi->grp_first[bi->n_groups++] = b;
    }
    bi->grp_first[bi->n_groups] = S;
    size_t t = 0;
    for (int b = 0; b < S; b++) {
        for (int i = 0; i < fb->n_new[b]; i++, t++) {
            bi->seq[t] = b;
            bi->local[t] = i;
            bi->order[t] = fb->caches[b]->n_seen + i;
            bi->pos[t] = fb->positions ? fb->positions[t] : bi->order[t];
            bi->depth[t] = fb->depth ? fb->depth[t] : L;
            bi->row_tok[t] = (int)t;
            memcpy(x + t * D, m->params.embed + (size_t)fb->tokens[t] * D, D * sizeof(float));
        }
    }
    bi->rows = t;
}

// The layer plan at layer l: drops the rows of tokens whose depth is reached
// from x [rows, D] (stable compaction), then indexes the rows kept: per
// sequence (row_start), per row, and the attention tasks of each group.
static void compact_rows(BatchIndex *bi, float *x, const ForwardBatch *fb, const ModelConfig *c, int l) {
    const int S = fb->n_seqs, H = c->n_heads, G = c->n_kv_heads;
    const size_t D = (size_t)c->dim;
    size_t kept = 0;
    for (size_t r = 0; r < bi->rows; r++) {
        int tok = bi->row_tok[r];
        if (bi->depth[tok] <= l) continue;
        if (kept != r) memmove(x + kept * D, x + r * D, D * sizeof(float));
        bi->row_tok[kept++] = tok;
    }
    bi->rows = kept;
    for (int b = 0; b <= S; b++) bi->row_start[b] = 0;
    for (size_t r = 0; r < bi->rows; r++) {
        int tok = bi->row_tok[r];
        bi->row_start[bi->seq[tok] + 1]++;
        bi->row_order[r] = bi->order[tok];
        bi->row_local[r] = bi->local[tok];
        bi->row_pos[r] = bi->pos[tok];
        bi->row_lora[r] = fb->lora ? fb->lora[tok] : 0;
    }
    for (int b = 0; b < S; b++) bi->row_start[b + 1] += bi->row_start[b];
    // Tasks: (kv head, row block) of a shared-parent group, else (head, query block) of a sequence.
    bi->task_start[0] = 0;
    for (int gi = 0; gi < bi->n_groups; gi++) {
        int b0 = bi->grp_first[gi], b1 = bi->grp_first[gi + 1];
        int nq = bi->row_start[b1] - bi->row_start[b0];
        int grouped = fb->caches[b0]->parent && !fb->attn_hook;
        bi->task_start[gi + 1] = bi->task_start[gi] + (grouped ? G * ((nq + bi->grp_block - 1) / bi->grp_block)
                                                               : H * ((nq + bi->qblock - 1) / bi->qblock));
    }
}

// Appends the new keys/values k, v [rows, G*E] of layer l, KV heads [g0, g1),
// to each sequence's cache (a sequence's rows are consecutive and in order).
static void kv_append(const ForwardBatch *fb, const BatchIndex *bi, const float *k, const float *v,
                      const ModelConfig *c, int l, int g0, int g1) {
    const int G = c->n_kv_heads;
    const size_t E = (size_t)c->head_dim, KD = (size_t)G * E;
    for (int b = 0; b < fb->n_seqs; b++) {
        KVCache *kv = fb->caches[b];
        for (int r = bi->row_start[b]; r < bi->row_start[b + 1]; r++) {
            for (int g = g0; g < g1; g++) {
                int *len = &kv->len[l * G + g];
                memcpy(kvcache_k(kv, l, g) + (size_t)*len * E, k + (size_t)r * KD + (size_t)g * E, E * sizeof(float));
                memcpy(kvcache_v(kv, l, g) + (size_t)*len * E, v + (size_t)r * KD + (size_t)g * E, E * sizeof(float));
                kvcache_tok(kv, l, g)[*len] = bi->row_order[r];
                (*len)++;
            }
        }
    }
}

// One attention task of a lone sequence: sequence b, head h, queries [i0, i1)
// of its active rows, against its cache (a parent's entries first); then the
// hook, which gets probs [i1-i0, keys] and the keys' sequence indices.
static void seq_task(float *att, float *probs, int32_t *k_tok, const float *q, const Model *m,
                     const ForwardBatch *fb, const BatchIndex *bi, int l, int b, int h, int i0, int i1) {
    const ModelConfig *c = &m->config;
    const size_t E = (size_t)c->head_dim, QD = (size_t)c->n_heads * E;
    const int G = c->n_kv_heads, g = h / (c->n_heads / G);
    const KVCache *own = fb->caches[b], *par = own->parent;
    const int P = par ? par->len[l * G + g] : 0;
    const int r0 = bi->row_start[b], nq = bi->row_start[b + 1] - r0;
    const int n_old = own->len[l * G + g] - nq; // own entries from earlier calls
    const size_t at = (size_t)(r0 + i0) * QD + (size_t)h * E;
    const float *kp = par ? kvcache_k(par, l, g) : NULL, *vp = par ? kvcache_v(par, l, g) : NULL;
    const float *ko = kvcache_k(own, l, g), *vo = kvcache_v(own, l, g);
    const uint8_t *mask = fb->mask ? fb->mask[b] : NULL;
    const int *idx = bi->row_local + r0;
    const size_t mn = (size_t)fb->n_new[b];
    if (mask && !fb->attn_hook) // only the keys the mask lets the block see (AnLLM's prefill); no probs
        attention_cached_sparse_forward(att + at, probs, q + at, kp, vp, ko, vo, mask, idx, mn, (size_t)P,
                                        (size_t)n_old, (size_t)i0, (size_t)i1, E, QD);
    else
        attention_cached_forward(att + at, probs, q + at, kp, vp, ko, vo, mask, idx, mn, (size_t)P, (size_t)n_old,
                                 (size_t)i0, (size_t)i1, E, QD);
    if (fb->attn_hook) {
        // Hook runs use one block per (sequence, head): all rows at once.
        const int n_own = n_old + i1;
        const int32_t *pt = par ? kvcache_tok(par, l, g) : NULL, *ot = kvcache_tok(own, l, g);
        for (int j = 0; j < P; j++) k_tok[j] = pt[j];
        for (int j = 0; j < n_own; j++) k_tok[P + j] = ot[j];
        fb->attn_hook(fb->attn_hook_ctx, l, b, h, i1 - i0, bi->row_order + r0 + i0, P + n_own, k_tok, probs);
    }
}

// Beams of one user share the prompt's cache as a read-only parent. Attending
// to it beam by beam would be one matrix-vector product per (beam, head), each
// reading the whole parent: decode time would grow with beams x prompt length.
// Instead one task takes the consecutive active rows [ra, rb) of a run of
// sequences with the same parent and one KV head g, and attention_shared_forward
// reads the parent once for all of them and the hpg query heads of g.
static void group_task(float *att, float *scores, float *qbuf, float *obuf, const float *q, const Model *m,
                       const ForwardBatch *fb, const BatchIndex *bi, int l, int g, int ra, int rb) {
    const ModelConfig *c = &m->config;
    const size_t E = (size_t)c->head_dim, QD = (size_t)c->n_heads * E;
    const int G = c->n_kv_heads, hpg = c->n_heads / G;
    AttnOwnKV own[ATTN_QUERY_BLOCK];
    CHECK(rb - ra <= ATTN_QUERY_BLOCK, "group_task: %d rows > %d", rb - ra, ATTN_QUERY_BLOCK);
    for (int r = ra; r < rb; r++) {
        int b = bi->seq[bi->row_tok[r]];
        const KVCache *kv = fb->caches[b];
        const uint8_t *mask = fb->mask ? fb->mask[b] : NULL;
        int r0 = bi->row_start[b], nq = bi->row_start[b + 1] - r0;
        own[r - ra] = (AttnOwnKV){.k = kvcache_k(kv, l, g), .v = kvcache_v(kv, l, g),
                                  .n_old = kv->len[l * G + g] - nq, .i = r - r0,
                                  .mask_row = mask ? mask + (size_t)bi->row_local[r] * (size_t)fb->n_new[b] : NULL,
                                  .idx = bi->row_local + r0};
    }
    const KVCache *par = fb->caches[bi->seq[bi->row_tok[ra]]]->parent;
    const size_t at = (size_t)ra * QD + (size_t)(g * hpg) * E;
    attention_shared_forward(att + at, scores, qbuf, obuf, q + at, kvcache_k(par, l, g), kvcache_v(par, l, g), own,
                             (size_t)(rb - ra), (size_t)hpg, (size_t)par->len[l * G + g], E, QD);
}

// Attention task `task` of layer l (see forward_attention), on the work space
// of the calling thread.
static void attention_task(float *att, const ForwardBufs *fw, const Model *m, const ForwardBatch *fb,
                           const BatchIndex *bi, int l, int task) {
    const size_t E = (size_t)m->config.head_dim;
    int gi = 0;
    while (bi->task_start[gi + 1] <= task) gi++;
    int b0 = bi->grp_first[gi], b1 = bi->grp_first[gi + 1], j = task - bi->task_start[gi];
    int th = omp_get_thread_num();
    float *sc = fw->scores + (size_t)th * fw->score_stride;
    if (fb->caches[b0]->parent && !fb->attn_hook) {
        int ra0 = bi->row_start[b0], nq = bi->row_start[b1] - ra0, gb = bi->grp_block;
        int nb = (nq + gb - 1) / gb, g = j / nb, blk = j % nb;
        int ra = ra0 + blk * gb, rb = ra + gb < ra0 + nq ? ra + gb : ra0 + nq;
        float *qbuf = sc + fw->task_rows * bi->max_keys, *obuf = qbuf + fw->task_rows * E;
        group_task(att, sc, qbuf, obuf, fw->q, m, fb, bi, l, g, ra, rb);
        return;
    }
    int nq = bi->row_start[b0 + 1] - bi->row_start[b0];
    int nb = (nq + bi->qblock - 1) / bi->qblock;
    int h = j / nb, blk = j % nb;
    int i0 = blk * bi->qblock, i1 = i0 + bi->qblock < nq ? i0 + bi->qblock : nq;
    seq_task(att, sc, bi->k_tok + (size_t)th * bi->max_keys, fw->q, m, fb, bi, l, b0, h, i0, i1);
}

// Attention of layer l: att [rows, H*E] from q [rows, H*E] and the caches
// (which already hold this call's keys), one task per (sequence, head, query
// block) or per (shared-parent group, kv head, row block), in parallel unless
// a hook that is not concurrent listens.
static void forward_attention(float *att, const ForwardBufs *fw, const Model *m, const ForwardBatch *fb,
                              const BatchIndex *bi, int l) {
    const int n_tasks = bi->task_start[bi->n_groups];
    #pragma omp parallel for schedule(dynamic, 1) if (!fb->attn_hook || fb->attn_hook_concurrent)
    for (int task = 0; task < n_tasks; task++) attention_task(att, fw, m, fb, bi, l, task);
}

// ---------------------------------------------------------------------------
// Few rows (decode: one row per beam). A fork/join per op and BLAS's packing
// of the weights for a product of a few rows cost more than the product: a
// layer of such a call is ONE parallel region, each thread computing its own
// slice of every product's output columns (matmul_cols_forward: one pass over
// its slice of the weights, no packing), barriers between dependent steps, the
// attention tasks shared out inside the same region. Products round
// differently from sgemm's (tests: within the reference tolerances); a row's
// result does not depend on the thread count or on the other rows.
// With ~40 barriers per step, a thread that the OS deschedules stalls its
// partner at every barrier: two 2-thread processes on 2 cores (ctest -j2) made
// a decode step 12x slower than the sgemm path. So the region's thread count is
// chosen by timing (FusedThreads in model.h): all threads on idle cores, one
// when they are oversubscribed. Up to 8 rows (batch decode); 20 beams take the
// sgemm path with its parallel attention.
// [*o0, *o1): thread th's share of n columns, cut at multiples of `unit`.
static void col_slice(size_t *o0, size_t *o1, size_t n, size_t unit, int th, int nt) {
    size_t chunk = ((n + (size_t)nt - 1) / (size_t)nt + unit - 1) / unit * unit;
    *o0 = (size_t)th * chunk < n ? (size_t)th * chunk : n;
    *o1 = *o0 + chunk < n ? *o0 + chunk : n;
}

static int use_fused(const ForwardBatch *fb, size_t rows) {
    return rows <= FUSED_MAX_ROWS && (!fb->attn_hook || fb->attn_hook_concurrent) && !fb->lora;
}

int fused_threads_pick(FusedThreads *f, int max_threads) {
    if (f->fixed > 0) return f->fixed < max_threads ? f->fixed : max_threads;
    if (max_threads < 2) return 1;
    f->calls++;
    if (!f->measured[1]) return max_threads;
    if (!f->measured[0]) return 1;
    int i = f->calls >= f->next_try ? !f->best : f->best;
    return i ? max_threads : 1;
}

void fused_threads_update(FusedThreads *f, int n_threads, int max_threads, double layer_s) {
    if (f->fixed > 0 || max_threads < 2) return;
    const int i = n_threads > 1;
    const int first = !f->measured[0] || !f->measured[1];
    if (i == f->best && !first) f->layer_s[i] = 0.8 * f->layer_s[i] + 0.2 * layer_s;
    else f->layer_s[i] = layer_s; // a re-try: the load may have changed since the last one
    f->measured[i]++;
    if (!f->measured[0] || !f->measured[1]) return;
    if (first || i != f->best) {
        int best = f->layer_s[1] < f->layer_s[0];
        f->interval = first || best != f->best ? 8 : (f->interval < 1024 ? 2 * f->interval : 1024);
        f->best = best;
        f->next_try = f->calls + f->interval;
    }
}

// q, k, v of this thread's heads (slices cut at whole heads): the products, RoPE,
// and the keys and values into the caches (each KV head is one thread's).
static void fused_qkv(ForwardBufs *fw, const float *xn, const Model *m, const ForwardBatch *fb,
                      const BatchIndex *bi, int l, int th, int nt) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, E = (size_t)c->head_dim, QD = (size_t)c->n_heads * E;
    const size_t KD = (size_t)c->n_kv_heads * E, rows = bi->rows;
    size_t a, b;
    col_slice(&a, &b, QD, E, th, nt);
    matmul_cols_forward(fw->q, xn, w->wq + (size_t)l * QD * D, w->bq ? w->bq + (size_t)l * QD : NULL, rows, D, QD,
                        a, b, 0.0f);
    rope_forward(fw->q + a, bi->row_pos, m->rope_inv_freq, rows, (b - a) / E, E, QD);
    col_slice(&a, &b, KD, E, th, nt);
    matmul_cols_forward(fw->k, xn, w->wk + (size_t)l * KD * D, w->bk ? w->bk + (size_t)l * KD : NULL, rows, D, KD,
                        a, b, 0.0f);
    matmul_cols_forward(fw->v, xn, w->wv + (size_t)l * KD * D, w->bv ? w->bv + (size_t)l * KD : NULL, rows, D, KD,
                        a, b, 0.0f);
    rope_forward(fw->k + a, bi->row_pos, m->rope_inv_freq, rows, (b - a) / E, E, KD);
    kv_append(fb, bi, fw->k, fw->v, c, l, (int)(a / E), (int)(b / E));
}

// Layer l on the active rows (the fused form of block_qkv_forward, kv_append,
// forward_attention, block_attn_residual and block_mlp_forward). Each thread
// normalises all rows into its own xn (a few hundred floats: cheaper than a
// barrier), so the layer has four barriers: after q/k/v, the attention, the
// output projection, and gate/up.
static void layer_fused(ForwardBufs *fw, const Model *m, const ForwardBatch *fb, const BatchIndex *bi, int l,
                        int n_threads) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const size_t D = (size_t)c->dim, QD = (size_t)c->n_heads * (size_t)c->head_dim, F = (size_t)c->hidden_dim;
    const size_t rows = bi->rows;
    const int n_tasks = bi->task_start[bi->n_groups];
    #pragma omp parallel num_threads(n_threads)
    {
        const int th = omp_get_thread_num(), nt = omp_get_num_threads();
        float *xn = fw->xn_own + (size_t)th * fw->xn_stride;
        size_t a, b;
        rmsnorm_forward(xn, fw->x, w->attn_norm + (size_t)l * D, rows, D, c->rms_eps);
        fused_qkv(fw, xn, m, fb, bi, l, th, nt);
        #pragma omp barrier
        #pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < n_tasks; task++) attention_task(fw->att, fw, m, fb, bi, l, task);
        col_slice(&a, &b, D, 16, th, nt);
        matmul_cols_forward(fw->x, fw->att, w->wo + (size_t)l * D * QD, NULL, rows, QD, D, a, b, 1.0f);
        #pragma omp barrier
        rmsnorm_forward(xn, fw->x, w->mlp_norm + (size_t)l * D, rows, D, c->rms_eps);
        col_slice(&a, &b, F, 16, th, nt);
        matmul_cols_forward(fw->h1, xn, w->w_gate + (size_t)l * F * D, NULL, rows, D, F, a, b, 0.0f);
        matmul_cols_forward(fw->h2, xn, w->w_up + (size_t)l * F * D, NULL, rows, D, F, a, b, 0.0f);
        for (size_t r = 0; r < rows; r++) // elementwise: this thread's columns only
            swiglu_forward(fw->h1 + r * F + a, fw->h1 + r * F + a, fw->h2 + r * F + a, 1, b - a);
        #pragma omp barrier
        col_slice(&a, &b, D, 16, th, nt);
        matmul_cols_forward(fw->x, fw->h1, w->w_down + (size_t)l * D * F, NULL, rows, F, D, a, b, 1.0f);
    }
}

// Adds the attention FLOPs of layer l (as needed: each query against the keys it sees).
static void attention_flops(double *flops, const ModelConfig *c, const ForwardBatch *fb, const BatchIndex *bi,
                            int l) {
    const int G = c->n_kv_heads;
    for (int b = 0; b < fb->n_seqs; b++) {
        const KVCache *kv = fb->caches[b];
        int nq = bi->row_start[b + 1] - bi->row_start[b];
        for (int g = 0; g < G; g++) {
            double before = (double)(kv->len[l * G + g] - nq) + (kv->parent ? kv->parent->len[l * G + g] : 0);
            *flops += flops_attn_cached(c, nq, before);
        }
    }
}

// Logits from the final norm and the output head of the rows leaving the last
// layer (x [rows, D]; xn is work space). Returns the FLOPs.
static double gather_logits(float *logits, float *xn, const Model *m, const ForwardBatch *fb, const BatchIndex *bi,
                            const float *x, int n_threads) {
    const ModelConfig *c = &m->config;
    const ModelParams *w = &m->params;
    const int S = fb->n_seqs;
    const size_t D = (size_t)c->dim, V = (size_t)c->vocab_size, rows = bi->rows;
    if (fb->logits_mode == LOGITS_LAST) {
        // The last row of each sequence is its last token (checked: depth N).
        for (int b = 0; b < S; b++)
            memcpy(xn + (size_t)b * D, x + (size_t)(bi->row_start[b + 1] - 1) * D, D * sizeof(float));
        rmsnorm_forward(xn, xn, w->final_norm, (size_t)S, D, c->rms_eps);
        if (use_fused(fb, (size_t)S)) {
            #pragma omp parallel num_threads(n_threads)
            {
                size_t a, b;
                col_slice(&a, &b, V, 16, omp_get_thread_num(), omp_get_num_threads());
                matmul_cols_forward(logits, xn, w->lm_head, NULL, (size_t)S, D, V, a, b, 0.0f);
            }
        } else {
            matmul_forward(logits, xn, w->lm_head, NULL, (size_t)S, D, V, 0.0f);
        }
        return flops_head(c, (size_t)S);
    }
    if (fb->logits_mode != LOGITS_ALL) return 0.0;
    rmsnorm_forward(xn, x, w->final_norm, rows, D, c->rms_eps);
    matmul_forward(logits, xn, w->lm_head, NULL, rows, D, V, 0.0f);
    // Spread the computed rows to their tokens' places, last first (targets never precede sources).
    for (size_t r = rows; r-- > 0;) {
        size_t tok = (size_t)bi->row_tok[r];
        if (tok != r) memmove(logits + tok * V, logits + r * V, V * sizeof(float));
    }
    size_t r = 0;
    for (size_t tk = 0; tk < bi->T; tk++) {
        if (r < rows && (size_t)bi->row_tok[r] == tk) { r++; continue; }
        for (size_t i = 0; i < V; i++) logits[tk * V + i] = NAN;
    }
    return flops_head(c, rows);
}

int model_forward_check_seq(const ModelConfig *c, int allow_long, LogitsMode mode, int b, int n_new,
                            const int *tokens, const int *positions, const int *depth, int n_seen, const int *len,
                            const int *cap, Error *e) {
    if (n_new < 0) return err_set(e, "forward: sequence %d: negative token count", b);
    if (n_new == 0 && mode == LOGITS_LAST)
        return err_set(e, "forward: sequence %d has no new token to take logits from", b);
    for (int i = 0; i < n_new; i++) {
        int t = tokens[i];
        if (t < 0 || t >= c->vocab_size)
            return err_set(e, "forward: sequence %d token %d: id %d outside the vocabulary [0, %d)", b, i, t,
                           c->vocab_size);
        int d = depth ? depth[i] : c->n_layers;
        if (d < 1 || d > c->n_layers)
            return err_set(e, "forward: sequence %d token %d: depth %d outside 1..%d", b, i, d, c->n_layers);
        int pos = positions ? positions[i] : n_seen + i;
        if (pos < 0) return err_set(e, "forward: sequence %d token %d: negative position", b, i);
        if (c->max_seq_len > 0 && pos >= c->max_seq_len && !allow_long)
            return err_set(e, "forward: sequence %d token %d: position %d is beyond the model's "
                           "max_position_embeddings %d (--allow-long runs past it)", b, i, pos, c->max_seq_len);
    }
    if (mode == LOGITS_LAST && depth && depth[n_new - 1] != c->n_layers)
        return err_set(e, "forward: sequence %d: its last token stops before the last layer, so it has no logits", b);
    // Capacity: every layer must hold the tokens that reach it.
    for (int l = 0; l < c->n_layers; l++) {
        int need = 0;
        for (int i = 0; i < n_new; i++) need += (depth ? depth[i] : c->n_layers) > l;
        for (int g = 0; g < c->n_kv_heads; g++)
            if (len[l * c->n_kv_heads + g] + need > cap[l])
                return err_set(e, "forward: sequence %d: KV cache of layer %d is full (%d held + %d new > capacity %d)",
                               b, l, len[l * c->n_kv_heads + g], need, cap[l]);
    }
    return 0;
}

// Validates the batch against the model and the caches.
static int forward_check(const Model *m, const ForwardBatch *fb, Error *e) {
    const ModelConfig *c = &m->config;
    if (fb->n_seqs <= 0) return err_set(e, "forward: empty batch");
    if (fb->lora && c->lora_rank < 1)
        return err_set(e, "forward: LoRA rows were asked for, but the model has no LoRA adapters");
    size_t at = 0;
    for (int b = 0; b < fb->n_seqs; b++) {
        const KVCache *kv = fb->caches[b];
        if (!kv) return err_set(e, "forward: sequence %d has no KV cache", b);
        if (kv->n_layers != c->n_layers || kv->n_kv_heads != c->n_kv_heads || kv->head_dim != c->head_dim)
            return err_set(e, "forward: sequence %d: KV cache shape does not match the model", b);
        if (model_forward_check_seq(c, m->allow_long, fb->logits_mode, b, fb->n_new[b], fb->tokens + at,
                                    fb->positions ? fb->positions + at : NULL, fb->depth ? fb->depth + at : NULL,
                                    kv->n_seen, kv->len, kv->cap, e))
            return -1;
        at += (size_t)(fb->n_new[b] > 0 ? fb->n_new[b] : 0);
    }
    return 0;
}

int model_forward(float *logits, Model *m, const ForwardBatch *fb, ForwardScratch *s, Error *e) {
    if (forward_check(m, fb, e)) return -1;
    const ModelConfig *c = &m->config;
    BatchIndex bi;
    ForwardBufs fw;
    forward_layout(&bi, &fw, s, m, fb);
    batch_index_build(&bi, fw.x, m, fb);
    double flops = 0.0, fused_s = 0.0;
    int n_fused = 0, nt = 0; // the fused layers' threads, picked at the first one
    for (int l = 0; l < c->n_layers; l++) {
        compact_rows(&bi, fw.x, fb, c, l);
        if (bi.rows == 0) continue;
        flops += flops_qkv(c, bi.rows);
        if (use_fused(fb, bi.rows)) {
            if (!nt) nt = fused_threads_pick(&s->fused, omp_get_max_threads());
            double t0 = time_now_s();
            layer_fused(&fw, m, fb, &bi, l, nt);
            fused_s += time_now_s() - t0;
            n_fused++;
            attention_flops(&flops, c, fb, &bi, l);
            flops += flops_out_mlp(c, bi.rows);
            continue;
        }
        const uint8_t *lora_on = fb->lora ? bi.row_lora : NULL; // compress500x's adapted rows
        block_qkv_forward(fw.xn, fw.q, fw.k, fw.v, fw.lora_u, m, l, fw.x, bi.row_pos, lora_on, bi.rows);
        kv_append(fb, &bi, fw.k, fw.v, c, l, 0, c->n_kv_heads);
        forward_attention(fw.att, &fw, m, fb, &bi, l);
        attention_flops(&flops, c, fb, &bi, l);
        block_attn_residual(fw.x, fw.lora_u, m, l, fw.x, fw.att, lora_on, bi.rows);
        if (lora_on) flops += flops_lora(c, bi.rows);
        block_mlp_forward(fw.x, fw.xn, fw.h1, fw.h2, fw.h1, m, l, fw.x, bi.rows);
        flops += flops_out_mlp(c, bi.rows);
    }
    for (int b = 0; b < fb->n_seqs; b++) fb->caches[b]->n_seen += fb->n_new[b];
    flops += gather_logits(logits, fw.xn, m, fb, &bi, fw.x, nt ? nt : omp_get_max_threads());
    if (n_fused) fused_threads_update(&s->fused, nt, omp_get_max_threads(), fused_s / n_fused);
    s->last_flops = flops;
    return 0;
}

void model_allow_long(Model *m, int allow, const char *verb) {
    m->allow_long = allow;
    if (allow && m->config.max_seq_len > 0)
        fprintf(stderr, "earnest %s: warning: --allow-long: positions may pass max_position_embeddings %d, where the "
                "model was never trained; its outputs there are extrapolation\n", verb, m->config.max_seq_len);
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

void model_lora_init(Model *m, uint64_t seed) {
    const ModelConfig *c = &m->config;
    Rng rng;
    rng_seed(&rng, seed ^ 0x4C6F5241ull);
    for (int t = MODEL_FIRST_LORA_TENSOR; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        float *p = *model_param_slot(&m->params, t);
        int is_a = (t - MODEL_FIRST_LORA_TENSOR) % 2 == 0; // A [r, in]: in = shape[1]
        float bound = is_a ? 1.0f / sqrtf((float)info.shape[1]) : 0.0f;
        for (size_t i = 0; i < info.numel; i++) p[i] = is_a ? bound * (2.0f * (float)rng_uniform(&rng) - 1.0f) : 0.0f;
    }
}

void model_add_lora(Model *out, const Model *in, int r, float alpha, uint64_t seed) {
    CHECK(in->config.lora_rank == 0 && r >= 1, "model_add_lora: rank %d onto a model of rank %d", r,
          in->config.lora_rank);
    ModelConfig c = in->config;
    c.lora_rank = r;
    c.lora_alpha = alpha;
    model_alloc(out, &c);
    // The base tensors come first in params_memory, laid out as without adapters.
    CHECK(out->n_params > in->n_params, "model_add_lora: no room for the adapters");
    memcpy(out->params_memory, in->params_memory, in->n_params * sizeof(float));
    model_lora_init(out, seed);
}

void model_keep_layers(Model *out, const Model *in, int m) {
    CHECK(m >= 1 && m <= in->config.n_layers, "model_keep_layers: %d layers of %d", m, in->config.n_layers);
    ModelConfig c = in->config;
    c.n_layers = m;
    model_alloc(out, &c);
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo b;
        model_param_info(&c, t, &b); // per-layer tensors: m slices, the first m of in's N
        if (b.numel == 0) continue;
        memcpy(*model_param_slot(&out->params, t), *model_param_slot((ModelParams *)&in->params, t),
               b.numel * sizeof(float));
    }
}
