// model_cuda.cu: see model_cuda.h. The forward pass follows model.c's steps:
// plan the call on the host (batch_index_build and compact_rows' bookkeeping
// for every layer at once), then per layer: compact rows, attention input,
// KV append, attention, residuals, MLP; then the logits.
#include "runtime/cuda/model_cuda.h"

#include <math.h>
#include <string.h>

#include "runtime/cuda/ops_cuda.h"
#include "runtime/cuda/phases_cuda.h"

extern "C" {
#include "runtime/block.h"
}

// ---------------------------------------------------------------------------
// Weights

static void params_layout(CudaModel *cm) {
    const ModelConfig *c = &cm->config;
    const size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    const size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim, QKV = QD + 2 * KD;
    const size_t es = cuda_dtype_size(cm->dtype);
    size_t n_dt = V * D + L * QKV * D + L * D * QD + L * 2 * F * D + L * D * F + (c->tie_embeddings ? 0 : V * D);
    size_t n_f32 = (c->attn_bias ? L * QKV : 0) + 2 * L * D + D;
    cm->weights_dt = cuda_xmalloc(n_dt * es);
    cm->weights_f32 = (float *)cuda_xmalloc(n_f32 * sizeof(float));
    cm->weight_bytes = n_dt * es + n_f32 * sizeof(float);
    CudaParams *p = &cm->params;
    char *at = (char *)cm->weights_dt;
    p->embed = at; at += V * D * es;
    p->wqkv = at; at += L * QKV * D * es;
    p->wo = at; at += L * D * QD * es;
    p->wgu = at; at += L * 2 * F * D * es;
    p->wdown = at; at += L * D * F * es;
    p->lm_head = c->tie_embeddings ? p->embed : at;
    float *f = cm->weights_f32;
    p->bqkv = c->attn_bias ? f : NULL; f += c->attn_bias ? L * QKV : 0;
    p->attn_norm = f; f += L * D;
    p->mlp_norm = f; f += L * D;
    p->final_norm = f;
}

// Common start: context, shape checks, layout, RoPE frequencies (as model.c).
static int model_begin(CudaModel *cm, const ModelConfig *c, CudaDtype dt, Error *e) {
    memset(cm, 0, sizeof *cm);
    if (!attention_cuda_head_dim_ok(c->head_dim))
        return err_set(e, "the GPU runtime supports head sizes 16, 32, 64 and 128; this model has %d", c->head_dim);
    if (c->lora_rank > 0) // compress500x: per-token LoRA and a compression-token-only cache are CPU-only
        return err_set(e, "the GPU runtime has no LoRA adapters: a %s model (lora_rank %d) runs on the CPU runtime "
                       "only", config_method_name(c->method), c->lora_rank);
    if (cuda_context_init(&cm->cx, e)) return -1;
    cm->phases = cuda_phases_from_env();
    cm->config = *c;
    cm->dtype = dt;
    params_layout(cm);
    int half = c->head_dim / 2;
    float *inv = (float *)xmalloc((size_t)half * sizeof(float));
    for (int i = 0; i < half; i++) inv[i] = (float)pow((double)c->rope_theta, -2.0 * i / (double)c->head_dim);
    cm->rope_inv_freq = (float *)cuda_xmalloc((size_t)half * sizeof(float));
    CUDA_CHECK(cudaMemcpy(cm->rope_inv_freq, inv, (size_t)half * sizeof(float), cudaMemcpyHostToDevice));
    free(inv);
    return 0;
}

// dst [n] dt <- host src [n] f32, through a device staging buffer.
static void upload_converted(void *dst, const float *src, size_t n, float *stage, size_t stage_n, CudaDtype dt,
                             cudaStream_t st) {
    const size_t es = cuda_dtype_size(dt);
    for (size_t i = 0; i < n; i += stage_n) {
        size_t m = n - i < stage_n ? n - i : stage_n;
        CUDA_CHECK(cudaMemcpyAsync(stage, src + i, m * sizeof(float), cudaMemcpyHostToDevice, st));
        convert_f32_cuda((char *)dst + i * es, stage, m, dt, st);
        CUDA_CHECK(cudaStreamSynchronize(st)); // the stage is reused next
    }
}

extern "C" int cuda_model_upload(CudaModel *cm, const Model *m, CudaDtype dt, Error *e) {
    const ModelConfig *c = &m->config;
    if (model_begin(cm, c, dt, e)) return -1;
    cm->allow_long = m->allow_long;
    const size_t L = (size_t)c->n_layers, D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    const size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim, QKV = QD + 2 * KD;
    const size_t es = cuda_dtype_size(dt), stage_n = (size_t)1 << 24;
    const ModelParams *w = &m->params;
    CudaParams *p = &cm->params;
    cudaStream_t st = cm->cx.stream;
    float *stage = (float *)cuda_xmalloc(stage_n * sizeof(float));
    upload_converted(p->embed, w->embed, V * D, stage, stage_n, dt, st);
    if (!c->tie_embeddings) upload_converted(p->lm_head, w->lm_head, V * D, stage, stage_n, dt, st);
    for (size_t l = 0; l < L; l++) {
        char *qkv = (char *)p->wqkv + l * QKV * D * es, *gu = (char *)p->wgu + l * 2 * F * D * es;
        upload_converted(qkv, w->wq + l * QD * D, QD * D, stage, stage_n, dt, st);
        upload_converted(qkv + QD * D * es, w->wk + l * KD * D, KD * D, stage, stage_n, dt, st);
        upload_converted(qkv + (QD + KD) * D * es, w->wv + l * KD * D, KD * D, stage, stage_n, dt, st);
        upload_converted((char *)p->wo + l * D * QD * es, w->wo + l * D * QD, D * QD, stage, stage_n, dt, st);
        upload_converted(gu, w->w_gate + l * F * D, F * D, stage, stage_n, dt, st);
        upload_converted(gu + F * D * es, w->w_up + l * F * D, F * D, stage, stage_n, dt, st);
        upload_converted((char *)p->wdown + l * D * F * es, w->w_down + l * D * F, D * F, stage, stage_n, dt, st);
        if (c->attn_bias) {
            float *b = p->bqkv + l * QKV;
            CUDA_CHECK(cudaMemcpy(b, w->bq + l * QD, QD * sizeof(float), cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(b + QD, w->bk + l * KD, KD * sizeof(float), cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(b + QD + KD, w->bv + l * KD, KD * sizeof(float), cudaMemcpyHostToDevice));
        }
    }
    CUDA_CHECK(cudaMemcpy(p->attn_norm, w->attn_norm, L * D * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(p->mlp_norm, w->mlp_norm, L * D * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(p->final_norm, w->final_norm, D * sizeof(float), cudaMemcpyHostToDevice));
    cuda_xfree(stage);
    return 0;
}

extern "C" int cuda_model_init_random(CudaModel *cm, const ModelConfig *c, CudaDtype dt, uint64_t seed, float std,
                                      Error *e) {
    if (model_begin(cm, c, dt, e)) return -1;
    const size_t L = (size_t)c->n_layers, D = (size_t)c->dim;
    const size_t QKV = (size_t)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
    cudaStream_t st = cm->cx.stream;
    size_t n_dt = (cm->weight_bytes - ((c->attn_bias ? L * QKV : 0) + 2 * L * D + D) * sizeof(float)) /
                  cuda_dtype_size(dt);
    fill_normal_cuda(cm->weights_dt, n_dt, seed, std, dt, st);
    if (c->attn_bias) fill_normal_cuda(cm->params.bqkv, L * QKV, seed ^ 0xB1A5ull, std, CUDA_F32, st);
    fill_const_cuda(cm->params.attn_norm, 2 * L * D + D, 1.0f, CUDA_F32, st); // attn, mlp and final norms
    CUDA_CHECK(cudaStreamSynchronize(st));
    return 0;
}

extern "C" void cuda_model_free(CudaModel *cm) {
    if (cm->cx.stream) CUDA_CHECK(cudaStreamSynchronize(cm->cx.stream));
    cuda_xfree(cm->weights_dt);
    cuda_xfree(cm->weights_f32);
    cuda_xfree(cm->rope_inv_freq);
    cuda_phases_report_free(cm->phases);
    cuda_context_free(&cm->cx);
    memset(cm, 0, sizeof *cm);
}

// ---------------------------------------------------------------------------
// The plan of one call: everything the layers need from the host, built in
// one buffer and uploaded once.

typedef struct {
    int rows;                 // active rows (tokens whose depth exceeds l)
    int gather;               // 1: the rows changed at this layer: x = x[src]
    size_t src, pos, append;  // plan offsets: int [rows], int [rows], KvAppendCuda [rows]
    size_t tiles, ptiles;     // AttnTileCuda [n_tiles], AttnParentTileCuda [n_ptiles]
    size_t tiles_tc;          // AttnTileCuda [n_tiles_tc]: the tensor-core prefill's tiles (bf16)
    int n_tiles, n_ptiles, max_chunks, n_tiles_tc;
    int chunk_len;            // parent keys per chunk (attention_chunk_len)
} LayerPlan;

typedef struct {
    char *buf;                // host, growable
    size_t used, cap;
    LayerPlan *layer;         // [L]
    size_t tokens;            // int [T]
    size_t out_rows;          // int [S] (LOGITS_LAST: row of each sequence's last token) or [rows] (LOGITS_ALL: token of each row)
    int n_out_rows;           // rows the logits are computed for
    int max_rows;             // most rows of any layer
    size_t max_partials;      // max_chunks * rows * H of any layer
    double flops;
} Plan;

// Reserves n bytes (16-aligned) and returns their offset.
static size_t plan_take(Plan *p, size_t n) {
    size_t at = (p->used + 15) & ~(size_t)15;
    if (at + n > p->cap) {
        p->cap = 2 * (at + n) + 4096;
        p->buf = (char *)xrealloc(p->buf, p->cap);
    }
    p->used = at + n;
    return at;
}
#define PLAN_AT(p, type, off) ((type *)((p)->buf + (off)))

// The checks of model_forward, and the GPU's own limits.
static int forward_check(const CudaModel *cm, const CudaForwardBatch *fb, Error *e) {
    const ModelConfig *c = &cm->config;
    const int G = c->n_kv_heads;
    if (fb->n_seqs <= 0) return err_set(e, "forward: empty batch");
    size_t at = 0;
    for (int b = 0; b < fb->n_seqs; b++) {
        const CudaKVCache *kv = fb->caches[b];
        if (!kv) return err_set(e, "forward: sequence %d has no KV cache", b);
        if (kv->n_layers != c->n_layers || kv->n_kv_heads != G || kv->head_dim != c->head_dim ||
            kv->dtype != cm->dtype)
            return err_set(e, "forward: sequence %d: KV cache shape or dtype does not match the model", b);
        for (const CudaKVCache *x = kv; x; x = x->parent)
            for (int l = 0; l < c->n_layers; l++)
                for (int g = 1; g < G; g++)
                    if (x->len[l * G + g] != x->len[l * G])
                        return err_set(e, "forward: sequence %d: the KV heads of layer %d hold different counts (a KV "
                                       "policy); the GPU runtime keeps whole layers", b, l);
        if (kv->parent && kv->parent->parent)
            return err_set(e, "forward: sequence %d: a parent cache with a parent of its own", b);
        if (model_forward_check_seq(c, cm->allow_long, fb->logits_mode, b, fb->n_new[b], fb->tokens + at,
                                    fb->positions ? fb->positions + at : NULL, fb->depth ? fb->depth + at : NULL,
                                    kv->n_seen, kv->len, kv->cap, e))
            return -1;
        at += (size_t)fb->n_new[b];
    }
    return 0;
}

// Copies n bytes into the plan; returns their offset.
static size_t plan_put(Plan *p, const void *data, size_t n) {
    size_t at = plan_take(p, n);
    if (n) memcpy(p->buf + at, data, n);
    return at;
}

// Attention tiles of layer l: own tiles per sequence, parent tiles per run of
// sequences sharing a parent (all their rows, per kv head). seq_row [S + 1]
// holds each sequence's first row at this layer.
static void plan_attention(Plan *p, LayerPlan *lp, const CudaModel *cm, const CudaForwardBatch *fb,
                           const int *seq_row, int l) {
    const ModelConfig *c = &cm->config;
    const int S = fb->n_seqs, G = c->n_kv_heads, hpg = c->n_heads / G;
    // Parent tiles first: with the longest parent they decide the chunk
    // length, and so each sequence's chunk count (chunks[b] holds its parent
    // length until then).
    int *chunks = (int *)xcalloc((size_t)S, sizeof(int)), n_pt = 0, cap_pt = 16, max_p = 0;
    AttnParentTileCuda *pt = (AttnParentTileCuda *)xmalloc((size_t)cap_pt * sizeof *pt);
    for (int b0 = 0; b0 < S;) {
        const CudaKVCache *par = fb->caches[b0]->parent;
        int b1 = b0 + 1;
        while (b1 < S && par && fb->caches[b1]->parent == par) b1++;
        int P = par ? par->len[l * G] : 0, ra = seq_row[b0], nr = seq_row[b1] - ra;
        if (P > 0 && nr > 0) {
            max_p = P > max_p ? P : max_p;
            for (int b = b0; b < b1; b++) chunks[b] = P;
            for (int g = 0; g < G; g++)
                for (int v0 = 0; v0 < nr * hpg; v0 += ATTN_CUDA_BQ) {
                    if (n_pt == cap_pt) pt = (AttnParentTileCuda *)xrealloc(pt, (size_t)(cap_pt *= 2) * sizeof *pt);
                    pt[n_pt++] = (AttnParentTileCuda){cuda_kvcache_k(par, l), cuda_kvcache_v(par, l), ra, nr, g, v0,
                                                      P, par->cap[l]};
                }
        }
        b0 = b1;
    }
    lp->chunk_len = attention_chunk_len(max_p, n_pt, cm->cx.n_sms);
    lp->max_chunks = (max_p + lp->chunk_len - 1) / lp->chunk_len;
    for (int b = 0; b < S; b++) chunks[b] = (chunks[b] + lp->chunk_len - 1) / lp->chunk_len;
    lp->n_ptiles = n_pt;
    lp->ptiles = plan_put(p, pt, (size_t)n_pt * sizeof *pt);
    // Own tiles: a bf16 sequence with no parent and at least ATTN_CUDA_BQ_TC rows goes to the
    // tensor-core prefill (tiles of ATTN_CUDA_BQ_TC rows), every other one to the tile kernel.
    int n_t = 0, n_tc = 0;
    for (int b = 0; b < S; b++) n_t += (seq_row[b + 1] - seq_row[b] + ATTN_CUDA_BQ - 1) / ATTN_CUDA_BQ;
    AttnTileCuda *tl = (AttnTileCuda *)xmalloc((size_t)(n_t > 0 ? n_t : 1) * sizeof *tl);
    AttnTileCuda *tc = (AttnTileCuda *)xmalloc((size_t)(n_t > 0 ? n_t : 1) * sizeof *tc);
    n_t = 0;
    for (int b = 0; b < S; b++) {
        const CudaKVCache *kv = fb->caches[b];
        int nq = seq_row[b + 1] - seq_row[b];
        int on_tc = cm->dtype == CUDA_BF16 && chunks[b] == 0 && nq >= ATTN_CUDA_BQ_TC;
        int bq = on_tc ? ATTN_CUDA_BQ_TC : ATTN_CUDA_BQ;
        for (int i0 = 0; i0 < nq; i0 += bq) {
            int n = nq - i0 < bq ? nq - i0 : bq;
            AttnTileCuda x = {cuda_kvcache_k(kv, l), cuda_kvcache_v(kv, l), seq_row[b] + i0, n, i0, kv->len[l * G],
                              kv->cap[l], chunks[b]};
            if (on_tc) tc[n_tc++] = x;
            else tl[n_t++] = x;
        }
        double before = (double)kv->len[l * G] + (kv->parent ? kv->parent->len[l * G] : 0);
        p->flops += (double)G * flops_attn_cached(c, nq, before);
    }
    lp->n_tiles = n_t;
    lp->tiles = plan_put(p, tl, (size_t)n_t * sizeof *tl);
    lp->n_tiles_tc = n_tc;
    lp->tiles_tc = plan_put(p, tc, (size_t)n_tc * sizeof *tc);
    free(tc);
    size_t parts = (size_t)lp->max_chunks * (size_t)lp->rows * (size_t)c->n_heads;
    p->max_partials = parts > p->max_partials ? parts : p->max_partials;
    free(chunks); free(pt); free(tl);
}

// Layer l's rows (stable compaction of the previous layer's), positions, KV
// destinations and attention tiles; row_tok [T] is updated in place, and the
// caches' lengths advance by the rows they receive.
static void plan_layer(Plan *p, LayerPlan *lp, int *row_tok, int *n_rows, const int *seq_of, const int *pos,
                       const int *depth, const CudaModel *cm, const CudaForwardBatch *fb, int l) {
    const ModelConfig *c = &cm->config;
    const int S = fb->n_seqs, G = c->n_kv_heads;
    int kept = 0;
    int *src = (int *)xmalloc((size_t)(*n_rows > 0 ? *n_rows : 1) * sizeof(int));
    for (int r = 0; r < *n_rows; r++)
        if (depth[row_tok[r]] > l) {
            src[kept] = r;
            row_tok[kept++] = row_tok[r];
        }
    lp->gather = l > 0 && kept != *n_rows;
    *n_rows = lp->rows = kept;
    if (lp->gather) {
        lp->src = plan_take(p, (size_t)kept * sizeof(int));
        memcpy(PLAN_AT(p, int, lp->src), src, (size_t)kept * sizeof(int));
    }
    free(src);
    lp->pos = plan_take(p, (size_t)kept * sizeof(int));
    for (int r = 0; r < kept; r++) PLAN_AT(p, int, lp->pos)[r] = pos[row_tok[r]];
    int *seq_row = (int *)xcalloc((size_t)S + 1, sizeof(int));
    for (int r = 0; r < kept; r++) seq_row[seq_of[row_tok[r]] + 1]++;
    for (int b = 0; b < S; b++) seq_row[b + 1] += seq_row[b];
    plan_attention(p, lp, cm, fb, seq_row, l); // sees the lengths before this layer's appends
    lp->append = plan_take(p, (size_t)kept * sizeof(KvAppendCuda)); // one array: stride sizeof
    for (int r = 0; r < kept; r++) {
        int b = seq_of[row_tok[r]];
        CudaKVCache *kv = fb->caches[b];
        PLAN_AT(p, KvAppendCuda, lp->append)[r] = (KvAppendCuda){cuda_kvcache_k(kv, l), cuda_kvcache_v(kv, l),
                                                                  kv->cap[l], kv->len[l * G] + r - seq_row[b]};
    }
    for (int b = 0; b < S; b++)
        for (int g = 0; g < G; g++) fb->caches[b]->len[l * G + g] += seq_row[b + 1] - seq_row[b];
    p->max_rows = kept > p->max_rows ? kept : p->max_rows;
    p->flops += flops_qkv(c, (size_t)kept) + flops_out_mlp(c, (size_t)kept);
    free(seq_row);
}

// The whole call's plan; row_tok [T] ends as the rows leaving the last layer.
static void plan_build(Plan *p, int *row_tok, const CudaModel *cm, const CudaForwardBatch *fb, int T) {
    const ModelConfig *c = &cm->config;
    const int S = fb->n_seqs, L = c->n_layers;
    int *seq_of = (int *)xmalloc((size_t)T * sizeof(int)), *pos = (int *)xmalloc((size_t)T * sizeof(int));
    int *depth = (int *)xmalloc((size_t)T * sizeof(int));
    p->tokens = plan_take(p, (size_t)T * sizeof(int));
    memcpy(PLAN_AT(p, int, p->tokens), fb->tokens, (size_t)T * sizeof(int));
    for (int b = 0, t = 0; b < S; b++)
        for (int i = 0; i < fb->n_new[b]; i++, t++) {
            seq_of[t] = b;
            pos[t] = fb->positions ? fb->positions[t] : fb->caches[b]->n_seen + i;
            depth[t] = fb->depth ? fb->depth[t] : L;
            row_tok[t] = t;
        }
    int n_rows = T;
    for (int l = 0; l < L; l++) plan_layer(p, &p->layer[l], row_tok, &n_rows, seq_of, pos, depth, cm, fb, l);
    if (fb->logits_mode == LOGITS_LAST) {
        // The last row of each sequence is its last token (checked: depth N).
        p->out_rows = plan_take(p, (size_t)S * sizeof(int));
        int *out = PLAN_AT(p, int, p->out_rows);
        for (int r = 0; r < n_rows; r++) out[seq_of[row_tok[r]]] = r;
        p->n_out_rows = S;
    } else if (fb->logits_mode == LOGITS_ALL) {
        p->out_rows = plan_take(p, (size_t)n_rows * sizeof(int));
        memcpy(PLAN_AT(p, int, p->out_rows), row_tok, (size_t)n_rows * sizeof(int));
        p->n_out_rows = n_rows;
    }
    if (fb->logits_mode != LOGITS_NONE) p->flops += flops_head(c, (size_t)p->n_out_rows);
    free(seq_of); free(pos); free(depth);
}

// ---------------------------------------------------------------------------
// Execution

typedef struct {
    float *x, *x2;   // [T, D] f32 residual stream (x2: compaction target)
    void *xn;        // [T, D] dt normalised input of a product
    float *qkv;      // [T, QKV] f32
    void *att;       // [T, QD] dt
    float *gu;       // [T, 2F] f32
    void *h;         // [T, F] dt
    float *lg;       // [T, V] f32 (LOGITS_ALL rows before the scatter)
    float *pm, *pl, *pa; // partials [max_partials] and [max_partials * E]
} Bufs;

static void bufs_layout(Bufs *b, CudaForwardScratch *s, const CudaModel *cm, const Plan *p, int T) {
    const ModelConfig *c = &cm->config;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, V = (size_t)c->vocab_size, E = (size_t)c->head_dim;
    const size_t QD = (size_t)c->n_heads * E, QKV = QD + 2 * (size_t)c->n_kv_heads * E, es = cuda_dtype_size(cm->dtype);
    const size_t R = (size_t)(T > p->max_rows ? T : p->max_rows), LR = p->n_out_rows > 0 ? (size_t)p->n_out_rows : 0;
#define ALIGN256(n) (((n) + 255) & ~(size_t)255)
    size_t sizes[10] = {R * D * 4, R * D * 4, R * D * es, R * QKV * 4, R * QD * es, R * 2 * F * 4, R * F * es,
                        LR * V * 4, p->max_partials * 4 * 2, p->max_partials * E * 4};
    size_t need = 0;
    for (int i = 0; i < 10; i++) need += ALIGN256(sizes[i]);
    if (s->capacity < need) {
        cuda_xfree(s->memory);
        s->memory = cuda_xmalloc(need);
        s->capacity = need;
    }
    char *at = (char *)s->memory;
    void **slot[9] = {(void **)&b->x, (void **)&b->x2, &b->xn, (void **)&b->qkv, &b->att, (void **)&b->gu, &b->h,
                      (void **)&b->lg, (void **)&b->pm};
    for (int i = 0; i < 9; i++) {
        *slot[i] = at;
        at += ALIGN256(sizes[i]);
    }
    b->pl = b->pm + p->max_partials;
    b->pa = (float *)at;
#undef ALIGN256
}

// One decoder layer on its rows (block.c's steps).
static void run_layer(Bufs *b, const CudaModel *cm, const LayerPlan *lp, const char *dev_plan, int l) {
    const ModelConfig *c = &cm->config;
    const CudaParams *w = &cm->params;
    const CudaDtype dt = cm->dtype;
    const size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, E = (size_t)c->head_dim, H = (size_t)c->n_heads;
    const size_t G = (size_t)c->n_kv_heads, QD = H * E, KD = G * E, QKV = QD + 2 * KD, es = cuda_dtype_size(dt);
    const size_t rows = (size_t)lp->rows;
    const cudaStream_t st = cm->cx.stream;
    CudaPhases *ph = cm->phases;
    if (lp->gather) {
        rows_gather_cuda(b->x2, b->x, (const int *)(dev_plan + lp->src), rows, D, st);
        float *t = b->x; b->x = b->x2; b->x2 = t;
    }
    rmsnorm_forward_cuda(b->xn, b->x, w->attn_norm + l * D, rows, D, c->rms_eps, dt, st);
    cuda_phases_mark(ph, PHASE_NORM, st);
    matmul_forward_cuda(b->qkv, b->xn, (const char *)w->wqkv + l * QKV * D * es, w->bqkv ? w->bqkv + l * QKV : NULL,
                        rows, D, QKV, 0.0f, dt, &cm->cx);
    cuda_phases_mark(ph, PHASE_QKV, st);
    const int *pos = (const int *)(dev_plan + lp->pos);
    rope_forward_cuda(b->qkv, pos, cm->rope_inv_freq, rows, H, E, QKV, st);
    rope_forward_cuda(b->qkv + QD, pos, cm->rope_inv_freq, rows, G, E, QKV, st);
    kv_append_cuda((const KvAppendCuda *)(dev_plan + lp->append), b->qkv + QD, b->qkv + QD + KD, rows, G, E, QKV, dt, st);
    cuda_phases_mark(ph, PHASE_ROPE_KV, st);
    attention_shared_forward_cuda(b->pm, b->pl, b->pa, b->qkv, (const AttnParentTileCuda *)(dev_plan + lp->ptiles),
                                  lp->n_ptiles, lp->max_chunks, lp->chunk_len, rows, H, G, E, QKV, dt, st);
    attention_cached_forward_cuda(b->att, b->qkv, (const AttnTileCuda *)(dev_plan + lp->tiles), lp->n_tiles, b->pm,
                                  b->pl, b->pa, rows, H, G, E, QKV, dt, st);
    attention_prefill_forward_cuda(b->att, b->qkv, (const AttnTileCuda *)(dev_plan + lp->tiles_tc), lp->n_tiles_tc, H,
                                   G, E, QKV, st);
    cuda_phases_mark(ph, PHASE_ATTN, st);
    matmul_forward_cuda(b->x, b->att, (const char *)w->wo + l * D * QD * es, NULL, rows, QD, D, 1.0f, dt, &cm->cx);
    cuda_phases_mark(ph, PHASE_OUT, st);
    rmsnorm_forward_cuda(b->xn, b->x, w->mlp_norm + l * D, rows, D, c->rms_eps, dt, st);
    cuda_phases_mark(ph, PHASE_NORM, st);
    matmul_forward_cuda(b->gu, b->xn, (const char *)w->wgu + l * 2 * F * D * es, NULL, rows, D, 2 * F, 0.0f, dt,
                        &cm->cx);
    cuda_phases_mark(ph, PHASE_GATE_UP, st);
    swiglu_forward_cuda(b->h, b->gu, b->gu + F, rows, F, 2 * F, dt, st);
    cuda_phases_mark(ph, PHASE_SWIGLU, st);
    matmul_forward_cuda(b->x, b->h, (const char *)w->wdown + l * D * F * es, NULL, rows, F, D, 1.0f, dt, &cm->cx);
    cuda_phases_mark(ph, PHASE_DOWN, st);
}

// Final norm and output head of the rows leaving the last layer (n_rows of them).
static void gather_logits(float *logits, Bufs *b, const CudaModel *cm, const Plan *p, const char *dev_plan,
                          LogitsMode mode, int n_rows, int T) {
    const ModelConfig *c = &cm->config;
    const size_t D = (size_t)c->dim, V = (size_t)c->vocab_size;
    const cudaStream_t st = cm->cx.stream;
    const int *out_rows = (const int *)(dev_plan + p->out_rows);
    if (mode == LOGITS_LAST) {
        rows_gather_cuda(b->x2, b->x, out_rows, (size_t)p->n_out_rows, D, st);
        rmsnorm_forward_cuda(b->xn, b->x2, cm->params.final_norm, (size_t)p->n_out_rows, D, c->rms_eps, cm->dtype, st);
        matmul_forward_cuda(logits, b->xn, cm->params.lm_head, NULL, (size_t)p->n_out_rows, D, V, 0.0f, cm->dtype,
                            &cm->cx);
    } else if (mode == LOGITS_ALL) {
        rmsnorm_forward_cuda(b->xn, b->x, cm->params.final_norm, (size_t)n_rows, D, c->rms_eps, cm->dtype, st);
        matmul_forward_cuda(b->lg, b->xn, cm->params.lm_head, NULL, (size_t)n_rows, D, V, 0.0f, cm->dtype, &cm->cx);
        rows_scatter_nan_cuda(logits, b->lg, out_rows, (size_t)n_rows, (size_t)T, V, st);
    }
}

// Copies the plan to the device (pinned staging; the previous copy must be done).
static const char *plan_upload(CudaForwardScratch *s, const Plan *p, cudaStream_t st) {
    if (s->plan_capacity < p->used) {
        if (s->host_plan) CUDA_CHECK(cudaFreeHost(s->host_plan));
        cuda_xfree(s->dev_plan);
        s->plan_capacity = 2 * p->used + 4096;
        CUDA_CHECK(cudaMallocHost(&s->host_plan, s->plan_capacity));
        s->dev_plan = cuda_xmalloc(s->plan_capacity);
    }
    CUDA_CHECK(cudaStreamSynchronize(st)); // the previous call's copy out of host_plan is done
    memcpy(s->host_plan, p->buf, p->used);
    CUDA_CHECK(cudaMemcpyAsync(s->dev_plan, s->host_plan, p->used, cudaMemcpyHostToDevice, st));
    return (const char *)s->dev_plan;
}

// The launches of one forward: embedding, the layers, the head.
static void forward_launch(float *logits, Bufs *b, const CudaModel *cm, const Plan *p, const char *dev_plan,
                           LogitsMode mode, int T) {
    const ModelConfig *c = &cm->config;
    embedding_forward_cuda(b->x, (const int *)(dev_plan + p->tokens), cm->params.embed, (size_t)T, (size_t)c->dim,
                           cm->dtype, cm->cx.stream);
    cuda_phases_mark(cm->phases, PHASE_EMBED, cm->cx.stream);
    int n_rows = T;
    for (int l = 0; l < c->n_layers; l++) {
        n_rows = p->layer[l].rows;
        if (n_rows == 0) continue;
        run_layer(b, cm, &p->layer[l], dev_plan, l);
    }
    gather_logits(logits, b, cm, p, dev_plan, mode, n_rows, T);
    cuda_phases_mark(cm->phases, PHASE_HEAD, cm->cx.stream);
}

// What the launches of a forward depend on besides the plan's contents: the
// plan's layout, the buffers and the logits' shape. Equal signatures, equal
// launches. Returns its length in bytes (sig holds room for all of it).
static size_t launch_signature(unsigned char *sig, const CudaModel *cm, const Plan *p, const CudaForwardScratch *s,
                               LogitsMode mode, int T) {
    size_t n = 0;
#define SIG(x) (memcpy(sig + n, &(x), sizeof(x)), n += sizeof(x))
    SIG(cm); SIG(s->memory); SIG(s->dev_plan); SIG(mode); SIG(T);
    SIG(p->tokens); SIG(p->out_rows); SIG(p->n_out_rows); SIG(p->max_rows); SIG(p->max_partials);
#undef SIG
    size_t layers = (size_t)cm->config.n_layers * sizeof(LayerPlan); // calloc'd: padding is zero
    memcpy(sig + n, p->layer, layers);
    return n + layers;
}

static void graph_drop(CudaForwardScratch *s) {
    if (s->graph) CUDA_CHECK(cudaGraphExecDestroy(s->graph));
    s->graph = NULL;
    s->graph_sig_len = 0;
}

// Runs the forward's launches as the scratch's graph (unless
// EARNEST_CUDA_GRAPHS=0) when its signature repeats: the first call of a signature runs eagerly (and tunes what needs
// tuning), the second is captured, every later one replays. 0: not done here
// (graphs off, phase timing on, or a first call: the caller launches).
static int forward_graph(float *logits, Bufs *b, const CudaModel *cm, const Plan *p, const char *dev_plan,
                         CudaForwardScratch *s, LogitsMode mode, int T) {
    if (!s->graphs) {
        const char *v = getenv("EARNEST_CUDA_GRAPHS");
        CHECK(!v || !strcmp(v, "0") || !strcmp(v, "1"), "EARNEST_CUDA_GRAPHS '%s' passed cuda_context_init's check", v);
        s->graphs = v && !strcmp(v, "0") ? 1 : 2;
    }
    if (s->graphs != 2 || cm->phases || mode == LOGITS_NONE) return 0;
    const cudaStream_t st = cm->cx.stream;
    unsigned char *sig = (unsigned char *)xmalloc(256 + (size_t)cm->config.n_layers * sizeof(LayerPlan));
    size_t len = launch_signature(sig, cm, p, s, mode, T);
    const size_t out_floats = (size_t)(mode == LOGITS_ALL ? T : p->n_out_rows) * (size_t)cm->config.vocab_size;
    int replay = s->graph && len == s->graph_sig_len && !memcmp(sig, s->graph_sig, len);
    if (!replay && !(len == s->seen_sig_len && !memcmp(sig, s->seen_sig, len))) {
        free(s->seen_sig);
        s->seen_sig = sig;
        s->seen_sig_len = len;
        return 0;
    }
    if (!replay) { // second sighting: capture
        graph_drop(s);
        if (s->graph_logits_cap < out_floats) {
            cuda_xfree(s->graph_logits);
            s->graph_logits = (float *)cuda_xmalloc(out_floats * sizeof(float));
            s->graph_logits_cap = out_floats;
        }
        cudaGraph_t g;
        CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        forward_launch(s->graph_logits, b, cm, p, dev_plan, mode, T);
        CUDA_CHECK(cudaStreamEndCapture(st, &g));
        CUDA_CHECK(cudaGraphInstantiate(&s->graph, g, 0));
        CUDA_CHECK(cudaGraphDestroy(g));
        free(s->graph_sig);
        s->graph_sig = sig;
        s->graph_sig_len = len;
    } else {
        free(sig);
    }
    CUDA_CHECK(cudaGraphLaunch(s->graph, st));
    CUDA_CHECK(cudaMemcpyAsync(logits, s->graph_logits, out_floats * sizeof(float), cudaMemcpyDeviceToDevice, st));
    return 1;
}

extern "C" int cuda_model_forward(float *logits, CudaModel *cm, const CudaForwardBatch *fb, CudaForwardScratch *s,
                                  Error *e) {
    if (forward_check(cm, fb, e)) return -1;
    const ModelConfig *c = &cm->config;
    int T = 0;
    for (int b = 0; b < fb->n_seqs; b++) T += fb->n_new[b];
    Plan p;
    memset(&p, 0, sizeof p);
    p.layer = (LayerPlan *)xcalloc((size_t)c->n_layers, sizeof(LayerPlan));
    int *row_tok = (int *)xmalloc((size_t)(T > 0 ? T : 1) * sizeof(int));
    plan_build(&p, row_tok, cm, fb, T);
    Bufs b;
    void *before = s->memory;
    bufs_layout(&b, s, cm, &p, T);
    if (s->memory != before) graph_drop(s); // the captured launches point into the old buffers
    cuda_phases_begin(cm->phases, T > fb->n_seqs ? PHASES_PREFILL : PHASES_DECODE, cm->cx.stream);
    const char *dev_plan = plan_upload(s, &p, cm->cx.stream);
    if (!forward_graph(logits, &b, cm, &p, dev_plan, s, fb->logits_mode, T))
        forward_launch(logits, &b, cm, &p, dev_plan, fb->logits_mode, T);
    for (int i = 0; i < fb->n_seqs; i++) fb->caches[i]->n_seen += fb->n_new[i];
    cuda_phases_end(cm->phases, cm->cx.stream);
    s->last_flops = p.flops;
    free(p.buf); free(p.layer); free(row_tok);
    return 0;
}

extern "C" void cuda_forward_scratch_free(CudaForwardScratch *s) {
    graph_drop(s);
    free(s->graph_sig);
    free(s->seen_sig);
    cuda_xfree(s->graph_logits);
    cuda_xfree(s->memory);
    cuda_xfree(s->dev_plan);
    if (s->host_plan) CUDA_CHECK(cudaFreeHost(s->host_plan));
    memset(s, 0, sizeof *s);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

extern "C" double cuda_gemm_rate(CudaModel *cm, int M, int N, int K, int reps) {
    const CudaDtype dt = cm->dtype;
    const cudaStream_t st = cm->cx.stream;
    void *a = cuda_xmalloc((size_t)M * K * cuda_dtype_size(dt)), *w = cuda_xmalloc((size_t)N * K * cuda_dtype_size(dt));
    float *out = (float *)cuda_xmalloc((size_t)M * N * sizeof(float));
    fill_normal_cuda(a, (size_t)M * K, 11, 1.0f, dt, st); // random, not zeros: zeros run faster
    fill_normal_cuda(w, (size_t)N * K, 12, 1.0f, dt, st);
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    matmul_forward_cuda(out, a, w, NULL, (size_t)M, (size_t)K, (size_t)N, 0.0f, dt, &cm->cx); // warm-up
    double t[64];
    if (reps > 64) reps = 64;
    for (int i = 0; i < reps; i++) {
        CUDA_CHECK(cudaEventRecord(e0, st));
        matmul_forward_cuda(out, a, w, NULL, (size_t)M, (size_t)K, (size_t)N, 0.0f, dt, &cm->cx);
        CUDA_CHECK(cudaEventRecord(e1, st));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        t[i] = ms * 1e-3;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    cuda_xfree(a); cuda_xfree(w); cuda_xfree(out);
    return 2.0 * M * N * K / t[reps / 2] * 1e-9;
}
