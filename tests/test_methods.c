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
//    skiplayers takes no split or registers, anllm none of them, pod its
//    prefix registers only (clear errors naming the field).
// 6. AnLLM's mask (plan_mask_anllm) equals its rule written out here the slow
//    way (segments recounted for every pair), on random kinds over random pack
//    masks, and on one hand-built prompt whose expected rows are spelled out.
// 7. AnLLM's inference equals its training: the search (prefill under the
//    mask, then only the instruction segment's and the anchors' KV kept) scores
//    every code as the double-precision reference under the AnLLM mask does,
//    |diff| < 1e-4; without the mask > 1e-3; KV bytes = bptl * N * (I + A + W *
//    gen) with I the kept instruction-segment tokens and A the anchors, equal to
//    the closed form and to the search's allocation.
// 8. POD: its search is a full model's over its (shorter) prompt: scores equal
//    the unmasked reference, KV bytes the full closed form of that prompt.
// 9. compress500x's inference equals its training: the search (prefill of
//    prompt + compression tokens with the LoRA adapters, then only the
//    compression tokens' KV, decode on the base weights) scores every code as
//    the double reference does under Gist's mask with LoRA (merged weights) on
//    the prompt and compression tokens only, |diff| < 1e-4; the same reference
//    without LoRA must differ (> 1e-3), and so must one with LoRA on the codes
//    too; KV bytes = Gist's closed form bptl * N * (C + W * gen).
// 10. compress500x with every lora_B = 0 is the Gist model of the same base
//    weights: the training forward (LoRA rows flagged) gives bitwise the Gist
//    model's logits; the search returns the same codes in the same order with
//    the same KV bytes, its scores within 1e-6 (seen 1.5e-7: the prefill's last
//    layer keeps one row per prompt, which Gist runs through the fused few-row
//    kernel and compress500x's LoRA rows through sgemm, so the float rounding
//    differs; the LoRA term itself adds exactly 0).
// 11. A compress500x checkpoint: model_save writes the adapters under PEFT's
//    names (model.layers.{l}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight) and
//    config.json's earnest.lora_rank / lora_alpha; model_load gives back every
//    float bit for bit; the same file under a config without lora_rank is
//    refused (unexpected tensors).
#include <setjmp.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "helpers/ref_model.h"
#include "runtime/beam.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/model.h"
#include "runtime/plan.h"
#include "runtime/train.h"
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
// RULE_C500X: Gist's mask, LoRA on the prompt (compression tokens included), not on the code;
// RULE_C500X_ALL: the same with LoRA on the code too (what the search must not compute).
enum { RULE_NONE = 0, RULE_GIST = 1, RULE_ANLLM = 2, RULE_C500X = 3, RULE_C500X_ALL = 4 };
static double ref_score(const Model *m, const int *prompt, const uint8_t *kinds, int n, const int *code, int rule) {
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
    if (rule == RULE_GIST || rule == RULE_C500X || rule == RULE_C500X_ALL) plan_mask_gist(mask, kd, T);
    if (rule == RULE_ANLLM) plan_mask_anllm(mask, kd, T);
    uint8_t *lora = malloc((size_t)T);
    for (int i = 0; i < T; i++) lora[i] = i < n || rule == RULE_C500X_ALL;
    double *lg = malloc(sizeof(double) * (size_t)T * V), s = 0.0;
    ref_forward_lora(lg, NULL, m, tok, NULL, NULL, mask, rule >= RULE_C500X ? lora : NULL, T);
    free(lora);
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
                double d = fabs(h[u].scores[b] - ref_score(&m, prompts[u], kinds[u], lens[u], code, RULE_GIST));
                worst = d > worst ? d : worst;
                double d0 = fabs(h[u].scores[b] - ref_score(&m, prompts[u], kinds[u], lens[u], code, RULE_NONE));
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
    ModelConfig a = c; // anllm: no split, no registers (its anchor is the vocabulary's <reg_suf_0>)
    a.method = METHOD_ANLLM;
    assert_int_equal(config_validate(&a, "test", &(Error){{0}}), 0);
    a.n_suffix_regs = 1;
    expect_invalid(&a, "an anllm model has no layer split or registers");
    a.n_suffix_regs = 0;
    a.layer_split_k = 1;
    expect_invalid(&a, "earnest.layer_split_k, prefix_regs and suffix_regs must be 0");
    ModelConfig p = c; // pod: its soft prompt is the prefix registers
    p.method = METHOD_POD;
    expect_invalid(&p, "earnest.prefix_regs >= 1");
    p.n_prefix_regs = 3;
    assert_int_equal(config_validate(&p, "test", &(Error){{0}}), 0);
    p.n_suffix_regs = 1;
    expect_invalid(&p, "earnest.suffix_regs = 0");
    assert_int_equal(config_method_parse("anllm", &mm), 0);
    assert_string_equal(config_method_name(mm), "anllm");
    assert_int_equal(config_method_parse("pod", &mm), 0);
    assert_string_equal(config_method_name(mm), "pod");
    ModelConfig x = c; // compress500x: compression tokens (suffix registers) and LoRA rank >= 1
    x.method = METHOD_COMPRESS500X;
    x.lora_rank = 4;
    x.lora_alpha = 4.0f;
    expect_invalid(&x, "earnest.suffix_regs >= 1 (its compression tokens)");
    x.n_suffix_regs = 2;
    assert_int_equal(config_validate(&x, "test", &(Error){{0}}), 0);
    x.lora_rank = 0;
    expect_invalid(&x, "earnest.lora_rank in 1..hidden_size");
    x.lora_rank = 4;
    x.lora_alpha = 0.0f;
    expect_invalid(&x, "earnest.lora_alpha > 0");
    ModelConfig gl = c; // adapters on any other method
    gl.method = METHOD_GIST;
    gl.n_suffix_regs = 1;
    gl.lora_rank = 2;
    expect_invalid(&gl, "LoRA adapters belong to compress500x models only");
    assert_int_equal(config_method_parse("compress500x", &mm), 0);
    assert_string_equal(config_method_name(mm), "compress500x");
}

// ---------------------------------------------------------------------------
// AnLLM

// The rule of plan.h, pair by pair: the segment of token t is recounted from
// scratch (anchors before it) for a history token or an anchor, -1 otherwise.
static int slow_segment(const uint8_t *kinds, int t) {
    if (kinds[t] != TOKEN_KIND_HISTORY && kinds[t] != TOKEN_KIND_SUFFIX_REG) return -1;
    int s = 0;
    for (int u = 0; u < t; u++) s += kinds[u] == TOKEN_KIND_SUFFIX_REG;
    return s;
}

static void test_anllm_mask_rule(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 43);
    for (int trial = 0; trial < 60; trial++) {
        int T = 2 + (int)(rng_u64(&r) % 34);
        uint8_t *kinds = malloc((size_t)T), *mask = malloc((size_t)T * T), *under = malloc((size_t)T * T);
        for (int i = 0; i < T; i++) kinds[i] = (uint8_t)(rng_u64(&r) % TOKEN_KIND_COUNT);
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++)
                under[i * T + j] = j <= i && (j == i || trial % 2 == 0 || rng_uniform(&r) < 0.7f);
        memcpy(mask, under, (size_t)T * T);
        plan_mask_anllm(mask, kinds, T);
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++) {
                int rule = kinds[j] == TOKEN_KIND_SUFFIX_REG || slow_segment(kinds, j) == -1 ||
                           slow_segment(kinds, i) == slow_segment(kinds, j);
                assert_int_equal(mask[i * T + j], under[i * T + j] && rule);
            }
        free(kinds); free(mask); free(under);
    }
    // By hand: <bos> w w | h h A | , h h A | w w | t t   (A anchor, w instruction word, t target)
    enum { S0 = TOKEN_KIND_SPECIAL, W0 = TOKEN_KIND_INSTRUCTION, H0 = TOKEN_KIND_HISTORY, A0 = TOKEN_KIND_SUFFIX_REG,
           T0 = TOKEN_KIND_TARGET };
    const uint8_t k[15] = {S0, W0, W0, H0, H0, A0, H0, H0, H0, A0, W0, W0, T0, T0, T0};
    const char *want[15] = { // row i: which j <= i it sees
        "1", "11", "111", "1111", "11111", "111111",
        "1110011",       // "," of item 1: the instruction words before, anchor 0, itself
        "11100111", "111001111", "1110011111",
        "11100100011",   // words after: the instruction segment and both anchors, no history token
        "111001000111", "1110010001111", "11100100011111", "111001000111111"};
    uint8_t mask[15 * 15];
    for (int i = 0; i < 15; i++)
        for (int j = 0; j < 15; j++) mask[i * 15 + j] = j <= i;
    plan_mask_anllm(mask, k, 15);
    for (int i = 0; i < 15; i++) {
        assert_int_equal((int)strlen(want[i]), i + 1);
        for (int j = 0; j <= i; j++) assert_int_equal(mask[i * 15 + j], want[i][j] == '1');
    }
    int kept = 0;
    for (int i = 0; i < 12; i++) kept += plan_anllm_keeps(k[i]);
    assert_int_equal(kept, 7); // <bos>, 4 words, 2 anchors
}

// An AnLLM prompt: <bos>, n_w words, n_items items of 3 history tokens + anchor, 2 words after.
static int anllm_prompt(int *tok, uint8_t *kind, Rng *r, int n_w, int n_items, int anchor) {
    int n = 0;
    tok[n] = 1; kind[n++] = TOKEN_KIND_SPECIAL;
    for (int i = 0; i < n_w; i++) { tok[n] = 2 + (int)(rng_u64(r) % 8); kind[n++] = TOKEN_KIND_INSTRUCTION; }
    for (int it = 0; it < n_items; it++) {
        for (int j = 0; j < 3; j++) { tok[n] = 10 + (int)(rng_u64(r) % 20); kind[n++] = TOKEN_KIND_HISTORY; }
        tok[n] = anchor; kind[n++] = TOKEN_KIND_SUFFIX_REG;
    }
    for (int i = 0; i < 2; i++) { tok[n] = 2 + (int)(rng_u64(r) % 8); kind[n++] = TOKEN_KIND_INSTRUCTION; }
    return n;
}

// Runs the search of model m on the U prompts; worst |score - reference| under
// `rule` and without a mask; checks the KV bytes against want_kv.
static void search_vs_reference(const Model *mc, int U, int *const *prompts, uint8_t *const *kinds, const int *lens,
                                int rule, double *worst, double *unmasked, size_t *kv) {
    Model m = *mc;
    Trie t;
    build_trie(&t);
    Error e;
    BeamSearch bs;
    assert_int_equal(beam_search_init(&bs, &m, &t, 24, &e), 0);
    BeamHyps h[4];
    assert_true(U <= 4);
    int rc = beam_search_run(h, &bs, U, (const int *const *)prompts, (const uint8_t *const *)kinds, lens, &e);
    if (rc) print_message("%s\n", e.msg);
    assert_int_equal(rc, 0);
    *worst = *unmasked = 0.0;
    for (int u = 0; u < U; u++) {
        assert_int_equal(h[u].n, 24);
        for (int b = 0; b < h[u].n; b++) {
            const int *code = h[u].tokens + b * 4;
            double d = fabs(h[u].scores[b] - ref_score(&m, prompts[u], kinds[u], lens[u], code, rule));
            *worst = d > *worst ? d : *worst;
            double d0 = fabs(h[u].scores[b] - ref_score(&m, prompts[u], kinds[u], lens[u], code, RULE_NONE));
            *unmasked = d0 > *unmasked ? d0 : *unmasked;
        }
        beam_hyps_free(&h[u]);
    }
    *kv = bs.kv_bytes;
    beam_search_free(&bs);
    trie_free(&t);
}

static void test_anllm_search_and_kv(void **st) {
    (void)st;
    for (int v = 0; v < 2; v++) {
        ModelConfig c = ref_config(v ? MODEL_ARCH_QWEN2 : MODEL_ARCH_LLAMA, 16, 24, 3, 4, v ? 1 : 2, 40, v);
        c.method = METHOD_ANLLM;
        Error e;
        assert_int_equal(config_validate(&c, "test", &e), 0);
        Model m;
        model_init_random(&m, &c, 17 + (uint64_t)v, 0.4f);
        const int U = 3, n_w[3] = {3, 0, 5}, n_items[3] = {3, 1, 4}, W = 24;
        int *prompts[3], lens[3];
        uint8_t *kinds[3];
        Rng r;
        rng_seed(&r, 9 + (uint64_t)v);
        size_t want_kv = 0;
        for (int u = 0; u < U; u++) {
            prompts[u] = malloc(sizeof(int) * 64);
            kinds[u] = malloc(64);
            lens[u] = anllm_prompt(prompts[u], kinds[u], &r, n_w[u], n_items[u], 39);
            int I = 1 + n_w[u] + 2, A = n_items[u]; // kept: <bos>, the words, the anchors
            size_t kv = bptl(&c) * (size_t)c.n_layers * ((size_t)I + (size_t)A + (size_t)W * 3);
            assert_int_equal(beam_kv_bytes_closed_form(&c, I, A, W, 3), kv);
            want_kv += kv;
        }
        double worst, unmasked;
        size_t got_kv;
        search_vs_reference(&m, U, prompts, kinds, lens, RULE_ANLLM, &worst, &unmasked, &got_kv);
        print_message("  anllm (%s): |score - masked reference| <= %.2e; without the mask %.2e; KV %zu B\n",
                      v ? "qwen2, 1 kv head" : "llama, 2 kv heads", worst, unmasked, got_kv);
        assert_true(worst < 1e-4);
        assert_true(unmasked > 1e-3);
        assert_int_equal(got_kv, want_kv);
        for (int u = 0; u < U; u++) { free(prompts[u]); free(kinds[u]); }
        model_free(&m);
    }
}

// ---------------------------------------------------------------------------
// POD: a full model over <bos> [P regs] history: nothing is masked or dropped.

static void test_pod_search_and_kv(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 3, 4, 2, 40, 0);
    c.method = METHOD_POD;
    c.n_prefix_regs = 3;
    Error e;
    assert_int_equal(config_validate(&c, "test", &e), 0);
    Model m;
    model_init_random(&m, &c, 23, 0.4f);
    const int U = 2, lens[2] = {12, 7}, P = 3, W = 24;
    int *prompts[2];
    uint8_t *kinds[2];
    Rng r;
    rng_seed(&r, 3);
    size_t want_kv = 0;
    for (int u = 0; u < U; u++) {
        prompts[u] = malloc(sizeof(int) * lens[u]);
        kinds[u] = malloc((size_t)lens[u]);
        for (int i = 0; i < lens[u]; i++) {
            int reg = i >= 1 && i <= P;
            prompts[u][i] = i == 0 ? 1 : reg ? 36 + i : 10 + (int)(rng_u64(&r) % 20);
            kinds[u][i] = i == 0 ? TOKEN_KIND_SPECIAL : reg ? TOKEN_KIND_PREFIX_REG : TOKEN_KIND_HISTORY;
        }
        size_t kv = bptl(&c) * (size_t)c.n_layers * ((size_t)lens[u] + (size_t)W * 3);
        assert_int_equal(beam_kv_bytes_closed_form(&c, lens[u] - P, P, W, 3), kv);
        want_kv += kv;
    }
    double worst, unmasked;
    size_t got_kv;
    search_vs_reference(&m, U, prompts, kinds, lens, RULE_NONE, &worst, &unmasked, &got_kv);
    print_message("  pod P=3: |score - reference| <= %.2e; KV %zu B\n", worst, got_kv);
    assert_true(worst < 1e-4);
    assert_int_equal(got_kv, want_kv);
    for (int u = 0; u < U; u++) { free(prompts[u]); free(kinds[u]); }
    model_free(&m);
}

// ---------------------------------------------------------------------------
// compress500x

// A compress500x model (rank 3, alpha 6) with random adapters (B != 0), and
// U prompts of random history tokens ending in C compression tokens (ids 39, 38, ...).
static void c500x_setup(Model *m, int **prompts, uint8_t **kinds, const int *lens, int U, int C, uint64_t seed) {
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 3, 4, 2, 40, 0);
    c.method = METHOD_COMPRESS500X;
    c.n_suffix_regs = C;
    c.lora_rank = 3;
    c.lora_alpha = 6.0f;
    Error e;
    assert_int_equal(config_validate(&c, "test", &e), 0);
    model_init_random(m, &c, seed, 0.4f);
    Rng r;
    rng_seed(&r, seed + 1);
    for (int u = 0; u < U; u++) {
        prompts[u] = malloc(sizeof(int) * lens[u]);
        kinds[u] = malloc((size_t)lens[u]);
        for (int i = 0; i < lens[u]; i++) {
            int reg = i >= lens[u] - C;
            prompts[u][i] = reg ? 39 - (lens[u] - 1 - i) : (int)(rng_u64(&r) % 30);
            kinds[u][i] = reg ? TOKEN_KIND_SUFFIX_REG : TOKEN_KIND_HISTORY;
        }
    }
}

static void test_c500x_search_and_kv(void **st) {
    (void)st;
    for (int C = 1; C <= 2; C++) {
        Model m;
        const int U = 2, lens[2] = {11, 7}, W = 24;
        int *prompts[2];
        uint8_t *kinds[2];
        c500x_setup(&m, prompts, kinds, lens, U, C, 40 + (uint64_t)C);
        double worst, unmasked, no_lora = 0.0, lora_all = 0.0;
        size_t got_kv, want_kv = 0;
        search_vs_reference(&m, U, prompts, kinds, lens, RULE_C500X, &worst, &unmasked, &got_kv);
        for (int u = 0; u < U; u++) { // every code (build_trie's) against the references the search must NOT match
            for (int it = 0; it < 24; it++) {
                const int code[4] = {30 + it / 8, 33 + it / 4 % 2, 35 + it / 2 % 2, 37 + it % 2};
                double want = ref_score(&m, prompts[u], kinds[u], lens[u], code, RULE_C500X);
                no_lora = fmax(no_lora, fabs(want - ref_score(&m, prompts[u], kinds[u], lens[u], code, RULE_GIST)));
                lora_all = fmax(lora_all,
                                fabs(want - ref_score(&m, prompts[u], kinds[u], lens[u], code, RULE_C500X_ALL)));
            }
            size_t kv = bptl(&m.config) * (size_t)m.config.n_layers * ((size_t)C + (size_t)W * 3);
            assert_int_equal(beam_kv_bytes_closed_form(&m.config, lens[u] - C, C, W, 3), kv);
            want_kv += kv;
        }
        print_message("  compress500x C=%d r=3: |score - reference (Gist mask, LoRA on the prompt)| <= %.2e; the "
                      "reference without LoRA differs by %.2e, with LoRA on the codes too by %.2e; KV %zu B\n", C,
                      worst, no_lora, lora_all, got_kv);
        assert_true(worst < 1e-4);
        assert_true(no_lora > 1e-3);
        assert_true(lora_all > 1e-3);
        assert_int_equal(got_kv, want_kv);
        for (int u = 0; u < U; u++) { free(prompts[u]); free(kinds[u]); }
        model_free(&m);
    }
}

// Runs the search of m over the prompts: scores [U * 24] and codes [U * 24 * 4], KV bytes.
static size_t search_scores(double *scores, int *codes, Model *m, int U, int *const *prompts, uint8_t *const *kinds,
                            const int *lens) {
    Trie t;
    build_trie(&t);
    Error e;
    BeamSearch bs;
    assert_int_equal(beam_search_init(&bs, m, &t, 24, &e), 0);
    BeamHyps h[4];
    assert_int_equal(beam_search_run(h, &bs, U, (const int *const *)prompts, (const uint8_t *const *)kinds, lens, &e),
                     0);
    for (int u = 0; u < U; u++) {
        assert_int_equal(h[u].n, 24);
        memcpy(scores + u * 24, h[u].scores, sizeof(double) * 24);
        memcpy(codes + u * 24 * 4, h[u].tokens, sizeof(int) * 24 * 4);
        beam_hyps_free(&h[u]);
    }
    size_t kv = bs.kv_bytes;
    beam_search_free(&bs);
    trie_free(&t);
    return kv;
}

static void test_c500x_b_zero_is_gist(void **st) {
    (void)st;
    Model m;
    const int U = 2, lens[2] = {10, 8}, C = 2;
    int *prompts[2];
    uint8_t *kinds[2];
    c500x_setup(&m, prompts, kinds, lens, U, C, 60);
    const ModelConfig *c = &m.config;
    const size_t L = (size_t)c->n_layers, D = (size_t)c->dim, R = (size_t)c->lora_rank;
    const size_t QD = (size_t)c->n_heads * c->head_dim, KD = (size_t)c->n_kv_heads * c->head_dim;
    memset(m.params.lora_qb, 0, L * QD * R * sizeof(float));
    memset(m.params.lora_kb, 0, L * KD * R * sizeof(float));
    memset(m.params.lora_vb, 0, L * KD * R * sizeof(float));
    memset(m.params.lora_ob, 0, L * D * R * sizeof(float));
    ModelConfig gc = *c; // the Gist model of the same base weights
    gc.method = METHOD_GIST;
    gc.lora_rank = 0;
    gc.lora_alpha = 0.0f;
    Model g;
    model_alloc(&g, &gc);
    memcpy(g.params_memory, m.params_memory, g.n_params * sizeof(float)); // the base tensors come first
    double sa[48], sb[48];
    int ca[192], cb[192];
    size_t kva = search_scores(sa, ca, &m, U, prompts, kinds, lens);
    size_t kvb = search_scores(sb, cb, &g, U, prompts, kinds, lens);
    double dmax = 0.0;
    for (int i = 0; i < 48; i++) dmax = fmax(dmax, fabs(sa[i] - sb[i]));
    print_message("  compress500x with B = 0 vs gist: scores %s (max |diff| %.2e), codes %s, KV %zu vs %zu B\n",
                  memcmp(sa, sb, sizeof sa) ? "differ" : "bitwise equal", dmax,
                  memcmp(ca, cb, sizeof ca) ? "differ" : "equal", kva, kvb);
    assert_true(dmax < 1e-6);
    assert_memory_equal(ca, cb, sizeof ca);
    assert_int_equal(kva, kvb);
    // The training forward (no fused kernel): prompt + a code under Gist's mask, bit for bit.
    for (int u = 0; u < U; u++) {
        const int n = lens[u] + 4, V = c->vocab_size;
        int tok[16], lab[16], ntok[1] = {n};
        uint8_t kd[16], lora[16], mask[256];
        for (int i = 0; i < n; i++) {
            tok[i] = i < lens[u] ? prompts[u][i] : 30 + i % 8;
            kd[i] = i < lens[u] ? kinds[u][i] : TOKEN_KIND_TARGET;
            lora[i] = i < lens[u];
            lab[i] = (i + 1) % V; // a label everywhere: every row's logits
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) mask[i * n + j] = j <= i;
        plan_mask_gist(mask, kd, n);
        const uint8_t *masks[1] = {mask};
        TrainBatch tb = {.n_seqs = 1, .n_tok = ntok, .tokens = tok, .mask = masks, .labels = lab, .lora = lora};
        TrainActs a1 = {0}, a2 = {0};
        Error e;
        assert_int_equal(train_forward(&a1, &m, &tb, &e), 0);
        tb.lora = NULL;
        assert_int_equal(train_forward(&a2, &g, &tb, &e), 0);
        assert_memory_equal(a1.logits, a2.logits, sizeof(float) * (size_t)n * V);
        train_acts_free(&a1);
        train_acts_free(&a2);
    }
    print_message("  compress500x with B = 0 vs gist: training forward logits bitwise equal\n");
    for (int u = 0; u < U; u++) { free(prompts[u]); free(kinds[u]); }
    model_free(&g);
    model_free(&m);
}

static void test_c500x_checkpoint(void **st) {
    (void)st;
    Model m;
    const int lens[1] = {6};
    int *prompts[1];
    uint8_t *kinds[1];
    c500x_setup(&m, prompts, kinds, lens, 1, 2, 70);
    char dir[] = "/tmp/earnest-c500x-XXXXXX";
    assert_non_null(mkdtemp(dir));
    Error e;
    assert_int_equal(model_save(&m, dir, &e), 0);
    Model back;
    int rc = model_load(&back, dir, &e);
    if (rc) print_message("%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(back.config.method, METHOD_COMPRESS500X);
    assert_int_equal(back.config.lora_rank, 3);
    assert_true(back.config.lora_alpha == 6.0f);
    assert_int_equal(back.n_params, m.n_params);
    assert_memory_equal(back.params_memory, m.params_memory, m.n_params * sizeof(float));
    char path[256], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(file_read_all(path, &text, &len, &e), 0);
    const char *names[] = {"model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.2.self_attn.k_proj.lora_B.weight",
                           "model.layers.1.self_attn.v_proj.lora_A.weight", "model.layers.2.self_attn.o_proj.lora_B.weight"};
    for (int i = 0; i < 4; i++) assert_non_null(memmem(text, len, names[i], strlen(names[i])));
    free(text);
    // The same file under a config without adapters: the adapters are unexpected tensors.
    ModelConfig plain = m.config;
    plain.method = METHOD_GIST;
    plain.lora_rank = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(config_save(&plain, path, &e), 0);
    Model bad;
    assert_int_equal(model_load(&bad, dir, &e), -1);
    print_message("  without lora_rank: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "lora_A.weight"));
    print_message("  compress500x checkpoint: %zu floats back bit for bit (%zu of them the adapters)\n", m.n_params,
                  m.n_params - (size_t)(m.params.lora_qa - m.params_memory));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    free(prompts[0]); free(kinds[0]);
    model_free(&back);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gist_mask_rule), cmocka_unit_test(test_gist_search_and_kv),
                                       cmocka_unit_test(test_keep_layers), cmocka_unit_test(test_method_configs),
                                       cmocka_unit_test(test_anllm_mask_rule),
                                       cmocka_unit_test(test_anllm_search_and_kv),
                                       cmocka_unit_test(test_pod_search_and_kv),
                                       cmocka_unit_test(test_c500x_search_and_kv),
                                       cmocka_unit_test(test_c500x_b_zero_is_gist),
                                       cmocka_unit_test(test_c500x_checkpoint)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
