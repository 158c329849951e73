// test_forward.c: the fast forward pass against the naive reference
// (tests/helpers/ref_model.c), for prefill, batching, incremental decode,
// layer plans, masks, shared-parent caches, and the attention hook.
// Tolerance: relative error (max abs diff / max abs value) < 1e-4.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <omp.h>

#include "helpers/ref_model.h"
#include "runtime/kvcache.h"
#include "runtime/model.h"
#include "runtime/ops.h"

#define TOL 1e-4

static void cache_for(KVCache *kv, const ModelConfig *c, int cap) {
    int caps[64];
    for (int l = 0; l < c->n_layers; l++) caps[l] = cap;
    kvcache_init(kv, c->n_layers, c->n_kv_heads, c->head_dim, caps);
}

static void random_tokens(int *t, int n, int vocab, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) t[i] = (int)(rng_u64(&r) % (uint64_t)vocab);
}

// Full prefill of one sequence, LOGITS_ALL, against the reference.
static void check_prefill(const ModelConfig *c, int T, uint64_t seed) {
    Model m;
    model_init_random(&m, c, seed, 0.3f);
    int *tok = malloc(sizeof(int) * T);
    random_tokens(tok, T, c->vocab_size, seed + 1);
    size_t V = (size_t)c->vocab_size;
    float *lg = malloc(sizeof(float) * T * V);
    double *ref = malloc(sizeof(double) * T * V);
    KVCache kv;
    cache_for(&kv, c, T);
    KVCache *kvs[1] = {&kv};
    ForwardBatch fb = {.n_seqs = 1, .n_new = &T, .tokens = tok, .caches = kvs, .logits_mode = LOGITS_ALL};
    ForwardScratch s = {0};
    Error e;
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), 0);
    ref_forward(ref, NULL, &m, tok, NULL, NULL, NULL, T);
    double err = rel_err(lg, ref, (size_t)T * V);
    print_message("  prefill T=%d D=%d H=%d G=%d arch=%d tie=%d: rel err %.2e\n", T, c->dim, c->n_heads,
                  c->n_kv_heads, c->arch, c->tie_embeddings, err);
    assert_true(err < TOL);
    forward_scratch_free(&s);
    kvcache_free(&kv);
    model_free(&m);
    free(tok); free(lg); free(ref);
}

static void test_prefill_llama_gqa(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 64, 96, 3, 8, 2, 97, 0);
    check_prefill(&c, 70, 1); // 70 > one query block: exercises blocking
}
static void test_prefill_qwen2_tied(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 48, 80, 2, 4, 4, 61, 1);
    check_prefill(&c, 23, 2);
}
static void test_prefill_odd_sizes(void **st) {
    (void)st;
    // D = 30, 5 heads of 6, one KV head (MQA), F = 47, V = 53: nothing a power of two.
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 30, 47, 2, 5, 1, 53, 0);
    check_prefill(&c, 13, 3);
    ModelConfig c2 = ref_config(MODEL_ARCH_QWEN2, 30, 47, 3, 5, 5, 53, 0);
    check_prefill(&c2, 131, 4);
}
static void test_prefill_bf16_weights(void **st) {
    (void)st;
    // Weights rounded to bf16 (what a bf16 checkpoint holds once widened to f32).
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 2, 4, 2, 40, 1);
    Model m;
    model_init_random(&m, &c, 9, 0.3f);
    for (size_t i = 0; i < m.n_params; i++) {
        uint32_t u;
        memcpy(&u, &m.params_memory[i], 4);
        m.params_memory[i] = bf16_to_f32((uint16_t)(u >> 16));
    }
    int T = 17, tok[17];
    random_tokens(tok, T, c.vocab_size, 5);
    float lg[17 * 40];
    double ref[17 * 40];
    KVCache kv;
    cache_for(&kv, &c, T);
    KVCache *kvs[1] = {&kv};
    ForwardBatch fb = {.n_seqs = 1, .n_new = &T, .tokens = tok, .caches = kvs, .logits_mode = LOGITS_ALL};
    ForwardScratch s = {0};
    Error e;
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), 0);
    ref_forward(ref, NULL, &m, tok, NULL, NULL, NULL, T);
    assert_true(rel_err(lg, ref, (size_t)T * 40) < TOL);
    forward_scratch_free(&s);
    kvcache_free(&kv);
    model_free(&m);
}

// Three sequences of different lengths in one call == each on its own (reference).
static void test_batched_prefill(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 48, 64, 2, 6, 3, 50, 0);
    Model m;
    model_init_random(&m, &c, 11, 0.3f);
    int n[3] = {5, 80, 1}, T = 86;
    int tok[86];
    random_tokens(tok, T, c.vocab_size, 12);
    size_t V = 50;
    float *lg = malloc(sizeof(float) * T * V), *last = malloc(sizeof(float) * 3 * V);
    KVCache kv[3], *kvs[3];
    for (int b = 0; b < 3; b++) { cache_for(&kv[b], &c, n[b]); kvs[b] = &kv[b]; }
    ForwardBatch fb = {.n_seqs = 3, .n_new = n, .tokens = tok, .caches = kvs, .logits_mode = LOGITS_ALL};
    ForwardScratch s = {0};
    Error e;
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), 0);
    // Same batch, last-token logits only.
    for (int b = 0; b < 3; b++) kvcache_reset(&kv[b]);
    fb.logits_mode = LOGITS_LAST;
    assert_int_equal(model_forward(last, &m, &fb, &s, &e), 0);
    int off = 0;
    for (int b = 0; b < 3; b++) {
        double *ref = malloc(sizeof(double) * n[b] * V);
        ref_forward(ref, NULL, &m, tok + off, NULL, NULL, NULL, n[b]);
        assert_true(rel_err(lg + (size_t)off * V, ref, (size_t)n[b] * V) < TOL);
        assert_true(rel_err(last + (size_t)b * V, ref + (size_t)(n[b] - 1) * V, V) < TOL);
        off += n[b];
        free(ref);
    }
    for (int b = 0; b < 3; b++) kvcache_free(&kv[b]);
    forward_scratch_free(&s);
    model_free(&m);
    free(lg); free(last);
}

// Prefill of a prefix, then one token at a time: every step's logits equal the
// reference's logits at that position; also a two-chunk prefill.
static void test_incremental_decode(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 64, 128, 3, 8, 4, 70, 0);
    Model m;
    model_init_random(&m, &c, 21, 0.3f);
    int T = 40, tok[40], P = 9;
    random_tokens(tok, T, c.vocab_size, 22);
    size_t V = 70;
    double *ref = malloc(sizeof(double) * T * V);
    ref_forward(ref, NULL, &m, tok, NULL, NULL, NULL, T);
    float *lg = malloc(sizeof(float) * T * V);
    KVCache kv;
    cache_for(&kv, &c, T);
    KVCache *kvs[1] = {&kv};
    ForwardScratch s = {0};
    Error e;
    ForwardBatch fb = {.n_seqs = 1, .n_new = &P, .tokens = tok, .caches = kvs, .logits_mode = LOGITS_ALL};
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), 0);
    assert_true(rel_err(lg, ref, (size_t)P * V) < TOL);
    int one = 1;
    for (int t = P; t < T; t++) {
        ForwardBatch step = {.n_seqs = 1, .n_new = &one, .tokens = tok + t, .caches = kvs, .logits_mode = LOGITS_LAST};
        assert_int_equal(model_forward(lg, &m, &step, &s, &e), 0);
        double err = rel_err(lg, ref + (size_t)t * V, V);
        if (err >= TOL) print_message("  step %d: rel err %.2e\n", t, err);
        assert_true(err < TOL);
    }
    assert_int_equal(kv.n_seen, T);
    // Two chunks of 25 + 15.
    kvcache_reset(&kv);
    int n1 = 25, n2 = 15;
    ForwardBatch c1 = {.n_seqs = 1, .n_new = &n1, .tokens = tok, .caches = kvs, .logits_mode = LOGITS_NONE};
    ForwardBatch c2 = {.n_seqs = 1, .n_new = &n2, .tokens = tok + 25, .caches = kvs, .logits_mode = LOGITS_ALL};
    assert_int_equal(model_forward(NULL, &m, &c1, &s, &e), 0);
    assert_int_equal(model_forward(lg, &m, &c2, &s, &e), 0);
    assert_true(rel_err(lg, ref + 25 * V, 15 * V) < TOL);
    kvcache_free(&kv);
    forward_scratch_free(&s);
    model_free(&m);
    free(ref); free(lg);
}

// An EARN-style plan: the prompt's tokens stop at layer k, registers and
// generated tokens go through all layers; prefill, then decode steps. The
// KV caches of layers >= k hold only the register/generated entries.
static void check_plan(int L, int k, int n_pre, int n_suf, int n_prompt, int n_gen, uint64_t seed) {
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 32, 64, L, 4, 2, 45, 0);
    Model m;
    model_init_random(&m, &c, seed, 0.3f);
    int T = n_pre + n_prompt + n_suf + n_gen, P = n_pre + n_prompt + n_suf;
    int *tok = malloc(sizeof(int) * T), *depth = malloc(sizeof(int) * T);
    random_tokens(tok, T, c.vocab_size, seed + 1);
    for (int i = 0; i < T; i++) depth[i] = (i >= n_pre && i < n_pre + n_prompt) ? k : L;
    size_t V = 45;
    double *ref = malloc(sizeof(double) * T * V);
    ref_forward(ref, NULL, &m, tok, NULL, depth, NULL, T);
    int caps[16];
    for (int l = 0; l < L; l++) caps[l] = l < k ? T : n_pre + n_suf + n_gen;
    KVCache kv;
    kvcache_init(&kv, L, c.n_kv_heads, c.head_dim, caps);
    KVCache *kvs[1] = {&kv};
    ForwardScratch s = {0};
    Error e;
    float *lg = malloc(sizeof(float) * T * V);
    ForwardBatch fb = {.n_seqs = 1, .n_new = &P, .tokens = tok, .depth = depth, .caches = kvs,
                       .logits_mode = LOGITS_ALL};
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), 0);
    for (int i = 0; i < P; i++) {
        if (depth[i] < L) { assert_true(isnan(lg[(size_t)i * V])); continue; }
        double err = rel_err(lg + (size_t)i * V, ref + (size_t)i * V, V);
        if (err >= TOL) print_message("  plan L=%d k=%d token %d: rel err %.2e (%f vs %f)\n", L, k, i, err, lg[(size_t)i * V], ref[(size_t)i * V]);
        assert_true(err < TOL);
    }
    for (int l = 0; l < L; l++) assert_int_equal(kv.len[l * c.n_kv_heads], l < k ? P : n_pre + n_suf);
    int one = 1;
    for (int t = P; t < T; t++) {
        ForwardBatch step = {.n_seqs = 1, .n_new = &one, .tokens = tok + t, .depth = depth + t, .caches = kvs,
                             .logits_mode = LOGITS_LAST};
        assert_int_equal(model_forward(lg, &m, &step, &s, &e), 0);
        assert_true(rel_err(lg, ref + (size_t)t * V, V) < TOL);
    }
    kvcache_free(&kv);
    forward_scratch_free(&s);
    model_free(&m);
    free(tok); free(depth); free(ref); free(lg);
}

static void test_layer_plan_earn(void **st) {
    (void)st;
    check_plan(4, 1, 1, 1, 30, 4, 31);
    check_plan(4, 2, 2, 3, 75, 4, 32);
    check_plan(5, 3, 0, 1, 12, 3, 33);
}

// An explicit mask among the new tokens (a packed "shared history + two
// targets" layout: target groups see the history but not each other).
static void test_explicit_mask(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 48, 2, 4, 4, 30, 1);
    Model m;
    model_init_random(&m, &c, 41, 0.3f);
    enum { T = 14 };
    int tok[T], pos[T];
    random_tokens(tok, T, 30, 42);
    uint8_t mask[T * T];
    int group[T] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2};
    for (int i = 0; i < T; i++) {
        pos[i] = group[i] == 2 ? i - 4 : i; // group 2 takes the positions group 1 had
        for (int j = 0; j < T; j++) mask[i * T + j] = group[j] == 0 || group[j] == group[i];
    }
    double ref[T * 30];
    float lg[T * 30];
    ref_forward(ref, NULL, &m, tok, pos, NULL, mask, T);
    KVCache kv;
    cache_for(&kv, &c, T);
    KVCache *kvs[1] = {&kv};
    const uint8_t *masks[1] = {mask};
    int n = T;
    ForwardBatch fb = {.n_seqs = 1, .n_new = &n, .tokens = tok, .positions = pos, .mask = masks, .caches = kvs,
                       .logits_mode = LOGITS_ALL};
    ForwardScratch s = {0};
    Error e;
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), 0);
    assert_true(rel_err(lg, ref, T * 30) < TOL);
    kvcache_free(&kv);
    forward_scratch_free(&s);
    model_free(&m);
}

// A shared read-only parent (the prompt) and three children decoding different
// continuations in one batch: each child equals the reference of prompt + its tokens,
// and each child allocates room for its own tokens only.
static void test_shared_parent(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 3, 4, 2, 40, 0);
    Model m;
    model_init_random(&m, &c, 51, 0.3f);
    enum { P = 20, G = 3, W = 3 };
    int prompt[P], cont[W][G];
    random_tokens(prompt, P, 40, 52);
    random_tokens(&cont[0][0], W * G, 40, 53);
    KVCache parent;
    cache_for(&parent, &c, P);
    KVCache *pk[1] = {&parent};
    ForwardScratch s = {0};
    Error e;
    int np = P;
    ForwardBatch fb = {.n_seqs = 1, .n_new = &np, .tokens = prompt, .caches = pk, .logits_mode = LOGITS_NONE};
    assert_int_equal(model_forward(NULL, &m, &fb, &s, &e), 0);
    KVCache child[W], *ck[W];
    int caps[3] = {G, G, G};
    for (int w = 0; w < W; w++) { kvcache_init_child(&child[w], &parent, caps); ck[w] = &child[w]; }
    assert_int_equal(child[0].bytes, (size_t)2 * 3 * 2 * G * c.head_dim * sizeof(float));
    int ones[W] = {1, 1, 1};
    float lg[W * 40];
    for (int g = 0; g < G; g++) {
        int step_tok[W];
        for (int w = 0; w < W; w++) step_tok[w] = cont[w][g];
        ForwardBatch step = {.n_seqs = W, .n_new = ones, .tokens = step_tok, .caches = ck, .logits_mode = LOGITS_LAST};
        assert_int_equal(model_forward(lg, &m, &step, &s, &e), 0);
        for (int w = 0; w < W; w++) {
            int seq[P + G];
            memcpy(seq, prompt, sizeof prompt);
            for (int i = 0; i <= g; i++) seq[P + i] = cont[w][i];
            double ref[(P + G) * 40];
            ref_forward(ref, NULL, &m, seq, NULL, NULL, NULL, P + g + 1);
            assert_true(rel_err(lg + w * 40, ref + (size_t)(P + g) * 40, 40) < TOL);
        }
    }
    for (int w = 0; w < W; w++) kvcache_free(&child[w]);
    kvcache_free(&parent);
    forward_scratch_free(&s);
    model_free(&m);
}

// The attention hook sees the reference's probabilities.
typedef struct { double *attn; int L, H, T; double max_err; int calls; } HookCheck;
static void hook_check(void *ctx, int layer, int seq, int head, int n_q, const int32_t *q_tok, int n_k,
                       const int32_t *k_tok, const float *probs) {
    HookCheck *hc = ctx;
    (void)seq;
    hc->calls++;
    for (int i = 0; i < n_q; i++)
        for (int j = 0; j < n_k; j++) {
            double r = hc->attn[(((size_t)layer * hc->H + head) * hc->T + q_tok[i]) * hc->T + k_tok[j]];
            double d = fabs(r - probs[(size_t)i * n_k + j]);
            if (d > hc->max_err) hc->max_err = d;
        }
}
static void test_attention_hook(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 3, 4, 2, 30, 0);
    Model m;
    model_init_random(&m, &c, 61, 0.3f);
    enum { T = 15 };
    int tok[T], depth[T];
    random_tokens(tok, T, 30, 62);
    for (int i = 0; i < T; i++) depth[i] = (i >= 1 && i < 12) ? 1 : 3; // EARN k=1
    double *attn = calloc((size_t)3 * 4 * T * T, sizeof(double));
    double ref[T * 30];
    ref_forward(ref, attn, &m, tok, NULL, depth, NULL, T);
    KVCache kv;
    cache_for(&kv, &c, T);
    KVCache *kvs[1] = {&kv};
    int n = T;
    HookCheck hc = {attn, 3, 4, T, 0.0, 0};
    ForwardBatch fb = {.n_seqs = 1, .n_new = &n, .tokens = tok, .depth = depth, .caches = kvs,
                       .logits_mode = LOGITS_NONE, .attn_hook = hook_check, .attn_hook_ctx = &hc};
    ForwardScratch s = {0};
    Error e;
    assert_int_equal(model_forward(NULL, &m, &fb, &s, &e), 0);
    assert_int_equal(hc.calls, 3 * 4);
    assert_true(hc.max_err < 1e-5);
    kvcache_free(&kv);
    forward_scratch_free(&s);
    model_free(&m);
    free(attn);
}

// The fused small-batch layer gives the same bits on one thread and on two
// (its threads own whole output columns and whole heads), so the forward may
// pick either; and the picking rule (FusedThreads) on synthetic timings.
static void test_fused_threads(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 96, 160, 3, 6, 3, 83, 0);
    Model m;
    model_init_random(&m, &c, 31, 0.3f);
    enum { NS = 3, P = 12, STEPS = 5 };
    int tok[NS * (P + STEPS)], lens[NS] = {P, P - 3, P - 7};
    random_tokens(tok, NS * (P + STEPS), c.vocab_size, 32);
    size_t V = (size_t)c.vocab_size;
    float *lg[2] = {malloc(sizeof(float) * NS * V), malloc(sizeof(float) * NS * V)};
    KVCache kv[2][NS];
    KVCache *kvs[2][NS];
    ForwardScratch s[2] = {{0}, {0}};
    Error e;
    const int threads = omp_get_max_threads();
    for (int r = 0; r < 2; r++) {
        s[r].fused.fixed = r + 1; // 1 thread, then 2
        for (int b = 0; b < NS; b++) {
            cache_for(&kv[r][b], &c, P + STEPS);
            kvs[r][b] = &kv[r][b];
        }
        ForwardBatch fb = {.n_seqs = NS, .n_new = lens, .tokens = tok, .caches = kvs[r], .logits_mode = LOGITS_LAST};
        assert_int_equal(model_forward(lg[r], &m, &fb, &s[r], &e), 0);
    }
    int ones[NS] = {1, 1, 1};
    for (int t = 0; t < STEPS; t++) {
        for (int r = 0; r < 2; r++) {
            ForwardBatch step = {.n_seqs = NS, .n_new = ones, .tokens = tok + NS * (P + t), .caches = kvs[r],
                                 .logits_mode = LOGITS_LAST};
            assert_int_equal(model_forward(lg[r], &m, &step, &s[r], &e), 0);
        }
        assert_memory_equal(lg[0], lg[1], sizeof(float) * NS * V);
    }
    print_message("  fused layer: 1 and %d threads give equal logits over %d decode steps of %d rows\n",
                  threads < 2 ? 1 : 2, STEPS, NS);
    for (int r = 0; r < 2; r++) {
        for (int b = 0; b < NS; b++) kvcache_free(&kv[r][b]);
        forward_scratch_free(&s[r]);
        free(lg[r]);
    }
    model_free(&m);

    // The rule: all threads first, then one, then the faster, re-trying the other.
    FusedThreads f = {0};
    assert_int_equal(fused_threads_pick(&f, 2), 2);
    fused_threads_update(&f, 2, 2, 1.0);
    assert_int_equal(fused_threads_pick(&f, 2), 1);
    fused_threads_update(&f, 1, 2, 2.0);
    assert_int_equal(f.best, 1);
    int trials = 0;
    for (int i = 0; i < 8; i++) { // the re-try of one thread comes after 8 calls
        int nt = fused_threads_pick(&f, 2);
        trials += nt == 1;
        fused_threads_update(&f, nt, 2, nt == 1 ? 3.0 : 1.0);
    }
    assert_int_equal(trials, 1);
    assert_int_equal(f.best, 1);
    assert_int_equal(f.interval, 16); // it lost: the next re-try waits twice as long
    // The cores fill up: all threads now take 10 s per layer; the next re-try of one thread wins.
    int switched_at = -1;
    for (int i = 0; i < 40 && switched_at < 0; i++) {
        int nt = fused_threads_pick(&f, 2);
        fused_threads_update(&f, nt, 2, nt == 1 ? 2.0 : 10.0);
        if (f.best == 0) switched_at = i;
    }
    assert_true(switched_at >= 0 && switched_at <= 16);
    assert_int_equal(fused_threads_pick(&f, 2), 1);
    FusedThreads fixed = {.fixed = 2};
    assert_int_equal(fused_threads_pick(&fixed, 1), 1); // never more than there are
    assert_int_equal(fused_threads_pick(&fixed, 4), 2);
    FusedThreads one = {0};
    assert_int_equal(fused_threads_pick(&one, 1), 1);
}

static void test_bad_input(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 32, 2, 2, 2, 10, 1);
    Model m;
    model_init_random(&m, &c, 71, 0.3f);
    int tok[4] = {1, 2, 10, 3}, n = 4;
    KVCache kv;
    cache_for(&kv, &c, 3);
    KVCache *kvs[1] = {&kv};
    ForwardScratch s = {0};
    Error e;
    float lg[40];
    ForwardBatch fb = {.n_seqs = 1, .n_new = &n, .tokens = tok, .caches = kvs, .logits_mode = LOGITS_ALL};
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), -1);
    assert_non_null(strstr(e.msg, "outside the vocabulary"));
    tok[2] = 4;
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), -1); // 4 tokens, capacity 3
    assert_non_null(strstr(e.msg, "is full"));
    assert_int_equal(kv.len[0], 0); // nothing was written
    int depth[4] = {2, 2, 2, 1};
    n = 3;
    fb.depth = depth + 1;
    fb.logits_mode = LOGITS_LAST;
    depth[3] = 1;
    fb.depth = depth + 1; // last token depth 1 < N = 2
    assert_int_equal(model_forward(lg, &m, &fb, &s, &e), -1);
    assert_non_null(strstr(e.msg, "no logits"));
    kvcache_free(&kv);
    forward_scratch_free(&s);
    model_free(&m);
}

// Each fast op against its reference twin.
static void test_ops_against_reference(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 81);
    size_t N = 37, C = 29, OC = 41;
    float *x = malloc(sizeof(float) * N * C), *w = malloc(sizeof(float) * OC * C), *b = malloc(sizeof(float) * OC);
    float *y1 = malloc(sizeof(float) * N * OC), *y2 = malloc(sizeof(float) * N * OC);
    for (size_t i = 0; i < N * C; i++) x[i] = rng_normal(&r);
    for (size_t i = 0; i < OC * C; i++) w[i] = rng_normal(&r);
    for (size_t i = 0; i < OC; i++) b[i] = rng_normal(&r);
    for (int beta = 0; beta <= 1; beta++) {
        for (size_t i = 0; i < N * OC; i++) y1[i] = y2[i] = (float)i * 0.01f;
        matmul_forward(y1, x, w, b, N, C, OC, (float)beta);
        matmul_forward_ref(y2, x, w, b, N, C, OC, (float)beta);
        for (size_t i = 0; i < N * OC; i++) assert_true(fabsf(y1[i] - y2[i]) < 1e-4f * (1 + fabsf(y2[i])));
    }
    rmsnorm_forward(y1, x, b, N, C, 1e-5f);
    rmsnorm_forward_ref(y2, x, b, N, C, 1e-5f);
    for (size_t i = 0; i < N * C; i++) assert_true(fabsf(y1[i] - y2[i]) < 1e-5f * (1 + fabsf(y2[i])));
    swiglu_forward(y1, x, w, N, C);
    swiglu_forward_ref(y2, x, w, N, C);
    for (size_t i = 0; i < N * C; i++) assert_true(fabsf(y1[i] - y2[i]) < 1e-5f * (1 + fabsf(y2[i])));
    // RoPE on rows of stride 40 holding 3 heads of 12, large positions.
    int pos[5] = {0, 1, 17, 511, 4095};
    float inv[6];
    for (int i = 0; i < 6; i++) inv[i] = powf(10000.0f, -2.0f * i / 12.0f);
    memcpy(y1, x, sizeof(float) * 5 * 40 > sizeof(float) * N * C ? sizeof(float) * N * C : sizeof(float) * 5 * 40);
    memcpy(y2, y1, sizeof(float) * 5 * 40);
    rope_forward(y1, pos, inv, 5, 3, 12, 40);
    rope_forward_ref(y2, pos, inv, 5, 3, 12, 40);
    for (size_t i = 0; i < 5 * 40; i++) assert_true(fabsf(y1[i] - y2[i]) < 2e-3f * (1 + fabsf(y2[i])));
    // Softmax with masked (-inf) entries and a wide range of logits.
    float row1[300], row2[300];
    for (int i = 0; i < 300; i++) row1[i] = row2[i] = (i % 7 == 3) ? -INFINITY : 30.0f * rng_normal(&r);
    softmax_row(row1, 300);
    softmax_row_ref(row2, 300);
    for (int i = 0; i < 300; i++) {
        assert_true(fabsf(row1[i] - row2[i]) <= 1e-6f + 1e-5f * row2[i]);
        if (i % 7 == 3) assert_true(row1[i] == 0.0f);
    }
    free(x); free(w); free(b); free(y1); free(y2);
}

// matmul_cols_forward (the decode product on a slice of output columns)
// against its double-precision twin: within 1e-5 of the sum of the absolute
// terms (float32 dot products of up to 256 terms); columns outside the slice
// untouched; and (below 8 rows, the dot-product kernel) the same floats
// whatever the slicing and whichever rows share a block, so the result does not depend on the
// thread count or on the batch's other rows.
static void test_matmul_cols_against_reference(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 82);
    const size_t Ns[] = {1, 2, 3, 5, 20, 33}, Cs[] = {29, 256}, OC = 43;
    for (size_t ic = 0; ic < 2; ic++)
        for (size_t in = 0; in < 6; in++) {
            size_t N = Ns[in], C = Cs[ic];
            float *x = malloc(sizeof(float) * N * C), *w = malloc(sizeof(float) * OC * C), *b = malloc(sizeof(float) * OC);
            float *y1 = malloc(sizeof(float) * N * OC), *y2 = malloc(sizeof(float) * N * OC);
            float *y3 = malloc(sizeof(float) * N * OC), *y4 = malloc(sizeof(float) * OC);
            for (size_t i = 0; i < N * C; i++) x[i] = rng_normal(&r);
            for (size_t i = 0; i < OC * C; i++) w[i] = rng_normal(&r);
            for (size_t i = 0; i < OC; i++) b[i] = rng_normal(&r);
            for (int beta = 0; beta <= 1; beta++)
                for (int with_bias = 0; with_bias <= 1; with_bias++) {
                    const float *bb = with_bias ? b : NULL;
                    for (size_t i = 0; i < N * OC; i++) y1[i] = y2[i] = y3[i] = (float)i * 0.01f;
                    matmul_cols_forward(y1, x, w, bb, N, C, OC, 8, 40, (float)beta);
                    matmul_cols_forward_ref(y2, x, w, bb, N, C, OC, 8, 40, (float)beta);
                    for (size_t n = 0; n < N; n++)
                        for (size_t o = 0; o < OC; o++) {
                            size_t i = n * OC + o;
                            if (o < 8 || o >= 40) { assert_true(y1[i] == (float)i * 0.01f); continue; }
                            double mag = fabs(y3[i]) + (bb ? fabs(bb[o]) : 0.0);
                            for (size_t c = 0; c < C; c++) mag += fabs((double)x[n * C + c] * w[o * C + c]);
                            assert_true(fabs((double)y1[i] - y2[i]) <= 1e-5 * mag);
                        }
                    if (N >= 8) continue; // sgemm on the slice: within the tolerance above
                    // Two slices cut at 21 give the floats of the whole range.
                    matmul_cols_forward(y3, x, w, bb, N, C, OC, 8, 21, (float)beta);
                    matmul_cols_forward(y3, x, w, bb, N, C, OC, 21, 40, (float)beta);
                    assert_memory_equal(y1, y3, sizeof(float) * N * OC);
                    // The last row computed alone (no row to pair with) gives the same floats.
                    for (size_t o = 0; o < OC; o++) y4[o] = (float)((N - 1) * OC + o) * 0.01f;
                    matmul_cols_forward(y4, x + (N - 1) * C, w, bb, 1, C, OC, 8, 40, (float)beta);
                    assert_memory_equal(y4 + 8, y1 + (N - 1) * OC + 8, sizeof(float) * 32);
                }
            free(x); free(w); free(b); free(y1); free(y2); free(y3); free(y4);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_against_reference),
        cmocka_unit_test(test_matmul_cols_against_reference),
        cmocka_unit_test(test_prefill_llama_gqa),
        cmocka_unit_test(test_prefill_qwen2_tied),
        cmocka_unit_test(test_prefill_odd_sizes),
        cmocka_unit_test(test_prefill_bf16_weights),
        cmocka_unit_test(test_batched_prefill),
        cmocka_unit_test(test_incremental_decode),
        cmocka_unit_test(test_layer_plan_earn),
        cmocka_unit_test(test_explicit_mask),
        cmocka_unit_test(test_shared_parent),
        cmocka_unit_test(test_attention_hook),
        cmocka_unit_test(test_fused_threads),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
