// test_specbeam.c: speculative constrained beam search (runtime/specbeam.c).
//
//  - lossless strict mode: for random tiny target/draft pairs (the draft equal
//    to the target, an unrelated random draft of another shape, an EARN target
//    with registers), several users per call of different prompt lengths, beam
//    widths 1, 5 and 20, gamma 1..4 and several draft-beam counts, the strict
//    search returns exactly the ordinary beam search's codes (same order; a
//    swap only between scores tied within 1e-5) and scores within 1e-4; with
//    draft == target a round's first drafted level is always accepted (it
//    expands the target's own beams; deeper drafted levels come from the
//    draft's wider beam and may miss);
//  - relaxed acceptance rule: spec_relaxed_select equals a slow reference
//    written here from the rule's text (same selections, same flag, same RNG
//    draws consumed) on hand-built p, q; acceptance and residual frequencies
//    match the rule's probabilities; a relaxed search returns distinct item
//    codes whose scores are the target's log-probabilities of those codes;
//  - bad input: draft vocab != target vocab, gamma < 1, draft beams < beam, a
//    draft that is not a full model.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "helpers/ref_model.h"
#include "runtime/beam.h"
#include "runtime/plan.h"
#include "runtime/specbeam.h"
#include "runtime/trie.h"

#define TOL_SCORE 1e-4
#define TOL_TIE 1e-5

// Items: 4 levels, level j's tokens base + offsets[j] .. + n[j] - 1, each
// combination kept with probability keep. item_tokens [(n_items + 1) * 4].
static int make_items(int **item_tokens, int base, const int *n, double keep, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    int total = n[0] * n[1] * n[2] * n[3], off[4] = {base, base + n[0], base + n[0] + n[1], base + n[0] + n[1] + n[2]};
    int *it = malloc(sizeof(int) * 4 * (size_t)(total + 1));
    int k = 0;
    for (int a = 0; a < n[0]; a++)
        for (int b = 0; b < n[1]; b++)
            for (int c = 0; c < n[2]; c++)
                for (int d = 0; d < n[3]; d++) {
                    if (rng_uniform(&r) >= keep) continue;
                    k++;
                    int *row = it + 4 * k;
                    row[0] = off[0] + a; row[1] = off[1] + b; row[2] = off[2] + c; row[3] = off[3] + d;
                }
    *item_tokens = it;
    return k;
}

typedef struct {
    int U;
    int *lens;
    int **prompts;
    uint8_t **kinds; // NULL for a full target
} Prompts;

static void make_prompts(Prompts *p, int U, int vocab_lo, int vocab_hi, int P, int S, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    p->U = U;
    p->lens = malloc(sizeof(int) * U);
    p->prompts = malloc(sizeof(int *) * U);
    p->kinds = P + S > 0 ? malloc(sizeof(uint8_t *) * U) : NULL;
    for (int u = 0; u < U; u++) {
        int hist = 3 + (int)(rng_u64(&r) % 20);
        p->lens[u] = P + hist + S;
        p->prompts[u] = malloc(sizeof(int) * p->lens[u]);
        if (p->kinds) p->kinds[u] = malloc((size_t)p->lens[u]);
        for (int i = 0; i < p->lens[u]; i++) {
            p->prompts[u][i] = vocab_lo + (int)(rng_u64(&r) % (uint64_t)(vocab_hi - vocab_lo));
            if (!p->kinds) continue;
            p->kinds[u][i] = i < P ? TOKEN_KIND_PREFIX_REG : i < P + hist ? TOKEN_KIND_HISTORY : TOKEN_KIND_SUFFIX_REG;
            if (i < P) p->prompts[u][i] = 1 + i;
            else if (i >= P + hist) p->prompts[u][i] = 8 + (i - P - hist);
        }
    }
}

static void free_prompts(Prompts *p) {
    for (int u = 0; u < p->U; u++) {
        free(p->prompts[u]);
        if (p->kinds) free(p->kinds[u]);
    }
    free(p->lens); free(p->prompts); free(p->kinds);
}

// Strict speculative search vs the ordinary one on the same target.
static void check_lossless(Model *target, Model *draft, const Trie *t, const Prompts *p, int W, int gamma, int N,
                           int expect_all_accepted) {
    Error e;
    BeamSearch bs;
    SpecBeam sb;
    assert_int_equal(beam_search_init(&bs, target, t, W, &e), 0);
    if (specbeam_init(&sb, target, draft, t, W, gamma, N, SPEC_VERIFY_STRICT, 1, &e)) fail_msg("%s", e.msg);
    BeamHyps *ho = calloc((size_t)p->U, sizeof(BeamHyps)), *hs = calloc((size_t)p->U, sizeof(BeamHyps));
    const uint8_t *const *kinds = (const uint8_t *const *)p->kinds;
    assert_int_equal(beam_search_run(ho, &bs, p->U, (const int *const *)p->prompts, kinds, p->lens, &e), 0);
    if (specbeam_run(hs, &sb, p->U, (const int *const *)p->prompts, kinds, p->lens, &e)) fail_msg("%s", e.msg);
    for (int u = 0; u < p->U; u++) {
        assert_int_equal(hs[u].n, ho[u].n);
        for (int i = 0; i < ho[u].n; i++) {
            assert_true(fabs(hs[u].scores[i] - ho[u].scores[i]) < TOL_SCORE);
            if (memcmp(hs[u].tokens + 4 * i, ho[u].tokens + 4 * i, sizeof(int[4]))) { // only a tie may swap
                int tie = (i + 1 < ho[u].n && fabs(ho[u].scores[i] - ho[u].scores[i + 1]) < TOL_TIE) ||
                          (i > 0 && fabs(ho[u].scores[i] - ho[u].scores[i - 1]) < TOL_TIE);
                if (!tie) fail_msg("user %d rank %d: a different code (score %.6f vs %.6f)", u, i, hs[u].scores[i],
                                   ho[u].scores[i]);
            }
        }
        beam_hyps_free(&ho[u]);
        beam_hyps_free(&hs[u]);
    }
    size_t tried = 0, acc = 0;
    for (int l = 0; l <= SPEC_MAX_LEVELS; l++) { tried += sb.fig.level_tried[l]; acc += sb.fig.level_accepted[l]; }
    print_message("  W=%2d gamma=%d N=%2d U=%d: target calls/user %.2f (ordinary %d), accepted %zu/%zu levels, "
                  "%.2f per round\n", W, gamma, N, p->U, (double)sb.fig.user_target_calls / p->U, t->levels, acc, tried,
                  (double)sb.fig.accepted_levels / (double)sb.fig.user_rounds);
    assert_true(sb.fig.user_target_calls <= (size_t)p->U * (size_t)t->levels);
    if (expect_all_accepted) { // draft == target: a round's first drafted level expands the target's own beams
        assert_int_equal(sb.fig.level_accepted[2], sb.fig.level_tried[2]);
        if (gamma == 1) {
            assert_int_equal(acc, tried);
            assert_int_equal(sb.fig.user_target_calls, (size_t)p->U * 3); // prefill + levels 2-3 + level 4
        }
    }
    free(ho); free(hs);
    specbeam_free(&sb);
    beam_search_free(&bs);
}

static void build_trie(Trie *t, int base, uint64_t seed) {
    int n[4] = {6, 7, 8, 9}, *it;
    int n_items = make_items(&it, base, n, 0.25, seed);
    trie_build(t, it, n_items, 4);
    free(it);
}

static void test_strict_draft_is_target(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 3, 4, 2, 80, 0);
    Model m;
    model_init_random(&m, &c, 11, 0.5f);
    Trie t;
    build_trie(&t, 40, 3);
    Prompts p;
    make_prompts(&p, 4, 0, 40, 0, 0, 5);
    int widths[3] = {1, 5, 20};
    for (int i = 0; i < 3; i++)
        for (int gamma = 1; gamma <= 3; gamma++) check_lossless(&m, &m, &t, &p, widths[i], gamma, 40, 1);
    free_prompts(&p);
    trie_free(&t);
    model_free(&m);
}

static void test_strict_unrelated_draft(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 32, 64, 3, 4, 2, 80, 1);
    ModelConfig dc = ref_config(MODEL_ARCH_LLAMA, 16, 32, 2, 2, 1, 80, 1);
    Model m, d;
    model_init_random(&m, &c, 21, 0.6f);
    model_init_random(&d, &dc, 22, 0.6f);
    Trie t;
    build_trie(&t, 40, 9);
    Prompts p;
    make_prompts(&p, 5, 0, 40, 0, 0, 8);
    int widths[3] = {1, 5, 20}, beams[3] = {20, 40, 64};
    for (int i = 0; i < 3; i++)
        for (int gamma = 1; gamma <= 4; gamma++)
            for (int b = 0; b < 3; b++)
                if (beams[b] >= widths[i]) check_lossless(&m, &d, &t, &p, widths[i], gamma, beams[b], 0);
    check_lossless(&m, &d, &t, &p, 5, 2, 5, 0); // N == W: the least the draft may run
    // A draft trained towards the target: here, the target itself with noise.
    Model near;
    model_init_random(&near, &c, 21, 0.6f);
    Rng r;
    rng_seed(&r, 4);
    for (size_t i = 0; i < near.n_params; i++) near.params_memory[i] += 0.05f * rng_normal(&r);
    check_lossless(&m, &near, &t, &p, 20, 3, 40, 0);
    model_free(&near);
    free_prompts(&p);
    trie_free(&t);
    model_free(&m);
    model_free(&d);
}

static void test_strict_earn_target(void **st) {
    (void)st;
    int ks[2] = {1, 2};
    for (int i = 0; i < 2; i++) {
        ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 4, 4, 2, 80, 0);
        c.method = METHOD_EARN;
        c.layer_split_k = ks[i];
        c.n_prefix_regs = 2;
        c.n_suffix_regs = 3;
        ModelConfig dc = ref_config(MODEL_ARCH_LLAMA, 16, 32, 2, 2, 1, 80, 1);
        Model m, d;
        model_init_random(&m, &c, 31 + i, 0.5f);
        model_init_random(&d, &dc, 33, 0.5f);
        Trie t;
        build_trie(&t, 40, 12);
        Prompts p;
        make_prompts(&p, 3, 12, 40, 2, 3, 13 + i);
        check_lossless(&m, &d, &t, &p, 5, 3, 40, 0);
        check_lossless(&m, &d, &t, &p, 20, 2, 40, 0);
        check_lossless(&m, &d, &t, &p, 1, 1, 40, 0);
        free_prompts(&p);
        trie_free(&t);
        model_free(&m);
        model_free(&d);
    }
}

// ---------------------------------------------------------------------------
// Relaxed verification.

// The rule, from its text, written plainly: no shifted exponentials, selection sort.
static int ref_relaxed(int *sel, int *accepted, const double *logp, const double *logq, int n, int W, Rng *rng) {
    int need = n < W ? n : W, acc[256], na = 0, taken[256] = {0}, k = 0;
    for (int i = 0; i < n; i++) {
        if (isinf(logq[i])) continue;
        double ratio = exp(logp[i]) / exp(logq[i]);
        if ((double)rng_uniform(rng) < (ratio < 1.0 ? ratio : 1.0)) acc[na++] = i;
    }
    *accepted = need > 0 && na >= need;
    if (*accepted) {
        for (int i = 0; i < need; i++) {
            int j = i + (int)(rng_u64(rng) % (uint64_t)(na - i)), t = acc[i];
            acc[i] = acc[j]; acc[j] = t;
        }
        for (int i = 0; i < need; i++) sel[k++] = acc[i];
    } else {
        for (int i = 0; i < na; i++) { sel[k++] = acc[i]; taken[acc[i]] = 1; }
        while (k < need) {
            double res[256], tot = 0.0;
            for (int i = 0; i < n; i++) {
                double q = isinf(logq[i]) ? 0.0 : exp(logq[i]);
                res[i] = taken[i] ? 0.0 : fmax(exp(logp[i]) - q, 0.0);
                tot += res[i];
            }
            if (tot <= 0.0)
                for (int i = 0; i < n; i++) { res[i] = taken[i] ? 0.0 : exp(logp[i]); tot += res[i]; }
            double u = (double)rng_uniform(rng) * tot, c = 0.0;
            int pick = -1;
            for (int i = 0; i < n && (pick < 0 || c <= u); i++)
                if (res[i] > 0.0) { c += res[i]; pick = i; if (u < c) break; }
            taken[pick] = 1;
            sel[k++] = pick;
        }
    }
    for (int i = 0; i < need; i++) // selection sort: logp descending, smaller index first
        for (int j = i + 1; j < need; j++)
            if (logp[sel[j]] > logp[sel[i]] || (logp[sel[j]] == logp[sel[i]] && sel[j] < sel[i])) {
                int t = sel[i]; sel[i] = sel[j]; sel[j] = t;
            }
    return need;
}

static void test_relaxed_rule_vs_reference(void **st) {
    (void)st;
    Rng gen;
    rng_seed(&gen, 77);
    int n_acc = 0, n_fill = 0;
    for (int trial = 0; trial < 3000; trial++) {
        int n = 1 + (int)(rng_u64(&gen) % 40), W = 1 + (int)(rng_u64(&gen) % 12);
        double logp[64], logq[64];
        for (int i = 0; i < n; i++) {
            logp[i] = log(0.001 + rng_uniform(&gen)) - 2.0;
            int drafted = rng_uniform(&gen) < 0.7;
            logq[i] = drafted ? logp[i] + 1.5 * (rng_uniform(&gen) - 0.4) : -INFINITY;
        }
        int sel[64], rsel[64], acc, racc;
        Rng a, b;
        rng_seed(&a, 1000 + (uint64_t)trial);
        rng_seed(&b, 1000 + (uint64_t)trial);
        int k = spec_relaxed_select(sel, &acc, logp, logq, n, W, &a);
        int rk = ref_relaxed(rsel, &racc, logp, logq, n, W, &b);
        assert_int_equal(k, rk);
        assert_int_equal(acc, racc);
        assert_memory_equal(sel, rsel, sizeof(int) * (size_t)k);
        assert_true(rng_u64(&a) == rng_u64(&b)); // the same draws consumed
        for (int i = 0; i < k; i++)
            for (int j = 0; j < i; j++) assert_int_not_equal(sel[i], sel[j]);
        n_acc += acc;
        n_fill += !acc;
    }
    print_message("  3000 hand-built levels: %d accepted, %d filled from the residual\n", n_acc, n_fill);
    assert_true(n_acc > 100 && n_fill > 100);
}

static void test_relaxed_frequencies(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 5);
    enum { T = 40000 };
    // One drafted candidate: accepted with probability p / q = 0.4.
    double lp1 = log(0.2), lq1 = log(0.5);
    int hits = 0;
    for (int t = 0; t < T; t++) {
        int sel, acc;
        spec_relaxed_select(&sel, &acc, &lp1, &lq1, 1, 1, &r);
        hits += acc;
    }
    assert_true(fabs((double)hits / T - 0.4) < 0.015);
    // Candidate 0 drafted (p 0.3, q 0.6: accepted half the time), 1 and 2 not:
    // otherwise the residual (0, 0.3, 0.4) picks 1 or 2 as 3:4.
    double lp[3] = {log(0.3), log(0.3), log(0.4)}, lq[3] = {log(0.6), -INFINITY, -INFINITY};
    int count[3] = {0};
    for (int t = 0; t < T; t++) {
        int sel, acc;
        spec_relaxed_select(&sel, &acc, lp, lq, 3, 1, &r);
        count[sel]++;
    }
    double want[3] = {0.5, 0.5 * 3.0 / 7.0, 0.5 * 4.0 / 7.0};
    for (int i = 0; i < 3; i++) assert_true(fabs((double)count[i] / T - want[i]) < 0.015);
}

// Sum of log_softmax of code[i] after prompt + code[0..i), from the reference model.
static double ref_score(const Model *m, const int *prompt, int P, const int *code, int n) {
    int V = m->config.vocab_size, T = P + n;
    int *seq = malloc(sizeof(int) * T);
    memcpy(seq, prompt, sizeof(int) * P);
    memcpy(seq + P, code, sizeof(int) * n);
    double *lg = malloc(sizeof(double) * (size_t)T * V), s = 0.0;
    ref_forward(lg, NULL, m, seq, NULL, NULL, NULL, T);
    for (int i = 0; i < n; i++) {
        const double *row = lg + (size_t)(P - 1 + i) * V;
        double mx = -INFINITY, z = 0.0;
        for (int v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++) z += exp(row[v] - mx);
        s += row[code[i]] - (mx + log(z));
    }
    free(seq); free(lg);
    return s;
}

static void test_relaxed_search(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 3, 4, 2, 80, 0);
    ModelConfig dc = ref_config(MODEL_ARCH_LLAMA, 16, 32, 2, 2, 1, 80, 1);
    Model m, d;
    model_init_random(&m, &c, 41, 0.5f);
    model_init_random(&d, &dc, 42, 0.5f);
    Trie t;
    build_trie(&t, 40, 17);
    Prompts p;
    make_prompts(&p, 3, 0, 40, 0, 0, 19);
    Model *drafts[2] = {&m, &d};
    for (int k = 0; k < 2; k++) {
        SpecBeam sb;
        Error e;
        assert_int_equal(specbeam_init(&sb, &m, drafts[k], &t, 10, 3, 40, SPEC_VERIFY_RELAXED, 7, &e), 0);
        BeamHyps h[3];
        if (specbeam_run(h, &sb, p.U, (const int *const *)p.prompts, NULL, p.lens, &e)) fail_msg("%s", e.msg);
        for (int u = 0; u < p.U; u++) {
            assert_int_equal(h[u].n, 10);
            for (int i = 0; i < h[u].n; i++) {
                const int *code = h[u].tokens + 4 * i, *items;
                assert_true(trie_items(&items, &t, code) > 0);
                for (int j = 0; j < i; j++) assert_true(memcmp(h[u].tokens + 4 * j, code, sizeof(int[4])) != 0);
                if (i) assert_true(h[u].scores[i] <= h[u].scores[i - 1]);
                assert_true(fabs(h[u].scores[i] - ref_score(&m, p.prompts[u], p.lens[u], code, 4)) < TOL_SCORE);
            }
            beam_hyps_free(&h[u]);
        }
        print_message("  relaxed, %s draft: target calls/user %.2f, accepted levels per round %.2f\n",
                      k ? "unrelated" : "same", (double)sb.fig.user_target_calls / p.U,
                      (double)sb.fig.accepted_levels / (double)sb.fig.user_rounds);
        specbeam_free(&sb);
    }
    free_prompts(&p);
    trie_free(&t);
    model_free(&m);
    model_free(&d);
}

static void test_bad_input(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 2, 4, 2, 80, 0);
    ModelConfig other = ref_config(MODEL_ARCH_LLAMA, 16, 32, 2, 2, 1, 81, 1);
    ModelConfig earn = ref_config(MODEL_ARCH_LLAMA, 16, 32, 2, 2, 1, 80, 1);
    earn.method = METHOD_EARN;
    earn.layer_split_k = 1;
    earn.n_prefix_regs = 1;
    Model m, o, ed;
    model_init_random(&m, &c, 1, 0.5f);
    model_init_random(&o, &other, 2, 0.5f);
    model_init_random(&ed, &earn, 3, 0.5f);
    Trie t;
    build_trie(&t, 40, 2);
    SpecBeam sb;
    Error e;
    assert_int_equal(specbeam_init(&sb, &m, &o, &t, 5, 3, 40, SPEC_VERIFY_STRICT, 1, &e), -1);
    assert_non_null(strstr(e.msg, "vocab"));
    assert_int_equal(specbeam_init(&sb, &m, &m, &t, 5, 0, 40, SPEC_VERIFY_STRICT, 1, &e), -1);
    assert_non_null(strstr(e.msg, "gamma"));
    assert_int_equal(specbeam_init(&sb, &m, &m, &t, 20, 3, 10, SPEC_VERIFY_STRICT, 1, &e), -1);
    assert_non_null(strstr(e.msg, "draft beams"));
    assert_int_equal(specbeam_init(&sb, &m, &ed, &t, 5, 3, 40, SPEC_VERIFY_STRICT, 1, &e), -1);
    assert_non_null(strstr(e.msg, "full"));
    SpecVerify v;
    assert_int_equal(spec_verify_parse(&v, "relaxed"), 0);
    assert_int_equal(v, SPEC_VERIFY_RELAXED);
    assert_int_equal(spec_verify_parse(&v, "loose"), -1);
    trie_free(&t);
    model_free(&m);
    model_free(&o);
    model_free(&ed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strict_draft_is_target),
        cmocka_unit_test(test_strict_unrelated_draft),
        cmocka_unit_test(test_strict_earn_target),
        cmocka_unit_test(test_relaxed_rule_vs_reference),
        cmocka_unit_test(test_relaxed_frequencies),
        cmocka_unit_test(test_relaxed_search),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
