// beam_cuda.cu: see beam_cuda.h; follows beam.c's steps.
#include "runtime/cuda/beam_cuda.h"

#include <string.h>

#include "runtime/cuda/ops_cuda.h"
#include "runtime/cuda/phases_cuda.h"

extern "C" {
#include "runtime/plan.h"
}

extern "C" int cuda_beam_search_init(CudaBeamSearch *bs, CudaModel *model, const Trie *trie, int width, Error *e) {
    memset(bs, 0, sizeof *bs);
    if (beam_search_check(trie, model->config.vocab_size, width, e)) return -1;
    bs->model = model;
    bs->trie = trie;
    bs->width = width;
    bs->steps = trie->levels;
    bs->n_leaves = trie->depth_start[trie->levels + 1] - trie->depth_start[trie->levels];
    size_t ne = (size_t)trie->n_nodes + 1, nt = (size_t)(trie->n_nodes > 1 ? trie->n_nodes - 1 : 1);
    bs->first_edge = (int *)cuda_xmalloc(ne * sizeof(int));
    bs->edge_token = (int *)cuda_xmalloc(nt * sizeof(int));
    CUDA_CHECK(cudaMemcpy(bs->first_edge, trie->first_edge, ne * sizeof(int), cudaMemcpyHostToDevice));
    if (trie->n_nodes > 1)
        CUDA_CHECK(cudaMemcpy(bs->edge_token, trie->edge_token, (size_t)(trie->n_nodes - 1) * sizeof(int),
                              cudaMemcpyHostToDevice));
    return 0;
}

extern "C" void cuda_beam_search_free(CudaBeamSearch *bs) {
    cuda_forward_scratch_free(&bs->scratch);
    cuda_xfree(bs->first_edge);
    cuda_xfree(bs->edge_token);
    memset(bs, 0, sizeof *bs);
}

// Host state of one call (beam.c's UserBeams for all users at once) and the
// device buffers of the selections.
typedef struct {
    int U, W, steps;
    int *n;              // [U] active beams
    int *node;           // [U*W] trie node of each beam
    double *score;       // [U*W]
    int *tokens;         // [U*W*steps]
    int *row0;           // [U] first logits row of each user
    // selection output, host copies
    int *pick_n, *pick_beam, *pick_edge;
    double *pick_score;
    // device
    float *logits;       // [U*W, V]
    double *lse;         // [U*W]
    int *d_row0, *d_n, *d_node, *d_pick_n, *d_pick_beam, *d_pick_edge, *d_from;
    double *d_score, *d_pick_score;
} Search;

static void search_alloc(Search *s, int U, int W, int steps, size_t V) {
    memset(s, 0, sizeof *s);
    size_t UW = (size_t)U * W;
    s->U = U; s->W = W; s->steps = steps;
    s->n = (int *)xcalloc((size_t)U, sizeof(int));
    s->node = (int *)xcalloc(UW, sizeof(int));
    s->score = (double *)xcalloc(UW, sizeof(double));
    s->tokens = (int *)xcalloc(UW * steps, sizeof(int));
    s->row0 = (int *)xcalloc((size_t)U, sizeof(int));
    s->pick_n = (int *)xcalloc((size_t)U, sizeof(int));
    s->pick_beam = (int *)xcalloc(UW, sizeof(int));
    s->pick_edge = (int *)xcalloc(UW, sizeof(int));
    s->pick_score = (double *)xcalloc(UW, sizeof(double));
    s->logits = (float *)cuda_xmalloc(UW * V * sizeof(float));
    s->lse = (double *)cuda_xmalloc(UW * sizeof(double));
    s->d_row0 = (int *)cuda_xmalloc((size_t)U * sizeof(int));
    s->d_n = (int *)cuda_xmalloc((size_t)U * sizeof(int));
    s->d_node = (int *)cuda_xmalloc(UW * sizeof(int));
    s->d_score = (double *)cuda_xmalloc(UW * sizeof(double));
    s->d_pick_n = (int *)cuda_xmalloc((size_t)U * sizeof(int));
    s->d_pick_beam = (int *)cuda_xmalloc(UW * sizeof(int));
    s->d_pick_edge = (int *)cuda_xmalloc(UW * sizeof(int));
    s->d_pick_score = (double *)cuda_xmalloc(UW * sizeof(double));
    s->d_from = (int *)cuda_xmalloc(UW * sizeof(int));
}

static void search_free(Search *s) {
    free(s->n); free(s->node); free(s->score); free(s->tokens); free(s->row0);
    free(s->pick_n); free(s->pick_beam); free(s->pick_edge); free(s->pick_score);
    void *dev[] = {s->logits, s->lse, s->d_row0, s->d_n, s->d_node, s->d_score, s->d_pick_n, s->d_pick_beam,
                   s->d_pick_edge, s->d_pick_score, s->d_from};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) cuda_xfree(dev[i]);
}

#define H2D(dst, src, n) CUDA_CHECK(cudaMemcpyAsync((dst), (src), (n), cudaMemcpyHostToDevice, st))
#define D2H(dst, src, n) CUDA_CHECK(cudaMemcpyAsync((dst), (src), (n), cudaMemcpyDeviceToHost, st))

// Step `step`'s selection from the logits rows (step 0: one row per user, a
// virtual beam at the root), then the host bookkeeping of the new beams: the
// picks are in order, so new beam i continues old beam pick_beam[i].
static void select_step(Search *s, const CudaBeamSearch *bs, int step) {
    const cudaStream_t st = bs->model->cx.stream;
    const int U = s->U, W = s->W, steps = s->steps;
    const size_t V = (size_t)bs->model->config.vocab_size, UW = (size_t)U * W;
    int rows = 0;
    for (int u = 0; u < U; u++) {
        if (step == 0) {
            s->n[u] = 1;
            s->node[(size_t)u * W] = 0;
            s->score[(size_t)u * W] = 0.0;
        }
        s->row0[u] = rows;
        rows += s->n[u];
    }
    cuda_phases_begin(bs->model->phases, PHASES_SELECT, st);
    H2D(s->d_row0, s->row0, (size_t)U * sizeof(int));
    H2D(s->d_n, s->n, (size_t)U * sizeof(int));
    H2D(s->d_node, s->node, UW * sizeof(int));
    H2D(s->d_score, s->score, UW * sizeof(double));
    logsumexp_rows_cuda(s->lse, s->logits, (size_t)rows, V, st);
    beam_select_cuda(s->d_pick_n, s->d_pick_beam, s->d_pick_edge, s->d_pick_score, s->logits, s->lse, s->d_row0,
                     s->d_n, s->d_node, s->d_score, bs->first_edge, bs->edge_token, (size_t)U, (size_t)W, V, st);
    D2H(s->pick_n, s->d_pick_n, (size_t)U * sizeof(int));
    D2H(s->pick_beam, s->d_pick_beam, UW * sizeof(int));
    D2H(s->pick_edge, s->d_pick_edge, UW * sizeof(int));
    D2H(s->pick_score, s->d_pick_score, UW * sizeof(double));
    cuda_phases_mark(bs->model->phases, PHASE_SELECT, st);
    cuda_phases_end(bs->model->phases, st);
    CUDA_CHECK(cudaStreamSynchronize(st));
    int *tok = (int *)xmalloc((size_t)W * steps * sizeof(int));
    for (int u = 0; u < U; u++) {
        size_t b = (size_t)u * W;
        int *ut = s->tokens + b * steps;
        for (int i = 0; i < s->pick_n[u]; i++) {
            int o = s->pick_beam[b + i], ed = s->pick_edge[b + i];
            if (step > 0) memcpy(tok + (size_t)i * steps, ut + (size_t)o * steps, (size_t)step * sizeof(int));
            tok[(size_t)i * steps + step] = bs->trie->edge_token[ed];
            s->node[b + i] = ed + 1;
            s->score[b + i] = s->pick_score[b + i];
        }
        memcpy(ut, tok, (size_t)s->pick_n[u] * steps * sizeof(int));
        s->n[u] = s->pick_n[u];
    }
    free(tok);
}

// The prefill: prompt caches sized by the plan, one batched forward.
static int prefill(Search *s, CudaKVCache *prompt, CudaBeamSearch *bs, const int *const *prompts,
                   const uint8_t *const *kinds, const int *prompt_len, size_t T, Error *e) {
    CudaModel *m = bs->model;
    const ModelConfig *c = &m->config;
    const int N = c->n_layers, U = s->U;
    int *tokens = (int *)xmalloc(T * sizeof(int)), *depth = (int *)xmalloc(T * sizeof(int));
    int *cap = (int *)xmalloc((size_t)N * sizeof(int));
    CudaKVCache **pk = (CudaKVCache **)xmalloc((size_t)U * sizeof(CudaKVCache *));
    plan_pack_prompts(tokens, depth, c, U, prompts, kinds, prompt_len);
    for (int u = 0, at = 0; u < U; at += prompt_len[u], u++) {
        plan_kv_capacity_of(cap, depth + at, prompt_len[u], N);
        cuda_kvcache_init(&prompt[u], N, c->n_kv_heads, c->head_dim, cap, m->dtype);
        pk[u] = &prompt[u];
    }
    CudaForwardBatch fb = {U, prompt_len, tokens, NULL, depth, pk, LOGITS_LAST};
    double t0 = time_now_s();
    int rc = cuda_model_forward(s->logits, m, &fb, &bs->scratch, e);
    if (!rc) CUDA_CHECK(cudaStreamSynchronize(m->cx.stream));
    bs->prefill_s = time_now_s() - t0;
    bs->prefill_flops = bs->scratch.last_flops;
    free(tokens); free(depth); free(cap); free(pk);
    if (rc) {
        for (int u = 0; u < U; u++) cuda_kvcache_free(&prompt[u]);
        return err_prefix(e, "beam search prefill: ");
    }
    return 0;
}

// The beams' caches: W views per user over pool `cur` (k and v), each holding
// `len` entries per layer.
typedef struct {
    CudaKVCache *child;  // [U*W]
    void *k[2], *v[2];   // two pools of U*W blocks
    size_t elems;        // dt elements of one beam's block (k or v)
    int cur;
} BeamPools;

static void pools_point(BeamPools *bp, size_t UW, CudaDtype dt, int len, const CudaKVCache *prompt, int W) {
    const size_t es = cuda_dtype_size(dt);
    for (size_t i = 0; i < UW; i++) {
        CudaKVCache *ch = &bp->child[i];
        ch->k = (char *)bp->k[bp->cur] + i * bp->elems * es;
        ch->v = (char *)bp->v[bp->cur] + i * bp->elems * es;
        for (int j = 0; j < ch->n_layers * ch->n_kv_heads; j++) ch->len[j] = len;
        ch->n_seen = prompt[i / (size_t)W].n_seen + len;
    }
}

// Decode: steps - 1 forwards, each feeding every beam its newest token, each
// followed by a selection; the beams' blocks are reordered before each feed.
static int decode(Search *s, BeamPools *bp, CudaBeamSearch *bs, const CudaKVCache *prompt, Error *e) {
    CudaModel *m = bs->model;
    const cudaStream_t st = m->cx.stream;
    const int U = s->U, W = s->W, steps = s->steps;
    const size_t UW = (size_t)U * W;
    int *ones = (int *)xmalloc(UW * sizeof(int)), *step_tok = (int *)xmalloc(UW * sizeof(int));
    int *from = (int *)xmalloc(UW * sizeof(int));
    CudaKVCache **caches = (CudaKVCache **)xmalloc(UW * sizeof(CudaKVCache *));
    for (size_t i = 0; i < UW; i++) ones[i] = 1;
    int rc = 0;
    select_step(s, bs, 0);
    for (int step = 1; step < steps && !rc; step++) {
        if (step > 1) { // new beam i continues old beam pick_beam[i]: move its KV block
            for (size_t i = 0; i < UW; i++) from[i] = (int)i;
            for (int u = 0; u < U; u++)
                for (int i = 0; i < s->n[u]; i++) from[(size_t)u * W + i] = u * W + s->pick_beam[(size_t)u * W + i];
            H2D(s->d_from, from, UW * sizeof(int));
            beams_reorder_cuda(bp->k[!bp->cur], bp->k[bp->cur], s->d_from, UW, bp->elems, m->dtype, st);
            beams_reorder_cuda(bp->v[!bp->cur], bp->v[bp->cur], s->d_from, UW, bp->elems, m->dtype, st);
            bp->cur = !bp->cur;
        }
        pools_point(bp, UW, m->dtype, step - 1, prompt, W);
        int rows = 0;
        for (int u = 0; u < U; u++)
            for (int j = 0; j < s->n[u]; j++, rows++) {
                step_tok[rows] = s->tokens[((size_t)u * W + j) * steps + step - 1];
                caches[rows] = &bp->child[(size_t)u * W + j];
            }
        CudaForwardBatch fb = {rows, ones, step_tok, NULL, NULL, caches, LOGITS_LAST};
        rc = cuda_model_forward(s->logits, m, &fb, &bs->scratch, e);
        if (rc) {
            err_prefix(e, "beam search step %d: ", step + 1);
            break;
        }
        select_step(s, bs, step);
    }
    free(ones); free(step_tok); free(from); free(caches);
    return rc;
}

extern "C" int cuda_beam_search_run(BeamHyps *out, CudaBeamSearch *bs, int n_users, const int *const *prompts,
                                    const uint8_t *const *kinds, const int *prompt_len, Error *e) {
    CudaModel *m = bs->model;
    const ModelConfig *c = &m->config;
    const int N = c->n_layers, steps = bs->steps;
    const int W = bs->width < bs->n_leaves ? bs->width : bs->n_leaves; // beams never exceed the codes
    size_t T = 0;
    if (beam_run_check(&T, c, W, n_users, kinds, prompt_len, e)) return -1;
    bs->prefill_s = bs->decode_s = 0.0;
    bs->kv_bytes = 0;
    bs->prompt_tokens = T;
    bs->gen_tokens = 0;
    const size_t UW = (size_t)n_users * W;
    Search s;
    search_alloc(&s, n_users, W, steps, (size_t)c->vocab_size);
    CudaKVCache *prompt = (CudaKVCache *)xcalloc((size_t)n_users, sizeof(CudaKVCache));
    if (prefill(&s, prompt, bs, prompts, kinds, prompt_len, T, e)) {
        free(prompt);
        search_free(&s);
        return -1;
    }
    double t0 = time_now_s();
    int *gcap = (int *)xmalloc((size_t)N * sizeof(int));
    for (int l = 0; l < N; l++) gcap[l] = steps - 1;
    BeamPools bp;
    memset(&bp, 0, sizeof bp);
    bp.child = (CudaKVCache *)xcalloc(UW, sizeof(CudaKVCache));
    bp.elems = cuda_kvcache_elems(N, c->n_kv_heads, c->head_dim, gcap);
    for (int i = 0; i < 2; i++) {
        bp.k[i] = cuda_xmalloc(UW * bp.elems * cuda_dtype_size(m->dtype));
        bp.v[i] = cuda_xmalloc(UW * bp.elems * cuda_dtype_size(m->dtype));
    }
    for (size_t i = 0; i < UW; i++) cuda_kvcache_init_view(&bp.child[i], &prompt[i / W], gcap, bp.k[0], bp.v[0]);
    int rc = decode(&s, &bp, bs, prompt, e);
    bs->decode_s = time_now_s() - t0;
    if (!rc) {
        for (int u = 0; u < n_users; u++) {
            bs->kv_bytes += prompt[u].bytes;
            for (int j = 0; j < W; j++) bs->kv_bytes += bp.child[(size_t)u * W + j].bytes;
            BeamHyps *h = &out[u];
            h->n = s.n[u];
            h->tokens = (int *)xmalloc((size_t)bs->width * steps * sizeof(int));
            h->scores = (double *)xmalloc((size_t)bs->width * sizeof(double));
            memcpy(h->tokens, s.tokens + (size_t)u * W * steps, (size_t)h->n * steps * sizeof(int));
            memcpy(h->scores, s.score + (size_t)u * W, (size_t)h->n * sizeof(double));
            bs->gen_tokens += (size_t)h->n * (size_t)steps;
        }
    }
    for (size_t i = 0; i < UW; i++) cuda_kvcache_free(&bp.child[i]);
    for (int i = 0; i < 2; i++) {
        cuda_xfree(bp.k[i]);
        cuda_xfree(bp.v[i]);
    }
    for (int u = 0; u < n_users; u++) cuda_kvcache_free(&prompt[u]);
    free(bp.child); free(gcap); free(prompt);
    search_free(&s);
    return rc;
}
