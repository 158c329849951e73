// test_beam.c: constrained beam search (runtime/beam.c) and the shared-parent
// grouped attention it relies on (runtime/model.c).
//
//  - exact regime: with at most `width` distinct prefixes at every level but the
//    last, beam search is exhaustive, so it must return exactly the `width` best
//    item codes found by scoring every code with the double-precision reference
//    model (tests/helpers/ref_model.c): same scores (abs tol 1e-4), same order up
//    to ties; batched users give the same answer as one user per call;
//  - pruning regime (wider trie, narrow beam): the same beams and scores as a
//    naive beam search written here on top of the reference model (no cache);
//  - EARN path: every logits row the search uses (prefill and each decode step,
//    reported by the step hook) equals the reference forward of prompt + the
//    row's generated tokens with the EARN plan, for several k and register
//    counts (rel tol 1e-4);
//  - grouped attention: many beams over shared parents (two prompts, 41 and 3
//    beams, a parentless sequence in between, beams with several new tokens)
//    against the reference.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/trie.h"
#include "helpers/ref_model.h"
#include "runtime/beam.h"
#include "runtime/plan.h"

#define TOL_REL 1e-4
#define TOL_SCORE 1e-4

static void random_tokens(int *t, int n, int lo, int hi, Rng *r) {
    for (int i = 0; i < n; i++) t[i] = lo + (int)(rng_u64(r) % (uint64_t)(hi - lo));
}

// Item codes: 4 levels, level j uses tokens base[j] .. base[j] + n[j] - 1. Items
// are a random subset of all combinations (each kept with probability keep),
// plus one duplicate code (a collision) at the end. Returns the item count;
// item_tokens [(n_items + 1) * 4].
static int make_items(int **item_tokens, const int *base, const int *n, double keep, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    int total = n[0] * n[1] * n[2] * n[3];
    int *it = malloc(sizeof(int) * 4 * (size_t)(total + 2));
    int k = 0;
    for (int i = 0; i < 4; i++) it[i] = -1;
    for (int a = 0; a < n[0]; a++)
        for (int b = 0; b < n[1]; b++)
            for (int c = 0; c < n[2]; c++)
                for (int d = 0; d < n[3]; d++) {
                    if (rng_uniform(&r) >= keep) continue;
                    k++;
                    int *row = it + 4 * k;
                    row[0] = base[0] + a; row[1] = base[1] + b; row[2] = base[2] + c; row[3] = base[3] + d;
                }
    k++;
    memcpy(it + 4 * k, it + 4 * 1, 4 * sizeof(int)); // item k collides with item 1
    *item_tokens = it;
    return k;
}

// Score of one full sequence's continuation: sum of log_softmax over the full
// vocabulary of cont[i] at the row before it, from the reference model.
static double ref_score(const Model *m, const int *prompt, const uint8_t *kinds, int P, const int *cont, int n) {
    const ModelConfig *c = &m->config;
    int T = P + n, V = c->vocab_size;
    int *seq = malloc(sizeof(int) * T), *depth = malloc(sizeof(int) * T);
    uint8_t *kd = malloc((size_t)T);
    memcpy(seq, prompt, sizeof(int) * P);
    memcpy(seq + P, cont, sizeof(int) * n);
    for (int i = 0; i < T; i++) kd[i] = i < P ? (kinds ? kinds[i] : TOKEN_KIND_HISTORY) : TOKEN_KIND_TARGET;
    plan_depth_for(depth, kd, T, c);
    double *lg = malloc(sizeof(double) * (size_t)T * V);
    ref_forward(lg, NULL, m, seq, NULL, depth, NULL, T);
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        const double *row = lg + (size_t)(P - 1 + i) * V;
        double mx = -INFINITY, z = 0.0;
        for (int v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++) z += exp(row[v] - mx);
        s += row[cont[i]] - (mx + log(z));
    }
    free(seq); free(depth); free(kd); free(lg);
    return s;
}

typedef struct { double score; int leaf; } Scored;
static int scored_cmp(const void *a, const void *b) {
    const Scored *x = a, *y = b;
    return (x->score < y->score) - (x->score > y->score);
}

// Checks one user's beams against exhaustive scoring of every distinct code.
static void check_exhaustive(const Model *m, const Trie *t, const int *prompt, int P, const BeamHyps *h, int W) {
    int leaf0 = t->depth_start[4], n_leaves = t->depth_start[5] - leaf0;
    Scored *all = malloc(sizeof(Scored) * n_leaves);
    int (*codes)[4] = malloc(sizeof(int[4]) * n_leaves);
    for (int k = 0; k < n_leaves; k++) {
        int item = t->leaf_items[t->leaf_first[k]];
        (void)item;
        // Recover the leaf's code by walking up: find the edge into each node.
        int node = leaf0 + k;
        for (int lv = 3; lv >= 0; lv--) {
            codes[k][lv] = t->edge_token[node - 1];
            int parent = 0;
            while (t->first_edge[parent + 1] <= node - 1) parent++;
            node = parent;
        }
        all[k].score = ref_score(m, prompt, NULL, P, codes[k], 4);
        all[k].leaf = k;
    }
    qsort(all, (size_t)n_leaves, sizeof(Scored), scored_cmp);
    int want = n_leaves < W ? n_leaves : W;
    assert_int_equal(h->n, want);
    for (int i = 0; i < want; i++) {
        // The i-th beam's score equals the i-th best exhaustive score ...
        assert_true(fabs(h->scores[i] - all[i].score) < TOL_SCORE);
        if (i) assert_true(h->scores[i] <= h->scores[i - 1]);
        // ... and its code is a code whose exhaustive score is that (the same code unless tied).
        const int *bc = h->tokens + (size_t)i * 4;
        int found = 0;
        for (int k = 0; k < n_leaves && !found; k++)
            if (!memcmp(codes[all[k].leaf], bc, sizeof(int[4]))) {
                found = 1;
                assert_true(fabs(all[k].score - h->scores[i]) < TOL_SCORE);
                if (k != i) assert_true(fabs(all[k].score - all[i].score) < TOL_SCORE); // a tie
            }
        assert_true(found);
        for (int j = 0; j < i; j++) assert_true(memcmp(h->tokens + (size_t)j * 4, bc, sizeof(int[4])) != 0);
    }
    print_message("  exhaustive: %d codes, best %.4f, 20th %.4f, beam best %.4f\n", n_leaves, all[0].score,
                  all[want - 1].score, h->scores[0]);
    free(all); free(codes);
}

static void test_beam_exact_vs_exhaustive(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 3, 4, 2, 48, 0);
    Model m;
    model_init_random(&m, &c, 11, 0.5f);
    // 3 x 2 x 3 prefixes of length 3 = 18 <= 20: the search keeps them all.
    int base[4] = {20, 23, 25, 28}, n[4] = {3, 2, 3, 6};
    int *it;
    int n_items = make_items(&it, base, n, 0.8, 3);
    Trie t;
    trie_build(&t, it, n_items, 4);
    enum { U = 3 };
    int lens[U] = {9, 17, 5}, *prompts[U];
    Rng r;
    rng_seed(&r, 5);
    for (int u = 0; u < U; u++) {
        prompts[u] = malloc(sizeof(int) * lens[u]);
        random_tokens(prompts[u], lens[u], 0, 48, &r);
    }
    BeamSearch bs;
    Error e;
    assert_int_equal(beam_search_init(&bs, &m, &t, 20, &e), 0);
    BeamHyps h[U], h1;
    assert_int_equal(beam_search_run(h, &bs, U, (const int *const *)prompts, NULL, lens, &e), 0);
    for (int u = 0; u < U; u++) {
        check_exhaustive(&m, &t, prompts[u], lens[u], &h[u], 20);
        // One user per call: the same beams and scores as in the batch.
        assert_int_equal(beam_search_run(&h1, &bs, 1, (const int *const *)&prompts[u], NULL, &lens[u], &e), 0);
        assert_int_equal(h1.n, h[u].n);
        assert_memory_equal(h1.tokens, h[u].tokens, sizeof(int) * 4 * (size_t)h1.n);
        for (int i = 0; i < h1.n; i++) assert_true(fabs(h1.scores[i] - h[u].scores[i]) < TOL_SCORE);
        beam_hyps_free(&h1);
        beam_hyps_free(&h[u]);
        free(prompts[u]);
    }
    // A width larger than the number of codes returns every code.
    int lone[4] = {20, 23, 25, 28};
    int it2[8] = {-1, -1, -1, -1, 20, 23, 25, 28};
    Trie t2;
    trie_build(&t2, it2, 1, 4);
    BeamSearch bs2;
    assert_int_equal(beam_search_init(&bs2, &m, &t2, 20, &e), 0);
    int len1 = 4, p1[4] = {1, 2, 3, 4}, *pp = p1;
    assert_int_equal(beam_search_run(&h1, &bs2, 1, (const int *const *)&pp, NULL, &len1, &e), 0);
    assert_int_equal(h1.n, 1);
    assert_memory_equal(h1.tokens, lone, sizeof lone);
    assert_true(fabs(h1.scores[0] - ref_score(&m, p1, NULL, 4, lone, 4)) < TOL_SCORE);
    beam_hyps_free(&h1);
    beam_search_free(&bs2);
    trie_free(&t2);
    // A trie token outside the vocabulary is refused.
    int it3[8] = {-1, -1, -1, -1, 20, 23, 25, 48};
    trie_build(&t2, it3, 1, 4);
    assert_int_equal(beam_search_init(&bs2, &m, &t2, 20, &e), -1);
    trie_free(&t2);
    beam_search_free(&bs);
    trie_free(&t);
    free(it);
    model_free(&m);
}

// A naive beam search on the reference model: the semantics of beam.h, written
// out plainly (every prefix re-run from scratch).
typedef struct { double score; int beam, tok; } NCand;
static int ncand_cmp(const void *a, const void *b) {
    const NCand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->beam != y->beam) return x->beam < y->beam ? -1 : 1;
    return (x->tok > y->tok) - (x->tok < y->tok);
}
static int naive_beam(int *out_tok, double *out_score, const Model *m, const Trie *t, const int *prompt, int P, int W) {
    int n = 1, codes[64][4];
    double sc[64] = {0};
    NCand cand[4096];
    for (int s = 0; s < 4; s++) {
        int nc = 0;
        for (int j = 0; j < n; j++) {
            const int *allowed;
            int na = trie_next(&allowed, t, codes[j], s);
            for (int a = 0; a < na; a++) {
                int cont[4];
                memcpy(cont, codes[j], sizeof(int) * s);
                cont[s] = allowed[a];
                // score of the extended prefix = ref score of the whole prefix
                cand[nc++] = (NCand){ref_score(m, prompt, NULL, P, cont, s + 1), j, allowed[a]};
            }
        }
        qsort(cand, (size_t)nc, sizeof(NCand), ncand_cmp);
        int nn = nc < W ? nc : W, nxt[64][4];
        double ns[64];
        for (int i = 0; i < nn; i++) {
            memcpy(nxt[i], codes[cand[i].beam], sizeof(int) * s);
            nxt[i][s] = cand[i].tok;
            ns[i] = cand[i].score;
        }
        memcpy(codes, nxt, sizeof(int[4]) * nn);
        memcpy(sc, ns, sizeof(double) * nn);
        n = nn;
    }
    for (int i = 0; i < n; i++) { memcpy(out_tok + 4 * i, codes[i], sizeof(int[4])); out_score[i] = sc[i]; }
    return n;
}

static void test_beam_pruning_vs_naive(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 32, 48, 2, 4, 1, 64, 1);
    Model m;
    model_init_random(&m, &c, 21, 0.6f);
    int base[4] = {10, 20, 30, 45}, n[4] = {6, 5, 8, 6};
    int *it;
    int n_items = make_items(&it, base, n, 0.3, 9);
    Trie t;
    trie_build(&t, it, n_items, 4);
    enum { U = 2, W = 5 };
    int lens[U] = {7, 12}, *prompts[U];
    Rng r;
    rng_seed(&r, 8);
    for (int u = 0; u < U; u++) {
        prompts[u] = malloc(sizeof(int) * lens[u]);
        random_tokens(prompts[u], lens[u], 0, 64, &r);
    }
    BeamSearch bs;
    Error e;
    assert_int_equal(beam_search_init(&bs, &m, &t, W, &e), 0);
    BeamHyps h[U];
    assert_int_equal(beam_search_run(h, &bs, U, (const int *const *)prompts, NULL, lens, &e), 0);
    for (int u = 0; u < U; u++) {
        int tok[W * 4];
        double sc[W];
        int nn = naive_beam(tok, sc, &m, &t, prompts[u], lens[u], W);
        assert_int_equal(h[u].n, nn);
        for (int i = 0; i < nn; i++) {
            assert_true(fabs(h[u].scores[i] - sc[i]) < TOL_SCORE);
            // same code unless the naive search had a tie there
            if (memcmp(h[u].tokens + 4 * i, tok + 4 * i, sizeof(int[4])))
                assert_true(i + 1 < nn && fabs(sc[i] - sc[i + 1]) < TOL_SCORE);
        }
        beam_hyps_free(&h[u]);
        free(prompts[u]);
    }
    assert_int_equal(bs.gen_tokens, (size_t)U * W * 4);
    beam_search_free(&bs);
    trie_free(&t);
    free(it);
    model_free(&m);
}

// Every logits row the search uses, against the reference with the EARN plan.
typedef struct {
    const Model *m;
    int **prompts;
    uint8_t **kinds;
    const int *lens;
    double max_err;
    int rows_checked, steps_seen;
} EarnCheck;

static void earn_hook(void *ctx, int step, int n_rows, const int *row_user, const int *row_tokens, int n_tokens,
                      const float *logits) {
    EarnCheck *ec = ctx;
    const ModelConfig *c = &ec->m->config;
    int V = c->vocab_size;
    ec->steps_seen |= 1 << step;
    for (int i = 0; i < n_rows; i++) {
        int u = row_user[i], P = ec->lens[u], T = P + n_tokens;
        int *seq = malloc(sizeof(int) * T), *depth = malloc(sizeof(int) * T);
        uint8_t *kd = malloc((size_t)T);
        memcpy(seq, ec->prompts[u], sizeof(int) * P);
        memcpy(kd, ec->kinds[u], (size_t)P);
        for (int j = 0; j < n_tokens; j++) { seq[P + j] = row_tokens[(size_t)i * n_tokens + j]; kd[P + j] = TOKEN_KIND_TARGET; }
        plan_depth_for(depth, kd, T, c);
        double *ref = malloc(sizeof(double) * (size_t)T * V);
        ref_forward(ref, NULL, ec->m, seq, NULL, depth, NULL, T);
        double err = rel_err(logits + (size_t)i * V, ref + (size_t)(T - 1) * V, (size_t)V);
        if (err > ec->max_err) ec->max_err = err;
        ec->rows_checked++;
        free(seq); free(depth); free(kd); free(ref);
    }
}

static void check_earn(int k, int P, int S, uint64_t seed) {
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 4, 4, 2, 56, 0);
    c.method = METHOD_EARN;
    c.layer_split_k = k;
    c.n_prefix_regs = P;
    c.n_suffix_regs = S;
    Model m;
    model_init_random(&m, &c, seed, 0.4f);
    int base[4] = {30, 36, 41, 47}, n[4] = {6, 5, 5, 9};
    int *it;
    int n_items = make_items(&it, base, n, 0.2, seed + 1);
    Trie t;
    trie_build(&t, it, n_items, 4);
    enum { U = 3 };
    int hist[U] = {11, 4, 23}, lens[U], *prompts[U];
    uint8_t *kinds[U];
    Rng r;
    rng_seed(&r, seed + 2);
    for (int u = 0; u < U; u++) {
        lens[u] = P + hist[u] + S;
        prompts[u] = malloc(sizeof(int) * lens[u]);
        kinds[u] = malloc((size_t)lens[u]);
        random_tokens(prompts[u], lens[u], 0, 30, &r);
        for (int i = 0; i < lens[u]; i++) {
            kinds[u][i] = i < P ? TOKEN_KIND_PREFIX_REG : i < P + hist[u] ? TOKEN_KIND_HISTORY : TOKEN_KIND_SUFFIX_REG;
            if (i < P) prompts[u][i] = 1 + i;          // register ids, as a vocabulary would give
            else if (i >= P + hist[u]) prompts[u][i] = 5 + (i - P - hist[u]);
        }
    }
    BeamSearch bs;
    Error e;
    assert_int_equal(beam_search_init(&bs, &m, &t, 7, &e), 0);
    EarnCheck ec = {&m, prompts, kinds, lens, 0.0, 0, 0};
    bs.hook = earn_hook;
    bs.hook_ctx = &ec;
    BeamHyps h[U];
    assert_int_equal(beam_search_run(h, &bs, U, (const int *const *)prompts, (const uint8_t *const *)kinds, lens, &e), 0);
    print_message("  EARN k=%d P=%d S=%d: %d rows over steps mask 0x%x, max rel err %.2e\n", k, P, S, ec.rows_checked,
                  ec.steps_seen, ec.max_err);
    assert_int_equal(ec.steps_seen, 0xf); // prefill + 3 decode steps
    assert_true(ec.rows_checked >= U + 3 * U); // every user's beams at every step
    assert_true(ec.max_err < TOL_REL);
    // The beams' scores are the reference's too.
    for (int u = 0; u < U; u++) {
        for (int i = 0; i < h[u].n; i++)
            assert_true(fabs(h[u].scores[i] - ref_score(&m, prompts[u], kinds[u], lens[u], h[u].tokens + 4 * i, 4)) <
                        TOL_SCORE);
        beam_hyps_free(&h[u]);
        free(prompts[u]);
        free(kinds[u]);
    }
    // An EARN model without kinds is refused (it would not know its plan).
    assert_int_equal(beam_search_run(h, &bs, U, (const int *const *)prompts, NULL, lens, &e), -1);
    beam_search_free(&bs);
    trie_free(&t);
    free(it);
    model_free(&m);
}

static void test_earn_path_logits(void **st) {
    (void)st;
    check_earn(1, 1, 1, 31);
    check_earn(2, 2, 1, 32);
    check_earn(3, 0, 2, 33);
    check_earn(1, 3, 3, 34);
}

// Grouped attention: sequences [A-beams x 41] [lone] [B-beams x 3], GQA with 2
// query heads per KV head (so 41 beams span two row blocks of a group task).
static void test_many_beams_shared_parent(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 2, 4, 2, 40, 0);
    Model m;
    model_init_random(&m, &c, 61, 0.3f);
    enum { PA = 37, PB = 9, WA = 41, WB = 3, NL = 6 };
    Rng r;
    rng_seed(&r, 62);
    int pa[PA], pb[PB], lone[NL];
    random_tokens(pa, PA, 0, 40, &r);
    random_tokens(pb, PB, 0, 40, &r);
    random_tokens(lone, NL, 0, 40, &r);
    ForwardScratch s = {0};
    Error e;
    KVCache par[2];
    int caps_a[2] = {PA, PA}, caps_b[2] = {PB, PB};
    kvcache_init(&par[0], 2, 2, c.head_dim, caps_a);
    kvcache_init(&par[1], 2, 2, c.head_dim, caps_b);
    KVCache *pk[2] = {&par[0], &par[1]};
    int np[2] = {PA, PB}, ptoks[PA + PB];
    memcpy(ptoks, pa, sizeof pa);
    memcpy(ptoks + PA, pb, sizeof pb);
    ForwardBatch fb = {.n_seqs = 2, .n_new = np, .tokens = ptoks, .caches = pk, .logits_mode = LOGITS_NONE};
    assert_int_equal(model_forward(NULL, &m, &fb, &s, &e), 0);
    enum { NS = WA + 1 + WB, G = 3 };
    KVCache ch[NS], *ck[NS];
    int gcaps[2] = {G + 1, G + 1}, lcaps[2] = {NL + G + 1, NL + G + 1};
    for (int i = 0; i < NS; i++) {
        if (i < WA) kvcache_init_child(&ch[i], &par[0], gcaps);
        else if (i == WA) kvcache_init(&ch[i], 2, 2, c.head_dim, lcaps);
        else kvcache_init_child(&ch[i], &par[1], gcaps);
        ck[i] = &ch[i];
    }
    // Step 0 feeds two tokens to every beam (and the lone sequence its prompt),
    // later steps one token each; every row's logits against the reference.
    int hist[NS][NL + G + 1], hl[NS];
    for (int i = 0; i < NS; i++) hl[i] = 0;
    float *lg = malloc(sizeof(float) * (size_t)NS * 40 * NL);
    double *ref = malloc(sizeof(double) * (PA + NL + G + 2) * 40);
    double max_err = 0;
    for (int step = 0; step < G; step++) {
        int n_new[NS], toks[NS * NL], at = 0;
        for (int i = 0; i < NS; i++) {
            n_new[i] = i == WA && step == 0 ? NL : step == 0 ? 2 : 1;
            for (int j = 0; j < n_new[i]; j++) {
                int tk = i == WA && step == 0 ? lone[j] : (int)(rng_u64(&r) % 40);
                toks[at++] = tk;
                hist[i][hl[i]++] = tk;
            }
        }
        ForwardBatch b = {.n_seqs = NS, .n_new = n_new, .tokens = toks, .caches = ck, .logits_mode = LOGITS_LAST};
        assert_int_equal(model_forward(lg, &m, &b, &s, &e), 0);
        for (int i = 0; i < NS; i++) {
            int seq[PA + NL + G + 2], T = 0;
            if (i < WA) { memcpy(seq, pa, sizeof pa); T = PA; }
            else if (i > WA) { memcpy(seq, pb, sizeof pb); T = PB; }
            memcpy(seq + T, hist[i], sizeof(int) * hl[i]);
            T += hl[i];
            ref_forward(ref, NULL, &m, seq, NULL, NULL, NULL, T);
            double err = rel_err(lg + (size_t)i * 40, ref + (size_t)(T - 1) * 40, 40);
            max_err = err > max_err ? err : max_err;
        }
    }
    print_message("  %d sequences over 2 shared parents + 1 lone: max rel err %.2e\n", NS, max_err);
    assert_true(max_err < TOL_REL);
    for (int i = 0; i < NS; i++) kvcache_free(&ch[i]);
    kvcache_free(&par[0]);
    kvcache_free(&par[1]);
    forward_scratch_free(&s);
    free(lg); free(ref);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_beam_exact_vs_exhaustive),
        cmocka_unit_test(test_beam_pruning_vs_naive),
        cmocka_unit_test(test_earn_path_logits),
        cmocka_unit_test(test_many_beams_shared_parent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
