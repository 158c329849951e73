// specbeam.c: see specbeam.h.
#include "runtime/specbeam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/plan.h"

int spec_verify_parse(SpecVerify *v, const char *name) {
    if (!strcmp(name, "strict")) *v = SPEC_VERIFY_STRICT;
    else if (!strcmp(name, "relaxed")) *v = SPEC_VERIFY_RELAXED;
    else return -1;
    return 0;
}

const char *spec_verify_name(SpecVerify v) { return v == SPEC_VERIFY_RELAXED ? "relaxed" : "strict"; }

int specbeam_init(SpecBeam *sb, Model *target, Model *draft, const Trie *trie, int width, int gamma, int draft_beams,
                  SpecVerify verify, uint64_t seed, Error *e) {
    memset(sb, 0, sizeof *sb);
    const ModelConfig *tc = &target->config, *dc = &draft->config;
    if (dc->vocab_size != tc->vocab_size)
        return err_set(e, "speculative beam search: the draft's vocab_size %d differs from the target's %d (a draft "
                       "must share the target's vocabulary)", dc->vocab_size, tc->vocab_size);
    if (dc->method != METHOD_FINETUNE)
        return err_set(e, "speculative beam search: the draft is a %s model; a draft must be a full (finetune) model",
                       config_method_name(dc->method));
    if (tc->method != METHOD_FINETUNE && tc->method != METHOD_EARN)
        return err_set(e, "speculative beam search: the target is a %s model; speculative search takes a full "
                       "(finetune) or EARN target", config_method_name(tc->method));
    if (width < 1) return err_set(e, "speculative beam search: beam width %d < 1", width);
    if (gamma < 1) return err_set(e, "speculative beam search: gamma %d < 1 (levels drafted per round)", gamma);
    if (draft_beams < width)
        return err_set(e, "speculative beam search: draft beams %d < beam width %d", draft_beams, width);
    if (trie->levels < 1 || trie->levels > SPEC_MAX_LEVELS)
        return err_set(e, "speculative beam search: %d code levels (supported: 1..%d)", trie->levels, SPEC_MAX_LEVELS);
    for (int i = 0; i < trie->n_nodes - 1; i++)
        if (trie->edge_token[i] < 0 || trie->edge_token[i] >= tc->vocab_size)
            return err_set(e, "speculative beam search: code token id %d is outside the vocabulary [0, %d)",
                           trie->edge_token[i], tc->vocab_size);
    sb->target = target;
    sb->draft = draft;
    sb->trie = trie;
    sb->width = width;
    sb->steps = trie->levels;
    sb->n_leaves = trie->depth_start[trie->levels + 1] - trie->depth_start[trie->levels];
    sb->gamma = gamma;
    sb->draft_beams = draft_beams;
    sb->verify = verify;
    rng_seed(&sb->rng, seed);
    return 0;
}

void specbeam_free(SpecBeam *sb) {
    forward_scratch_free(&sb->tscratch);
    forward_scratch_free(&sb->dscratch);
    memset(sb, 0, sizeof *sb);
}

// ---------------------------------------------------------------------------
// Relaxed verification of one level (the rule is spelled out in specbeam.h).

typedef struct { double logp; int i; } Ranked;
static int ranked_cmp(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->logp != y->logp) return x->logp > y->logp ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

// Fills sel[k..need) from the candidates not yet taken, by their residual.
static int residual_fill(int *sel, int k, int need, uint8_t *taken, const double *logp, const double *logq, int n,
                         Rng *rng) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = logp[i] > mx ? logp[i] : mx;
    for (; k < need; k++) {
        double total = 0.0, total_p = 0.0;
        for (int i = 0; i < n; i++) {
            if (taken[i]) continue;
            double p = exp(logp[i] - mx), q = exp(logq[i] - mx);
            total += p > q ? p - q : 0.0;
            total_p += p;
        }
        int use_p = !(total > 0.0); // no residual mass left: by p alone
        double u = (double)rng_uniform(rng) * (use_p ? total_p : total), acc = 0.0;
        int pick = -1;
        for (int i = 0; i < n; i++) {
            if (taken[i]) continue;
            double p = exp(logp[i] - mx), q = exp(logq[i] - mx), w = use_p ? p : (p > q ? p - q : 0.0);
            if (w <= 0.0) continue;
            pick = i; // the last candidate with weight absorbs rounding at the end
            acc += w;
            if (u < acc) break;
        }
        if (pick < 0) // every weight underflowed: the first candidate left
            for (int i = 0; i < n && pick < 0; i++) pick = taken[i] ? -1 : i;
        taken[pick] = 1;
        sel[k] = pick;
    }
    return k;
}

int spec_relaxed_select(int *sel, int *accepted, const double *logp, const double *logq, int n, int W, Rng *rng) {
    int need = n < W ? n : W, k = 0;
    int *acc = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    uint8_t *taken = xcalloc((size_t)(n > 0 ? n : 1), 1);
    for (int i = 0; i < n; i++) {
        if (logq[i] == -INFINITY) continue;
        double ratio = exp(fmin(0.0, logp[i] - logq[i]));
        if ((double)rng_uniform(rng) < ratio) acc[k++] = i;
    }
    *accepted = need > 0 && k >= need;
    if (*accepted) {
        for (int i = 0; i < need; i++) { // partial Fisher-Yates
            int j = i + (int)(rng_u64(rng) % (uint64_t)(k - i)), t = acc[i];
            acc[i] = acc[j];
            acc[j] = t;
        }
        memcpy(sel, acc, (size_t)need * sizeof(int));
    } else {
        for (int i = 0; i < k; i++) { sel[i] = acc[i]; taken[acc[i]] = 1; }
        residual_fill(sel, k, need, taken, logp, logq, n, rng);
    }
    Ranked *r = xmalloc((size_t)(need > 0 ? need : 1) * sizeof(Ranked));
    for (int i = 0; i < need; i++) r[i] = (Ranked){logp[sel[i]], sel[i]};
    qsort(r, (size_t)need, sizeof(Ranked), ranked_cmp);
    for (int i = 0; i < need; i++) sel[i] = r[i].i;
    free(r); free(acc); free(taken);
    return need;
}

// ---------------------------------------------------------------------------
// State of one call.

// A drafted node: level j of a round (0-based below the round's beams).
typedef struct {
    int parent;   // j == 0: the round's beam it extends; else its index in level j - 1
    int root;     // the round's beam it descends from
    int token, node;
    int seq_at;   // its index in its root's tree sequence (the root's own token is 0)
    double qscore; // the root's target score + the draft's log-probs along the drafted levels
} DNode;

// A beam during verification (and between rounds: tok, score, node).
typedef struct {
    int root;     // the round's beam it descends from
    int node;     // trie node
    double score; // target cumulative log-prob
    const float *row; // target logits row after its last token (NULL: not fed)
    int n_path;   // fed tree nodes on its path, root first: their seq_at
    int path[SPEC_MAX_LEVELS + 1];
    int tok[SPEC_MAX_LEVELS];
} VBeam;

typedef struct {
    int P;           // prompt tokens
    int g, g_new;    // level of the beams at the round's start / after it
    int n, d, done;  // beams, levels drafted this round, finished
    VBeam *beam;     // [W]
    VBeam *next;     // [W]
    VBeam *cur;      // [W]
    KVCache **tb, **tb2; // [W] target beam caches (tokens fed: g - 1) and the spare set
    KVCache **tt;        // [W] target tree caches (scratch of a round)
    KVCache **db, **db2; // [W] draft caches of the beams and the spare set
    KVCache **dw, **dw2; // [N] draft beam caches during drafting
    int *dfed, *dfed2;   // [W] tokens db[j] holds
    int nn[SPEC_MAX_LEVELS];
    DNode *dn;           // [gamma * N]: level j at j * N
    int *roff;           // [W + 1] first row of root r's tree within the user's rows (then the total)
    size_t row0;         // the user's first row in the tree forward's logits
} SUser;

typedef struct {
    SUser *u;            // [n_users]
    KVCache *tp, *dp;    // [n_users] prompt caches (target, draft)
    KVCache *kv;         // child caches of every user
    KVCache **kvp;       // pointer arrays carved per user
    VBeam *vb;
    DNode *dn;
    int *ints;
    BeamCand *cand;      // [max children * max(W, N)]
    double *logp, *logq; // [same]
    int *sel;            // [W]
    int *slot;           // [trie nodes] drafted node index of a trie node at the level being verified, or -1
    const float **rows;  // [max(W, N)]
    double *base;        // [max(W, N)]
    int *node;           // [max(W, N)]
    int *idx;            // [L] gather indices
    float *tlogits;      // target logits [n_users * (W + N * gamma), V]
    float *dlogits;      // draft logits [n_users * max(W, N), V]
    int W, N, n_users;
    size_t max_cand;
} SWork;

static size_t max_children(const Trie *t) {
    size_t m = 1;
    for (int x = 0; x < t->n_nodes; x++) {
        size_t d = (size_t)(t->first_edge[x + 1] - t->first_edge[x]);
        m = d > m ? d : m;
    }
    return m;
}

// The caches of user u: target beam, spare and tree caches, draft beam and spare caches, draft search caches.
static void user_caches(SUser *su, KVCache *kv, KVCache **kvp, KVCache *tp, KVCache *dp, int W, int N, int L,
                        int tree_cap) {
    const int nl = tp->n_layers > dp->n_layers ? tp->n_layers : dp->n_layers;
    int *tcap = xmalloc(3 * (size_t)nl * sizeof(int)), *dcap = tcap + nl, *big = dcap + nl;
    for (int l = 0; l < nl; l++) { tcap[l] = L - 1 > 0 ? L - 1 : 1; dcap[l] = L; big[l] = tree_cap; }
    KVCache ***sets[7] = {&su->tb, &su->tb2, &su->tt, &su->db, &su->db2, &su->dw, &su->dw2};
    int counts[7] = {W, W, W, W, W, N, N};
    for (int s = 0, at = 0; s < 7; s++) {
        *sets[s] = kvp + at;
        for (int j = 0; j < counts[s]; j++, at++) {
            kvp[at] = &kv[at];
            if (s < 3) kvcache_init_child(&kv[at], tp, s == 2 ? big : tcap);
            else kvcache_init_child(&kv[at], dp, dcap);
        }
    }
    free(tcap);
}

static int caches_per_user(int W, int N) { return 5 * W + 2 * N; }

static void work_alloc(SWork *w, const SpecBeam *sb, int n_users, const int *prompt_len) {
    const int W = sb->width < sb->n_leaves ? sb->width : sb->n_leaves, N = sb->draft_beams, L = sb->steps;
    const int WN = W > N ? W : N;
    const size_t V = (size_t)sb->target->config.vocab_size, nu = (size_t)n_users;
    memset(w, 0, sizeof *w);
    w->W = W; w->N = N; w->n_users = n_users;
    w->u = xcalloc(nu, sizeof(SUser));
    w->tp = xcalloc(nu, sizeof(KVCache));
    w->dp = xcalloc(nu, sizeof(KVCache));
    w->kv = xcalloc(nu * (size_t)caches_per_user(W, N), sizeof(KVCache));
    w->kvp = xcalloc(nu * (size_t)caches_per_user(W, N), sizeof(KVCache *));
    w->vb = xcalloc(nu * 3 * (size_t)W, sizeof(VBeam));
    w->dn = xcalloc(nu * (size_t)sb->gamma * (size_t)N, sizeof(DNode));
    w->ints = xcalloc(nu * 5 * (size_t)W, sizeof(int));
    w->max_cand = max_children(sb->trie) * (size_t)WN;
    w->cand = xmalloc(w->max_cand * sizeof(BeamCand));
    w->logp = xmalloc(w->max_cand * sizeof(double));
    w->logq = xmalloc(w->max_cand * sizeof(double));
    w->sel = xmalloc((size_t)W * sizeof(int));
    w->slot = xmalloc((size_t)sb->trie->n_nodes * sizeof(int));
    for (int i = 0; i < sb->trie->n_nodes; i++) w->slot[i] = -1;
    w->rows = xmalloc((size_t)WN * sizeof(float *));
    w->base = xmalloc((size_t)WN * sizeof(double));
    w->node = xmalloc((size_t)WN * sizeof(int));
    w->idx = xmalloc((size_t)(L + 1) * sizeof(int));
    w->tlogits = xmalloc(nu * (size_t)(W + N * sb->gamma) * V * sizeof(float));
    w->dlogits = xmalloc(nu * (size_t)WN * V * sizeof(float));
    for (int u = 0; u < n_users; u++) {
        SUser *su = &w->u[u];
        su->P = prompt_len[u];
        su->beam = w->vb + (size_t)u * 3 * W;
        su->next = su->beam + W;
        su->cur = su->next + W;
        su->dn = w->dn + (size_t)u * sb->gamma * N;
        int *ip = w->ints + (size_t)u * 5 * W;
        su->dfed = ip; su->dfed2 = ip + W; su->roff = ip + 2 * W;
    }
}

static void work_free(SWork *w, int caches_ready) {
    size_t n = (size_t)w->n_users * (size_t)caches_per_user(w->W, w->N);
    for (size_t i = 0; caches_ready && i < n; i++) kvcache_free(&w->kv[i]);
    for (int u = 0; u < w->n_users; u++) {
        if (w->tp[u].cap) kvcache_free(&w->tp[u]);
        if (w->dp[u].cap) kvcache_free(&w->dp[u]);
    }
    free(w->u); free(w->tp); free(w->dp); free(w->kv); free(w->kvp); free(w->vb); free(w->dn); free(w->ints);
    free(w->cand); free(w->logp); free(w->logq); free(w->sel); free(w->slot); free(w->rows); free(w->base);
    free(w->node); free(w->idx); free(w->tlogits); free(w->dlogits);
}

// ---------------------------------------------------------------------------
// Prefill and selection.

// Every user's prompt through model m in one call (kinds: the layer plan, or
// NULL for every token through every layer); logits [n_users, V] the last rows.
static int prefill(float *logits, KVCache *prompt, Model *m, ForwardScratch *s, int n_users,
                   const int *const *prompts, const uint8_t *const *kinds, const int *prompt_len, Error *e) {
    size_t T = 0;
    for (int u = 0; u < n_users; u++) T += (size_t)prompt_len[u];
    BeamPromptBatch pb;
    beam_prompt_batch_init(&pb, prompt, &m->config, n_users, prompts, kinds, prompt_len, T);
    int rc = model_forward(logits, m, &pb.fb, s, e);
    beam_prompt_batch_free(&pb);
    return rc;
}

// Candidates of nb beams (row rows[j], score base[j], trie node node[j]) in
// (beam, token) order; returns their count.
static int make_cands(BeamCand *cand, const Trie *t, int nb, const float *const *rows, const double *base,
                      const int *node, size_t V) {
    int nc = 0;
    for (int j = 0; j < nb; j++) {
        double lz = beam_row_logz(rows[j], V);
        for (int ed = t->first_edge[node[j]]; ed < t->first_edge[node[j] + 1]; ed++)
            cand[nc++] = (BeamCand){base[j] + ((double)rows[j][t->edge_token[ed]] - lz), j, ed};
    }
    return nc;
}

// Level 1 of user u from its prompt row: the top W, as beam.c's first step.
static void first_level(SWork *w, const SpecBeam *sb, SUser *su, const float *row) {
    const size_t V = (size_t)sb->target->config.vocab_size;
    w->rows[0] = row; w->base[0] = 0.0; w->node[0] = 0;
    int nc = make_cands(w->cand, sb->trie, 1, w->rows, w->base, w->node, V);
    qsort(w->cand, (size_t)nc, sizeof(BeamCand), beam_cand_cmp);
    su->n = nc < w->W ? nc : w->W;
    for (int i = 0; i < su->n; i++) {
        VBeam *b = &su->beam[i];
        memset(b, 0, sizeof *b);
        b->tok[0] = sb->trie->edge_token[w->cand[i].edge];
        b->node = w->cand[i].edge + 1;
        b->score = w->cand[i].score;
        su->dfed[i] = 0;
    }
    su->g = 1;
    su->done = sb->steps == 1;
}

// ---------------------------------------------------------------------------
// Drafting: levels 0 .. d-1 of the round with the draft model.

// Level j's top N from the draft's rows (j == 0: one row per round beam).
static void draft_select(SWork *w, const SpecBeam *sb, SUser *su, int j, const float *rows) {
    const size_t V = (size_t)sb->draft->config.vocab_size;
    const int nb = j == 0 ? su->n : su->nn[j - 1];
    const DNode *up = su->dn + (size_t)(j - 1) * w->N;
    for (int k = 0; k < nb; k++) {
        w->rows[k] = rows + (size_t)k * V;
        w->base[k] = j == 0 ? su->beam[k].score : up[k].qscore;
        w->node[k] = j == 0 ? su->beam[k].node : up[k].node;
    }
    int nc = make_cands(w->cand, sb->trie, nb, w->rows, w->base, w->node, V);
    qsort(w->cand, (size_t)nc, sizeof(BeamCand), beam_cand_cmp);
    su->nn[j] = nc < w->N ? nc : w->N;
    DNode *out = su->dn + (size_t)j * w->N;
    for (int i = 0; i < su->nn[j]; i++) {
        const BeamCand *c = &w->cand[i];
        out[i] = (DNode){.parent = c->beam, .root = j == 0 ? c->beam : up[c->beam].root,
                         .token = sb->trie->edge_token[c->edge], .node = c->edge + 1, .qscore = c->score};
    }
    if (j + 1 >= su->d) return; // level j is the last drafted: nothing more to feed
    for (int i = 0; i < su->nn[j]; i++) // the caches that feed level j next: each node's parent's path
        kvcache_copy(su->dw2[i], j == 0 ? su->db[out[i].parent] : su->dw[out[i].parent]);
    KVCache **t = su->dw; su->dw = su->dw2; su->dw2 = t;
}

// The batch of draft call j: j == 0 feeds each round beam the tokens its
// draft cache lacks; j >= 1 feeds level j - 1's nodes. Returns the sequences.
static int draft_batch(SWork *w, int j, int *n_new, int *tok, int *pos, KVCache **caches) {
    int ns = 0, at = 0;
    for (int u = 0; u < w->n_users; u++) {
        SUser *su = &w->u[u];
        if (su->done || su->d <= j) continue;
        if (j == 0) {
            for (int r = 0; r < su->n; r++, ns++) {
                n_new[ns] = su->g - su->dfed[r];
                for (int i = su->dfed[r]; i < su->g; i++, at++) { tok[at] = su->beam[r].tok[i]; pos[at] = su->P + i; }
                caches[ns] = su->db[r];
                su->dfed[r] = su->g;
            }
        } else {
            const DNode *lv = su->dn + (size_t)(j - 1) * w->N;
            for (int k = 0; k < su->nn[j - 1]; k++, ns++, at++) {
                n_new[ns] = 1;
                tok[at] = lv[k].token;
                pos[at] = su->P + su->g + j - 1;
                caches[ns] = su->dw[k];
            }
        }
    }
    return ns;
}

static int draft_round(SWork *w, SpecBeam *sb, Error *e) {
    double t0 = time_now_s();
    int maxd = 0;
    for (int u = 0; u < w->n_users; u++) maxd = !w->u[u].done && w->u[u].d > maxd ? w->u[u].d : maxd;
    size_t cap = (size_t)w->n_users * (size_t)(w->W > w->N ? w->W : w->N);
    int *n_new = xmalloc(cap * sizeof(int)), *tok = xmalloc(cap * (size_t)sb->steps * sizeof(int));
    int *pos = xmalloc(cap * (size_t)sb->steps * sizeof(int));
    KVCache **caches = xmalloc(cap * sizeof(KVCache *));
    const size_t V = (size_t)sb->draft->config.vocab_size;
    int rc = 0;
    for (int j = 0; j < maxd && !rc; j++) {
        int ns = draft_batch(w, j, n_new, tok, pos, caches);
        ForwardBatch fb = {.n_seqs = ns, .n_new = n_new, .tokens = tok, .positions = pos, .caches = caches,
                           .logits_mode = LOGITS_LAST};
        rc = model_forward(w->dlogits, sb->draft, &fb, &sb->dscratch, e);
        if (rc) { err_prefix(e, "draft step %d: ", j + 1); break; }
        sb->fig.draft_calls++;
        size_t r0 = 0;
        for (int u = 0; u < w->n_users; u++) {
            SUser *su = &w->u[u];
            if (su->done || su->d <= j) continue;
            int rows = j == 0 ? su->n : su->nn[j - 1];
            draft_select(w, sb, su, j, w->dlogits + r0 * V);
            r0 += (size_t)rows;
        }
    }
    free(n_new); free(tok); free(pos); free(caches);
    sb->fig.draft_s += time_now_s() - t0;
    return rc;
}

// ---------------------------------------------------------------------------
// The target's tree forward.

// Tree sequence lengths of user su's roots and each drafted node's seq_at.
static int tree_layout(SUser *su, int N) {
    int total = 0;
    for (int r = 0; r < su->n; r++) su->roff[r] = 1; // the root's own token
    for (int j = 0; j < su->d; j++)
        for (int k = 0; k < su->nn[j]; k++) {
            DNode *x = &su->dn[(size_t)j * N + k];
            x->seq_at = su->roff[x->root]++;
        }
    for (int r = 0; r < su->n; r++) { // lengths -> offsets
        int len = su->roff[r];
        su->roff[r] = total;
        total += len;
    }
    return total;
}

// Fills user su's sequences: tokens, positions, masks (a node sees its
// ancestors and itself) at their offsets; the tree caches start as the beams'.
static void tree_fill(SUser *su, int N, int *n_new, int *tok, int *pos, uint8_t *mask, const uint8_t **masks,
                      KVCache **caches, int ns0, size_t at0, size_t *mask_at) {
    for (int r = 0; r < su->n; r++) {
        int len = su->roff[r + 1] - su->roff[r];
        n_new[ns0 + r] = len;
        masks[ns0 + r] = mask + *mask_at;
        uint8_t *m = mask + *mask_at;
        memset(m, 0, (size_t)len * (size_t)len);
        m[0] = 1;
        tok[at0 + (size_t)su->roff[r]] = su->beam[r].tok[su->g - 1];
        pos[at0 + (size_t)su->roff[r]] = su->P + su->g - 1;
        caches[ns0 + r] = su->tt[r];
        kvcache_copy(su->tt[r], su->tb[r]);
        *mask_at += (size_t)len * (size_t)len;
    }
    for (int j = 0; j < su->d; j++)
        for (int k = 0; k < su->nn[j]; k++) {
            const DNode *x = &su->dn[(size_t)j * N + k];
            int len = n_new[ns0 + x->root], s = x->seq_at;
            int ps = j == 0 ? 0 : su->dn[(size_t)(j - 1) * N + x->parent].seq_at;
            uint8_t *m = (uint8_t *)masks[ns0 + x->root];
            memcpy(m + (size_t)s * len, m + (size_t)ps * len, (size_t)len);
            m[(size_t)s * len + s] = 1;
            tok[at0 + (size_t)su->roff[x->root] + s] = x->token;
            pos[at0 + (size_t)su->roff[x->root] + s] = su->P + su->g + j;
        }
}

static int verify_forward(SWork *w, SpecBeam *sb, Error *e) {
    size_t T = 0, M = 0;
    int ns = 0;
    for (int u = 0; u < w->n_users; u++) {
        SUser *su = &w->u[u];
        if (su->done) continue;
        int t = tree_layout(su, w->N);
        su->roff[su->n] = t; // sentinel: roff has W + 1 entries
        su->row0 = T;
        T += (size_t)t;
        M += (size_t)t * (size_t)t;
        ns += su->n;
        for (int j = 0; j < su->d; j++) sb->fig.tree_nodes += (size_t)su->nn[j];
    }
    int *n_new = xmalloc((size_t)ns * sizeof(int)), *tok = xmalloc(T * sizeof(int)), *pos = xmalloc(T * sizeof(int));
    uint8_t *mask = xmalloc(M);
    const uint8_t **masks = xmalloc((size_t)ns * sizeof(uint8_t *));
    KVCache **caches = xmalloc((size_t)ns * sizeof(KVCache *));
    size_t mask_at = 0;
    for (int u = 0, s0 = 0; u < w->n_users; u++) {
        SUser *su = &w->u[u];
        if (su->done) continue;
        tree_fill(su, w->N, n_new, tok, pos, mask, masks, caches, s0, su->row0, &mask_at);
        s0 += su->n;
    }
    ForwardBatch fb = {.n_seqs = ns, .n_new = n_new, .tokens = tok, .positions = pos, .mask = masks,
                       .caches = caches, .logits_mode = LOGITS_ALL};
    int rc = model_forward(w->tlogits, sb->target, &fb, &sb->tscratch, e);
    if (rc) err_prefix(e, "speculative beam search, target verification: ");
    free(n_new); free(tok); free(pos); free(mask); free(masks); free(caches);
    return rc;
}

// ---------------------------------------------------------------------------
// Verification and the next round's state.

// The level after cur (ncur beams, at level g + lev): chooses next[0..need)
// and says whether the drafted level was accepted (the chosen ones all drafted).
static int verify_level(SWork *w, SpecBeam *sb, SUser *su, int lev, int ncur, const float *rows, int *need) {
    const size_t V = (size_t)sb->target->config.vocab_size;
    const int drafted = lev < su->d;
    const DNode *lv = su->dn + (size_t)lev * w->N;
    for (int k = 0; drafted && k < su->nn[lev]; k++) w->slot[lv[k].node] = k;
    for (int k = 0; k < ncur; k++) {
        w->rows[k] = su->cur[k].row; w->base[k] = su->cur[k].score; w->node[k] = su->cur[k].node;
    }
    int nc = make_cands(w->cand, sb->trie, ncur, w->rows, w->base, w->node, V), ok = drafted;
    if (sb->verify == SPEC_VERIFY_STRICT) {
        qsort(w->cand, (size_t)nc, sizeof(BeamCand), beam_cand_cmp);
        *need = nc < w->W ? nc : w->W;
        for (int i = 0; i < *need; i++) {
            w->sel[i] = i;
            ok = ok && w->slot[w->cand[i].edge + 1] >= 0;
        }
    } else {
        for (int i = 0; i < nc; i++) {
            int k = w->slot[w->cand[i].edge + 1];
            w->logp[i] = w->cand[i].score;
            w->logq[i] = drafted && k >= 0 ? lv[k].qscore : -INFINITY;
        }
        int acc;
        *need = spec_relaxed_select(w->sel, &acc, w->logp, w->logq, nc, w->W, &sb->rng);
        ok = ok && acc;
    }
    for (int i = 0; i < *need; i++) {
        const BeamCand *c = &w->cand[w->sel[i]];
        VBeam *b = &su->next[i];
        *b = su->cur[c->beam];
        b->tok[su->g + lev] = sb->trie->edge_token[c->edge];
        b->node = c->edge + 1;
        b->score = c->score;
        b->row = NULL;
        if (ok) {
            const DNode *x = &lv[w->slot[b->node]];
            b->row = rows + (size_t)(su->roff[b->root] + x->seq_at) * V;
            b->path[b->n_path++] = x->seq_at;
        }
    }
    for (int k = 0; drafted && k < su->nn[lev]; k++) w->slot[lv[k].node] = -1;
    if (drafted) {
        sb->fig.level_tried[su->g + lev + 1]++;
        sb->fig.level_accepted[su->g + lev + 1] += (size_t)ok;
    }
    return ok;
}

// User su's round: walks the drafted levels until one is not accepted; the
// new beams (level g_new, last token not fed) go to su->beam.
static void verify_user(SWork *w, SpecBeam *sb, SUser *su) {
    const size_t V = (size_t)sb->target->config.vocab_size;
    const float *rows = w->tlogits + su->row0 * V;
    for (int r = 0; r < su->n; r++) {
        VBeam *b = &su->cur[r];
        *b = su->beam[r];
        b->root = r;
        b->row = rows + (size_t)su->roff[r] * V;
        b->n_path = 1;
        b->path[0] = 0;
    }
    int ncur = su->n, lev = 0, need = 0;
    for (;; lev++) {
        int ok = verify_level(w, sb, su, lev, ncur, rows, &need);
        VBeam *t = su->cur; su->cur = su->next; su->next = t; // cur: the chosen level
        ncur = need;
        if (!ok) break;
    }
    sb->fig.accepted_levels += (size_t)lev;
    sb->fig.user_rounds++;
    memcpy(su->beam, su->cur, (size_t)ncur * sizeof(VBeam));
    su->n = ncur;
    su->g_new = su->g + lev + 1;
}

// Tokens the draft cache of a round-end draft beam k holds in common with b,
// up to `limit` (the path of level d - 2's node k; -1: another root).
static int draft_beam_match(const SUser *su, int N, int k, const VBeam *b, int limit) {
    const DNode *x = &su->dn[(size_t)(su->d - 2) * N + k];
    if (x->root != b->root) return -1;
    int tok[SPEC_MAX_LEVELS];
    for (int j = su->d - 2; j >= 0; j--) { // the node's drafted tokens, levels g+1 .. g+d-1
        tok[j] = x->token;
        if (j > 0) x = &su->dn[(size_t)(j - 1) * N + x->parent];
    }
    int m = su->g;
    for (int j = 0; j <= su->d - 2 && m < limit && tok[j] == b->tok[m]; j++) m++;
    return m;
}

// New beam i's caches: the target's gathered from its root's tree (earlier
// tokens + the accepted path), the draft's from the longest fed prefix.
static void commit_beam(SWork *w, SUser *su, int i) {
    const VBeam *b = &su->beam[i];
    int n = 0;
    for (int q = 0; q < su->g - 1; q++) w->idx[n++] = q;
    for (int p = 0; p < b->n_path; p++) w->idx[n++] = su->g - 1 + b->path[p];
    CHECK(n == su->g_new - 1, "specbeam: path of %d tokens at level %d", n, su->g_new);
    kvcache_gather(su->tb2[i], su->tt[b->root], w->idx, n);
    const KVCache *src = su->db[b->root];
    int m = su->dfed[b->root] < su->g_new - 1 ? su->dfed[b->root] : su->g_new - 1;
    for (int k = 0; su->d >= 2 && k < su->nn[su->d - 2]; k++) {
        int mk = draft_beam_match(su, w->N, k, b, su->g_new - 1);
        if (mk > m) { m = mk; src = su->dw[k]; }
    }
    for (int q = 0; q < m; q++) w->idx[q] = q;
    kvcache_gather(su->db2[i], src, w->idx, m);
    su->dfed2[i] = m;
}

static void commit_user(SWork *w, const SpecBeam *sb, SUser *su) {
    if (su->g_new >= sb->steps) {
        su->done = 1;
        return;
    }
    for (int i = 0; i < su->n; i++) commit_beam(w, su, i);
    KVCache **t = su->tb; su->tb = su->tb2; su->tb2 = t;
    t = su->db; su->db = su->db2; su->db2 = t;
    int *f = su->dfed; su->dfed = su->dfed2; su->dfed2 = f;
    su->g = su->g_new;
}

// One round for every unfinished user; returns 1 while some user is unfinished.
static int spec_round(SWork *w, SpecBeam *sb, Error *e) {
    int active = 0;
    for (int u = 0; u < w->n_users; u++) {
        SUser *su = &w->u[u];
        if (su->done) continue;
        int left = sb->steps - su->g - 1;
        su->d = sb->gamma < left ? sb->gamma : left;
        active++;
        sb->fig.user_target_calls++;
    }
    if (!active) return 0;
    if (draft_round(w, sb, e)) return -1;
    double t0 = time_now_s();
    if (verify_forward(w, sb, e)) return -1;
    sb->fig.target_calls++;
    for (int u = 0; u < w->n_users; u++) {
        SUser *su = &w->u[u];
        if (su->done) continue;
        verify_user(w, sb, su);
        commit_user(w, sb, su);
    }
    sb->fig.verify_s += time_now_s() - t0;
    return 1;
}

static void reset_figures(SpecBeam *sb, int n_users) {
    sb->prefill_s = sb->decode_s = sb->prefill_flops = 0.0;
    sb->kv_bytes = sb->kv_scratch_bytes = sb->prompt_tokens = sb->gen_tokens = 0;
    memset(&sb->fig, 0, sizeof sb->fig);
    sb->fig.users = (size_t)n_users;
}

void spec_figures_add(SpecFigures *acc, const SpecFigures *f) {
    acc->draft_s += f->draft_s;
    acc->verify_s += f->verify_s;
    acc->target_calls += f->target_calls;
    acc->draft_calls += f->draft_calls;
    acc->user_target_calls += f->user_target_calls;
    acc->users += f->users;
    acc->user_rounds += f->user_rounds;
    acc->accepted_levels += f->accepted_levels;
    acc->tree_nodes += f->tree_nodes;
    for (int l = 0; l <= SPEC_MAX_LEVELS; l++) {
        acc->level_tried[l] += f->level_tried[l];
        acc->level_accepted[l] += f->level_accepted[l];
    }
}

static int check_run(const SpecBeam *sb, int n_users, const uint8_t *const *kinds, const int *prompt_len, Error *e) {
    if (n_users < 1) return err_set(e, "speculative beam search: no users");
    if (sb->n_leaves < 1) return err_set(e, "speculative beam search: the trie holds no item code");
    if (sb->target->config.method == METHOD_EARN && !kinds)
        return err_set(e, "speculative beam search: an EARN target needs the token kinds of the prompt");
    for (int u = 0; u < n_users; u++)
        if (prompt_len[u] < 1) return err_set(e, "speculative beam search: user %d has an empty prompt", u);
    return 0;
}

// Both prefills, then level 1 of every user.
static int spec_start(SWork *w, SpecBeam *sb, int n_users, const int *const *prompts, const uint8_t *const *kinds,
                      const int *prompt_len, Error *e) {
    double t0 = time_now_s();
    if (prefill(w->tlogits, w->tp, sb->target, &sb->tscratch, n_users, prompts, kinds, prompt_len, e))
        return err_prefix(e, "speculative beam search, target prefill: ");
    sb->prefill_flops = sb->tscratch.last_flops;
    sb->fig.target_calls = 1;
    sb->fig.user_target_calls = (size_t)n_users;
    double t1 = time_now_s();
    if (prefill(w->dlogits, w->dp, sb->draft, &sb->dscratch, n_users, prompts, NULL, prompt_len, e))
        return err_prefix(e, "speculative beam search, draft prefill: ");
    sb->fig.draft_calls = 1;
    sb->fig.draft_s = time_now_s() - t1;
    sb->prefill_s = time_now_s() - t0;
    const int N = w->N, L = sb->steps, tree_cap = L + N * sb->gamma;
    for (int u = 0; u < n_users; u++) {
        user_caches(&w->u[u], w->kv + (size_t)u * caches_per_user(w->W, N), w->kvp + (size_t)u * caches_per_user(w->W, N),
                    &w->tp[u], &w->dp[u], w->W, N, L, tree_cap);
        first_level(w, sb, &w->u[u], w->tlogits + (size_t)u * (size_t)sb->target->config.vocab_size);
    }
    return 0;
}

static void spec_output(BeamHyps *out, SWork *w, SpecBeam *sb) {
    const int L = sb->steps;
    for (int u = 0; u < w->n_users; u++) {
        SUser *su = &w->u[u];
        sb->kv_bytes += w->tp[u].bytes;
        sb->kv_scratch_bytes += w->dp[u].bytes;
        for (int j = 0; j < w->W; j++) sb->kv_bytes += su->tb[j]->bytes;
        for (int j = 0; j < caches_per_user(w->W, w->N) - w->W; j++)
            sb->kv_scratch_bytes += w->kv[(size_t)u * caches_per_user(w->W, w->N) + w->W + j].bytes;
        BeamHyps *h = &out[u];
        h->n = su->n;
        h->tokens = xmalloc((size_t)sb->width * L * sizeof(int));
        h->scores = xmalloc((size_t)sb->width * sizeof(double));
        for (int j = 0; j < su->n; j++) {
            memcpy(h->tokens + (size_t)j * L, su->beam[j].tok, (size_t)L * sizeof(int));
            h->scores[j] = su->beam[j].score;
        }
        sb->gen_tokens += (size_t)su->n * (size_t)L;
    }
}

int specbeam_run(BeamHyps *out, SpecBeam *sb, int n_users, const int *const *prompts, const uint8_t *const *kinds,
                 const int *prompt_len, Error *e) {
    if (check_run(sb, n_users, kinds, prompt_len, e)) return -1;
    reset_figures(sb, n_users);
    for (int u = 0; u < n_users; u++) sb->prompt_tokens += (size_t)prompt_len[u];
    SWork w;
    work_alloc(&w, sb, n_users, prompt_len);
    int rc = spec_start(&w, sb, n_users, prompts, kinds, prompt_len, e);
    int caches_ready = rc == 0;
    double t1 = time_now_s();
    while (rc == 0) {
        int r = spec_round(&w, sb, e);
        if (r <= 0) { rc = r; break; }
    }
    if (rc == 0) spec_output(out, &w, sb);
    sb->decode_s = time_now_s() - t1;
    work_free(&w, caches_ready);
    return rc;
}
