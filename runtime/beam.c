// beam.c: see beam.h.
#include "runtime/beam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/plan.h"

int beam_search_check(const Trie *trie, int vocab_size, int width, Error *e) {
    if (width < 1) return err_set(e, "beam search: width %d < 1", width);
    if (trie->levels < 1) return err_set(e, "beam search: the trie has no code levels");
    for (int i = 0; i < trie->n_nodes - 1; i++)
        if (trie->edge_token[i] < 0 || trie->edge_token[i] >= vocab_size)
            return err_set(e, "beam search: code token id %d is outside the model's vocabulary [0, %d)",
                           trie->edge_token[i], vocab_size);
    return 0;
}

int beam_run_check(size_t *T, const ModelConfig *c, int W, int n_users, const uint8_t *const *kinds,
                   const int *prompt_len, Error *e) {
    if (n_users < 1) return err_set(e, "beam search: no users");
    if (W < 1) return err_set(e, "beam search: the trie holds no item code");
    if (c->method == METHOD_EARN && !kinds)
        return err_set(e, "beam search: an EARN model needs the token kinds of the prompt (its layer plan)");
    if (c->method == METHOD_ANLLM && !kinds)
        return err_set(e, "beam search: an anllm model needs the token kinds of the prompt (its anchors and mask)");
    *T = 0;
    for (int u = 0; u < n_users; u++) {
        if (prompt_len[u] < 1) return err_set(e, "beam search: user %d has an empty prompt", u);
        *T += (size_t)prompt_len[u];
    }
    return 0;
}

int beam_search_init(BeamSearch *bs, Model *model, const Trie *trie, int width, Error *e) {
    memset(bs, 0, sizeof *bs);
    if (beam_search_check(trie, model->config.vocab_size, width, e)) return -1;
    bs->model = model;
    bs->trie = trie;
    bs->width = width;
    bs->steps = trie->levels;
    bs->n_leaves = trie->depth_start[trie->levels + 1] - trie->depth_start[trie->levels];
    return 0;
}

void beam_search_free(BeamSearch *bs) {
    forward_scratch_free(&bs->scratch);
    memset(bs, 0, sizeof *bs);
}

void beam_hyps_free(BeamHyps *h) {
    free(h->tokens);
    free(h->scores);
    memset(h, 0, sizeof *h);
}

size_t beam_kv_bytes_closed_form(const ModelConfig *c, int L, int r, int beams, int gen) {
    size_t bptl = 2 * (size_t)c->n_kv_heads * (size_t)c->head_dim * sizeof(float);
    size_t N = (size_t)c->n_layers, tail = (size_t)beams * (size_t)gen;
    if (c->method == METHOD_EARN)
        return bptl * ((size_t)c->layer_split_k * (size_t)L + N * ((size_t)r + tail));
    if (c->method == METHOD_GIST || c->method == METHOD_COMPRESS500X) return bptl * N * ((size_t)r + tail);
    // finetune, skiplayers, POD (its L is the shorter prompt), AnLLM (L: its kept instruction segment, r: anchors)
    return bptl * N * ((size_t)L + (size_t)r + tail);
}

double beam_row_logz(const float *x, size_t V) {
    float mx = -INFINITY;
    for (size_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0.0;
    for (size_t i = 0; i < V; i++) s += exp((double)x[i] - (double)mx);
    return (double)mx + log(s);
}

int beam_cand_cmp(const void *a, const void *b) {
    const BeamCand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->beam != y->beam) return x->beam < y->beam ? -1 : 1;
    return (x->edge > y->edge) - (x->edge < y->edge);
}

// Per-user beam state during a call.
typedef struct {
    int n;            // active beams
    int *node;        // [W] trie node of each beam
    double *score;    // [W]
    int *tokens;      // [W * steps]
    KVCache **cache;  // [W] each beam's child cache (pointers are permuted on reorder)
} UserBeams;

// One step of one user: candidates from `rows` (one logits row per beam, or the
// prompt's row for step 0 with one virtual beam at the root), top-W, reorder.
static void user_step(UserBeams *ub, BeamCand *cand, int *used, KVCache **tmp, int *tmp_tok, double *tmp_score,
                      int *tmp_node, const Trie *t, const float *rows, size_t V, int W, int steps, int step) {
    int n_beams = step == 0 ? 1 : ub->n, nc = 0;
    for (int j = 0; j < n_beams; j++) {
        const float *row = rows + (size_t)j * V;
        double lz = beam_row_logz(row, V), base = step == 0 ? 0.0 : ub->score[j];
        int node = step == 0 ? 0 : ub->node[j];
        for (int ed = t->first_edge[node]; ed < t->first_edge[node + 1]; ed++)
            cand[nc++] = (BeamCand){base + ((double)row[t->edge_token[ed]] - lz), j, ed};
    }
    qsort(cand, (size_t)nc, sizeof(BeamCand), beam_cand_cmp);
    int n_new = nc < W ? nc : W;

    // New beam i continues old beam cand[i].beam. The first new beam to take an
    // old beam gets its cache as is; later ones get a copy, written into the
    // caches no new beam took.
    if (step > 0) {
        for (int j = 0; j < W; j++) used[j] = -1; // used[old] = new beam holding old's cache
        for (int i = 0; i < n_new; i++) {
            int o = cand[i].beam;
            if (used[o] < 0) { used[o] = i; tmp[i] = ub->cache[o]; }
            else tmp[i] = NULL;
        }
        int free_at = 0;
        for (int i = 0; i < n_new; i++) {
            if (tmp[i]) continue;
            while (used[free_at] >= 0) free_at++; // an old cache nobody took (exists: fewer distinct olds than new)
            used[free_at] = W; // taken as a copy target
            tmp[i] = ub->cache[free_at];
            kvcache_copy(tmp[i], ub->cache[cand[i].beam]);
        }
        // Caches of old beams still not taken stay with the user for later steps.
        int at = n_new;
        for (int j = 0; j < W; j++)
            if (used[j] < 0) tmp[at++] = ub->cache[j];
        memcpy(ub->cache, tmp, (size_t)W * sizeof(KVCache *));
    }
    for (int i = 0; i < n_new; i++) {
        int o = cand[i].beam;
        if (step > 0) memcpy(tmp_tok + (size_t)i * steps, ub->tokens + (size_t)o * steps, (size_t)step * sizeof(int));
        tmp_tok[(size_t)i * steps + step] = t->edge_token[cand[i].edge];
        tmp_score[i] = cand[i].score;
        tmp_node[i] = cand[i].edge + 1;
    }
    memcpy(ub->tokens, tmp_tok, (size_t)n_new * steps * sizeof(int));
    memcpy(ub->score, tmp_score, (size_t)n_new * sizeof(double));
    memcpy(ub->node, tmp_node, (size_t)n_new * sizeof(int));
    ub->n = n_new;
}

// The scratch of the decode steps: one user's candidates and reorder buffers,
// and the batch of a decode step (one row per beam of every user).
typedef struct {
    BeamCand *cand;           // [max children of a trie node * W]
    int *used;            // [W]
    int *tmp_tok;         // [W * steps]
    int *tmp_node;        // [W]
    double *tmp_score;    // [W]
    KVCache **tmp;        // [W]
    int *step_tok;        // [UW] token fed to each row
    int *ones;            // [UW] all 1: one new token per row
    int *row_user;        // [UW] user of each row (the hook's)
    int *row_tokens;      // [UW * steps] tokens each row was fed (the hook's)
    KVCache **step_cache; // [UW]
} StepWork;

static void step_work_alloc(StepWork *w, const Trie *t, int W, int steps, size_t UW) {
    size_t max_cand = 1;
    for (int x = 0; x < t->n_nodes; x++) {
        size_t d = (size_t)(t->first_edge[x + 1] - t->first_edge[x]);
        max_cand = d > max_cand ? d : max_cand;
    }
    max_cand *= (size_t)W;
    w->cand = xmalloc(max_cand * sizeof(BeamCand));
    w->used = xmalloc((size_t)W * sizeof(int));
    w->tmp_tok = xmalloc((size_t)W * steps * sizeof(int));
    w->tmp_node = xmalloc((size_t)W * sizeof(int));
    w->tmp_score = xmalloc((size_t)W * sizeof(double));
    w->tmp = xmalloc((size_t)W * sizeof(KVCache *));
    w->step_tok = xmalloc(UW * sizeof(int));
    w->ones = xmalloc(UW * sizeof(int));
    w->row_user = xmalloc(UW * sizeof(int));
    w->row_tokens = xmalloc(UW * (size_t)steps * sizeof(int));
    w->step_cache = xmalloc(UW * sizeof(KVCache *));
    for (size_t i = 0; i < UW; i++) w->ones[i] = 1;
}

static void step_work_free(StepWork *w) {
    free(w->cand); free(w->used); free(w->tmp_tok); free(w->tmp_node); free(w->tmp_score); free(w->tmp);
    free(w->step_tok); free(w->ones); free(w->row_user); free(w->row_tokens); free(w->step_cache);
}

// The prefill forward under a KV policy: an observer gathers the attention the
// policy reads (if any), then each prompt cache keeps only the policy's entries.
static int prefill_policy(float *logits, KVCache *prompt, BeamSearch *bs, ForwardBatch *fb, Error *e) {
    const ModelConfig *c = &bs->model->config;
    KVObserver obs;
    int observe = kvpolicy_needs_attention(bs->kv_policy, fb->n_seqs, fb->n_new);
    if (observe) {
        kvobs_init(&obs, bs->kv_policy, fb->n_seqs, fb->n_new, c->n_layers, c->n_heads);
        fb->attn_hook = kvobs_hook;
        fb->attn_hook_ctx = &obs;
        fb->attn_hook_concurrent = 1;
    }
    int rc = model_forward(logits, bs->model, fb, &bs->scratch, e);
    for (int u = 0; !rc && u < fb->n_seqs; u++) {
        kvpolicy_compress(&prompt[u], bs->kv_policy, observe ? obs.acc + obs.at[u] : NULL, fb->n_new[u], c->n_heads);
        if (bs->kv_policy->rerotate) kvpolicy_rerotate(&prompt[u], bs->model->rope_inv_freq);
    }
    if (observe) kvobs_free(&obs);
    return rc;
}

void beam_prompt_batch_init(BeamPromptBatch *b, KVCache *prompt, const ModelConfig *c, int n_users,
                            const int *const *prompts, const uint8_t *const *kinds, const int *prompt_len, size_t T) {
    const int N = c->n_layers;
    b->tokens = xmalloc(T * sizeof(int));
    b->depth = xmalloc(T * sizeof(int));
    b->caches = xmalloc((size_t)n_users * sizeof(KVCache *));
    int *cap = xmalloc((size_t)N * sizeof(int));
    plan_pack_prompts(b->tokens, b->depth, c, n_users, prompts, kinds, prompt_len);
    for (int u = 0, at = 0; u < n_users; at += prompt_len[u], u++) {
        plan_kv_capacity_of(cap, b->depth + at, prompt_len[u], N);
        kvcache_init(&prompt[u], N, c->n_kv_heads, c->head_dim, cap);
        b->caches[u] = &prompt[u];
    }
    free(cap);
    b->fb = (ForwardBatch){.n_seqs = n_users, .n_new = prompt_len, .tokens = b->tokens, .depth = b->depth,
                           .caches = b->caches, .logits_mode = LOGITS_LAST};
}

void beam_prompt_batch_free(BeamPromptBatch *b) {
    free(b->tokens);
    free(b->depth);
    free(b->caches);
    memset(b, 0, sizeof *b);
}

// Gist: once the prompt is prefilled (its gist tokens saw all of it), each
// cache keeps only the gist tokens, the last S entries of every layer and
// head: StreamingLLM's selection with no sinks and a window of S.
// compress500x keeps its compression tokens the same way; their KV was
// computed with the LoRA adapters (the prefill's fb.lora), and the decode
// steps that follow run the base weights (no fb.lora).
static void gist_keep(KVCache *prompt, const ModelConfig *c, int n_users, const int *prompt_len) {
    KVPolicy g;
    kvpolicy_default(&g, KVP_STREAMING);
    g.sink = 0;
    g.tokens = c->n_suffix_regs;
    for (int u = 0; u < n_users; u++) {
        CHECK(prompt_len[u] >= c->n_suffix_regs, "gist: prompt %d of %d tokens has no room for %d gist tokens", u,
              prompt_len[u], c->n_suffix_regs);
        kvpolicy_compress(&prompt[u], &g, NULL, prompt_len[u], c->n_heads);
    }
}

// AnLLM: each prompt's mask (plan_mask_anllm over causal) for the prefill, and
// after it each cache keeps only the instruction segment and the anchors.
static uint8_t **anllm_masks(int n_users, const uint8_t *const *kinds, const int *prompt_len) {
    uint8_t **mask = xmalloc((size_t)n_users * sizeof(uint8_t *));
    for (int u = 0; u < n_users; u++) {
        size_t n = (size_t)prompt_len[u];
        mask[u] = xmalloc(n * n);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) mask[u][i * n + j] = j <= i;
        plan_mask_anllm(mask[u], kinds[u], prompt_len[u]);
    }
    return mask;
}

static void anllm_keep(KVCache *prompt, int n_users, const uint8_t *const *kinds, const int *prompt_len) {
    for (int u = 0; u < n_users; u++) {
        uint8_t *keep = xmalloc((size_t)prompt_len[u]);
        for (int j = 0; j < prompt_len[u]; j++) keep[j] = (uint8_t)plan_anllm_keeps(kinds[u][j]);
        kvcache_keep_tokens(&prompt[u], keep, prompt_len[u]);
        free(keep);
    }
}

// Prefill: every user's prompt in one call; caches prompt[u] sized by the plan
// (layer l holds the tokens whose depth exceeds l: exactly what is stored).
// logits [n_users, V] receives each prompt's last row. On failure the caches
// are freed again.
static int beam_prefill(float *logits, KVCache *prompt, BeamSearch *bs, int n_users, const int *const *prompts,
                        const uint8_t *const *kinds, const int *prompt_len, size_t T, Error *e) {
    const ModelConfig *c = &bs->model->config;
    BeamPromptBatch pb;
    beam_prompt_batch_init(&pb, prompt, c, n_users, prompts, kinds, prompt_len, T);
    ForwardBatch fb = pb.fb;
    double t0 = time_now_s();
    uint8_t **masks = c->method == METHOD_ANLLM ? anllm_masks(n_users, kinds, prompt_len) : NULL;
    fb.mask = (const uint8_t *const *)masks;
    uint8_t *lora = NULL; // compress500x: every prompt token (prompt and compression tokens) runs with LoRA
    if (c->method == METHOD_COMPRESS500X) {
        lora = xmalloc(T);
        memset(lora, 1, T);
        fb.lora = lora;
    }
    int rc = bs->kv_policy && bs->kv_policy->kind != KVP_NONE
                 ? prefill_policy(logits, prompt, bs, &fb, e)
                 : model_forward(logits, bs->model, &fb, &bs->scratch, e);
    if (!rc && (c->method == METHOD_GIST || c->method == METHOD_COMPRESS500X)) gist_keep(prompt, c, n_users, prompt_len);
    free(lora);
    if (!rc && c->method == METHOD_ANLLM) anllm_keep(prompt, n_users, kinds, prompt_len);
    for (int u = 0; masks && u < n_users; u++) free(masks[u]);
    free(masks);
    bs->prefill_s = time_now_s() - t0;
    bs->prefill_flops = bs->scratch.last_flops;
    beam_prompt_batch_free(&pb);
    if (rc) {
        for (int u = 0; u < n_users; u++) kvcache_free(&prompt[u]);
        return err_prefix(e, "beam search prefill: ");
    }
    return 0;
}

// The search after the prefill: step 0 expands each prompt's logits row, then
// each decode step feeds every beam its last token in one model_forward and
// every user keeps its top W.
static int beam_decode(UserBeams *ub, StepWork *w, float *logits, BeamSearch *bs, int n_users, int W, Error *e) {
    const Trie *t = bs->trie;
    const int steps = bs->steps;
    const size_t V = (size_t)bs->model->config.vocab_size;
    if (bs->hook) {
        for (int u = 0; u < n_users; u++) w->row_user[u] = u;
        bs->hook(bs->hook_ctx, 0, n_users, w->row_user, w->row_tokens, 0, logits);
    }
    for (int u = 0; u < n_users; u++)
        user_step(&ub[u], w->cand, w->used, w->tmp, w->tmp_tok, w->tmp_score, w->tmp_node, t,
                  logits + (size_t)u * V, V, W, steps, 0);
    for (int s = 1; s < steps; s++) {
        // Feed each beam its last token; beams of one user are consecutive, so
        // the forward pass reads their shared prompt KV once per (layer, kv head).
        int rows = 0;
        for (int u = 0; u < n_users; u++)
            for (int j = 0; j < ub[u].n; j++, rows++) {
                w->step_tok[rows] = ub[u].tokens[(size_t)j * steps + s - 1];
                w->step_cache[rows] = ub[u].cache[j];
                w->row_user[rows] = u;
                memcpy(w->row_tokens + (size_t)rows * s, ub[u].tokens + (size_t)j * steps, (size_t)s * sizeof(int));
            }
        ForwardBatch step = {.n_seqs = rows, .n_new = w->ones, .tokens = w->step_tok, .caches = w->step_cache,
                             .logits_mode = LOGITS_LAST};
        if (model_forward(logits, bs->model, &step, &bs->scratch, e))
            return err_prefix(e, "beam search step %d: ", s + 1);
        if (bs->hook) bs->hook(bs->hook_ctx, s, rows, w->row_user, w->row_tokens, s, logits);
        size_t r0 = 0;
        for (int u = 0; u < n_users; u++) {
            int n_before = ub[u].n;
            user_step(&ub[u], w->cand, w->used, w->tmp, w->tmp_tok, w->tmp_score, w->tmp_node, t,
                      logits + r0 * V, V, W, steps, s);
            r0 += (size_t)n_before;
        }
    }
    return 0;
}

int beam_search_run(BeamHyps *out, BeamSearch *bs, int n_users, const int *const *prompts,
                    const uint8_t *const *kinds, const int *prompt_len, Error *e) {
    Model *m = bs->model;
    const ModelConfig *c = &m->config;
    const int N = c->n_layers, steps = bs->steps;
    const int W = bs->width < bs->n_leaves ? bs->width : bs->n_leaves; // beams never exceed the codes
    const size_t V = (size_t)c->vocab_size;
    size_t T = 0;
    if (beam_run_check(&T, c, W, n_users, kinds, prompt_len, e)) return -1;
    if (c->method != METHOD_FINETUNE && bs->kv_policy && bs->kv_policy->kind != KVP_NONE)
        return err_set(e, "beam search: KV policy %s applies to a full (finetune) model, not to a %s model",
                       kvpolicy_name(bs->kv_policy->kind), config_method_name(c->method));
    bs->prefill_s = bs->decode_s = 0.0;
    bs->kv_bytes = 0;
    bs->prompt_tokens = T;
    bs->gen_tokens = 0;

    KVCache *prompt = xcalloc((size_t)n_users, sizeof(KVCache));
    float *logits = xmalloc((size_t)n_users * (size_t)W * V * sizeof(float));
    if (beam_prefill(logits, prompt, bs, n_users, prompts, kinds, prompt_len, T, e)) {
        free(prompt); free(logits);
        return -1;
    }

    // Beams: W child caches per user, room for the steps - 1 tokens that are fed.
    double t0 = time_now_s();
    int *gcap = xmalloc((size_t)N * sizeof(int));
    for (int l = 0; l < N; l++) gcap[l] = steps - 1;
    size_t UW = (size_t)n_users * (size_t)W;
    KVCache *child = xcalloc(UW, sizeof(KVCache));
    UserBeams *ub = xcalloc((size_t)n_users, sizeof(UserBeams));
    int *node_mem = xmalloc(UW * sizeof(int)), *tok_mem = xmalloc(UW * (size_t)steps * sizeof(int));
    double *score_mem = xmalloc(UW * sizeof(double));
    KVCache **cache_mem = xmalloc(UW * sizeof(KVCache *));
    for (int u = 0; u < n_users; u++) {
        ub[u].node = node_mem + (size_t)u * W;
        ub[u].score = score_mem + (size_t)u * W;
        ub[u].tokens = tok_mem + (size_t)u * W * steps;
        ub[u].cache = cache_mem + (size_t)u * W;
        for (int j = 0; j < W; j++) {
            KVCache *ch = &child[(size_t)u * W + j];
            if (steps > 1) kvcache_init_child(ch, &prompt[u], gcap);
            ub[u].cache[j] = ch;
        }
    }
    StepWork w;
    step_work_alloc(&w, bs->trie, W, steps, UW);
    int rc = beam_decode(ub, &w, logits, bs, n_users, W, e);
    bs->decode_s = time_now_s() - t0;

    if (!rc) {
        for (int u = 0; u < n_users; u++) {
            bs->kv_bytes += prompt[u].bytes;
            for (int j = 0; j < W; j++) bs->kv_bytes += child[(size_t)u * W + j].bytes;
            BeamHyps *h = &out[u];
            h->n = ub[u].n;
            h->tokens = xmalloc((size_t)bs->width * steps * sizeof(int));
            h->scores = xmalloc((size_t)bs->width * sizeof(double));
            memcpy(h->tokens, ub[u].tokens, (size_t)h->n * steps * sizeof(int));
            memcpy(h->scores, ub[u].score, (size_t)h->n * sizeof(double));
            bs->gen_tokens += (size_t)h->n * (size_t)steps;
        }
    }
    for (size_t i = 0; i < UW; i++)
        if (child[i].cap) kvcache_free(&child[i]);
    for (int u = 0; u < n_users; u++) kvcache_free(&prompt[u]);
    step_work_free(&w);
    free(prompt); free(gcap); free(logits); free(child); free(ub);
    free(node_mem); free(tok_mem); free(score_mem); free(cache_mem);
    return rc;
}
