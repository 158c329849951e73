// test_methods.c: the learned baselines expressed through the layer plan,
// masks and the KV cache (issue: baselines), each against an independent rule:
//
// 1. Gist's training mask (plan_mask_gist) equals the rule written out here,
//    query by query: a target token sees only gist tokens (suffix registers)
//    and targets, itself included; every other row keeps its mask (a random
//    pack mask underneath is only narrowed).
// 2. Gist's inference equals its training: with a beam as wide as the item
//    codes, the constrained search scores every code. Each score must equal
//    the sum of log-softmaxes of the double-precision reference decoder
//    (tests/helpers/ref_model.c) run over prompt + code under the Gist mask,
//    |diff| < 1e-4 (float forward vs double reference; seen ~1e-6). The same
//    reference without the mask must differ (> 1e-3), so the test can fail.
// 3. Gist's KV bytes: bptl * N * (G + W * gen), written out here, equal the
//    search's allocation and the runtime's closed form.
// 4. SkipLayers: model_keep_layers' model computes exactly what the first m
//    layers of the deeper model compute (the reference run on the deeper
//    model's own weights with n_layers = m), bit for bit; its KV bytes are a
//    full model's with m layers.
// 5. The configs: gist needs gist tokens and no split/prefix registers,
//    skiplayers takes no split or registers (clear errors naming the field).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "helpers/ref_model.h"
#include "runtime/beam.h"
#include "runtime/config.h"
#include "runtime/model.h"
#include "runtime/plan.h"
#include "runtime/trie.h"

static void test_gist_mask_rule(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 41);
    for (int trial = 0; trial < 50; trial++) {
        int T = 2 + (int)(rng_u64(&r) % 30);
        uint8_t *kinds = malloc((size_t)T), *mask = malloc((size_t)T * T), *under = malloc((size_t)T * T);
        for (int i = 0; i < T; i++) kinds[i] = (uint8_t)(rng_u64(&r) % TOKEN_KIND_COUNT);
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) // a pack mask: causal, some earlier keys hidden
                under[i * T + j] = j <= i && (j == i || trial % 2 == 0 || rng_uniform(&r) < 0.7f);
        memcpy(mask, under, (size_t)T * T);
        plan_mask_gist(mask, kinds, T);
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) {
                int sees = under[i * T + j];
                if (kinds[i] == TOKEN_KIND_TARGET && j != i)
                    sees = sees && (kinds[j] == TOKEN_KIND_SUFFIX_REG || kinds[j] == TOKEN_KIND_TARGET);
                assert_int_equal(mask[i * T + j], sees);
            }
        free(kinds); free(mask); free(under);
    }
}

// 3 x 2 x 2 x 2 = 24 codes over tokens 30..38.
static void build_trie(Trie *t) {
    int n = 24, *it = malloc(sizeof(int) * 4 * (n + 1)), k = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 2; c++)
                for (int d = 0; d < 2; d++) {
                    k++;
                    it[4 * k] = 30 + a; it[4 * k + 1] = 33 + b; it[4 * k + 2] = 35 + c; it[4 * k + 3] = 37 + d;
                }
    trie_build(t, it, n, 4);
    free(it);
}

// Reference score of one code after the prompt: sum_j log_softmax(row predicting code j)[code j].
static double ref_score(const Model *m, const int *prompt, const uint8_t *kinds, int n, const int *code, int gist) {
    const int T = n + 3, V = m->config.vocab_size;
    int *tok = malloc(sizeof(int) * T);
    uint8_t *kd = malloc((size_t)T), *mask = malloc((size_t)T * T);
    memcpy(tok, prompt, sizeof(int) * n);
    memcpy(kd, kinds, (size_t)n);
    for (int j = 0; j < 3; j++) {
        tok[n + j] = code[j];
        kd[n + j] = TOKEN_KIND_TARGET;
    }
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) mask[i * T + j] = j <= i;
    if (gist) plan_mask_gist(mask, kd, T);
    double *lg = malloc(sizeof(double) * (size_t)T * V), s = 0.0;
    ref_forward(lg, NULL, m, tok, NULL, NULL, mask, T);
    for (int j = 0; j < 4; j++) {
        const double *x = lg + (size_t)(n - 1 + j) * V;
        double mx = -INFINITY, z = 0.0;
        for (int v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
        for (int v = 0; v < V; v++) z += exp(x[v] - mx);
        s += x[code[j]] - mx - log(z);
    }
    free(tok); free(kd); free(mask); free(lg);
    return s;
}

static size_t bptl(const ModelConfig *c) { return 2 * (size_t)c->n_kv_heads * (size_t)c->head_dim * 4; }

static void test_gist_search_and_kv(void **st) {
    (void)st;
    for (int v = 0; v < 2; v++) {
        ModelConfig c = ref_config(v ? MODEL_ARCH_QWEN2 : MODEL_ARCH_LLAMA, 16, 24, 3, 4, v ? 1 : 2, 40, v);
        c.method = METHOD_GIST;
        c.n_suffix_regs = v ? 1 : 2;
        Error e;
        assert_int_equal(config_validate(&c, "test", &e), 0);
        Model m;
        model_init_random(&m, &c, 7 + (uint64_t)v, 0.4f);
        Trie t;
        build_trie(&t);
        const int U = 2, lens[2] = {11, 6}, G = c.n_suffix_regs, W = 24;
        int *prompts[2];
        uint8_t *kinds[2];
        Rng r;
        rng_seed(&r, 5);
        for (int u = 0; u < U; u++) {
            prompts[u] = malloc(sizeof(int) * lens[u]);
            kinds[u] = malloc((size_t)lens[u]);
            for (int i = 0; i < lens[u]; i++) {
                int reg = i >= lens[u] - G;
                prompts[u][i] = reg ? 39 - (lens[u] - 1 - i) : (int)(rng_u64(&r) % 30);
                kinds[u][i] = reg ? TOKEN_KIND_SUFFIX_REG : TOKEN_KIND_HISTORY;
            }
        }
        BeamSearch bs;
        assert_int_equal(beam_search_init(&bs, &m, &t, W, &e), 0);
        BeamHyps h[2];
        assert_int_equal(beam_search_run(h, &bs, U, (const int *const *)prompts, (const uint8_t *const *)kinds,
                                         lens, &e), 0);
        double worst = 0.0, unmasked = 0.0;
        size_t want_kv = 0;
        for (int u = 0; u < U; u++) {
            assert_int_equal(h[u].n, 24);
            for (int b = 0; b < h[u].n; b++) {
                const int *code = h[u].tokens + b * 4;
                double d = fabs(h[u].scores[b] - ref_score(&m, prompts[u], kinds[u], lens[u], code, 1));
                worst = d > worst ? d : worst;
                double d0 = fabs(h[u].scores[b] - ref_score(&m, prompts[u], kinds[u], lens[u], code, 0));
                unmasked = d0 > unmasked ? d0 : unmasked;
            }
            want_kv += bptl(&c) * (size_t)c.n_layers * ((size_t)G + (size_t)W * 3);
            assert_int_equal(beam_kv_bytes_closed_form(&c, lens[u] - G, G, W, 3),
                             bptl(&c) * (size_t)c.n_layers * ((size_t)G + (size_t)W * 3));
            beam_hyps_free(&h[u]);
        }
        print_message("  gist G=%d: |score - masked reference| <= %.2e; without the mask %.2e; KV %zu B\n", G, worst,
                      unmasked, bs.kv_bytes);
        assert_true(worst < 1e-4);
        assert_true(unmasked > 1e-3);
        assert_int_equal(bs.kv_bytes, want_kv);
        beam_search_free(&bs);
        for (int u = 0; u < U; u++) { free(prompts[u]); free(kinds[u]); }
        trie_free(&t);
        model_free(&m);
    }
}

static void test_keep_layers(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 16, 24, 5, 4, 2, 30, 0);
    Model deep;
    model_init_random(&deep, &c, 11, 0.3f);
    int tokens[9] = {1, 5, 9, 2, 29, 17, 3, 3, 8};
    for (int keep = 1; keep <= 5; keep += 2) {
        Model cut;
        model_keep_layers(&cut, &deep, keep);
        assert_int_equal(cut.config.n_layers, keep);
        Model first = deep; // the deeper model's own weights, read as a `keep`-layer model
        first.config.n_layers = keep;
        double *a = malloc(sizeof(double) * 9 * 30), *b = malloc(sizeof(double) * 9 * 30);
        ref_forward(a, NULL, &cut, tokens, NULL, NULL, NULL, 9);
        ref_forward(b, NULL, &first, tokens, NULL, NULL, NULL, 9);
        assert_memory_equal(a, b, sizeof(double) * 9 * 30);
        if (keep < 5) { // and not what the whole model computes
            ref_forward(b, NULL, &deep, tokens, NULL, NULL, NULL, 9);
            assert_true(memcmp(a, b, sizeof(double) * 9 * 30) != 0);
        }
        ModelConfig sc = cut.config;
        sc.method = METHOD_SKIPLAYERS;
        Error e;
        assert_int_equal(config_validate(&sc, "test", &e), 0);
        assert_int_equal(beam_kv_bytes_closed_form(&sc, 20, 0, 4, 3), bptl(&sc) * (size_t)keep * (20 + 4 * 3));
        free(a); free(b);
        model_free(&cut);
    }
    model_free(&deep);
}

static void expect_invalid(const ModelConfig *c, const char *needle) {
    Error e;
    assert_int_equal(config_validate(c, "config.json", &e), -1);
    print_message("    %s\n", e.msg);
    assert_non_null(strstr(e.msg, needle));
}

static void test_method_configs(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 3, 4, 2, 40, 1);
    ModelConfig g = c;
    g.method = METHOD_GIST; // no gist token
    expect_invalid(&g, "earnest.suffix_regs >= 1");
    g.n_suffix_regs = 2;
    g.n_prefix_regs = 1;
    expect_invalid(&g, "earnest.prefix_regs = 0");
    g.n_prefix_regs = 0;
    g.layer_split_k = 1;
    expect_invalid(&g, "layer_split_k = 0");
    ModelConfig s = c;
    s.method = METHOD_SKIPLAYERS;
    s.n_suffix_regs = 1;
    expect_invalid(&s, "skiplayers model has no layer split or registers");
    ModelMethod mm;
    assert_int_equal(config_method_parse("gist", &mm), 0);
    assert_int_equal(mm, METHOD_GIST);
    assert_int_equal(config_method_parse("skiplayers", &mm), 0);
    assert_string_equal(config_method_name(mm), "skiplayers");
    assert_int_equal(config_method_parse("gists", &mm), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gist_mask_rule), cmocka_unit_test(test_gist_search_and_kv),
                                       cmocka_unit_test(test_keep_layers), cmocka_unit_test(test_method_configs)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
