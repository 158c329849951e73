// test_kvpolicy.c: the training-free KV policies (runtime/kvpolicy.c).
//
//  - specs: defaults, every parameter, and each kind of bad input (unknown
//    policy, malformed key=value, unknown key, budget <= 0 / > 1 / not a
//    number, both budget and tokens, even kernel) refused with its name;
//  - budgets: ceil(R * n), tokens=N, budgets larger than the prompt keep all;
//  - hand-built cases with the kept set written out from the published rule:
//    StreamingLLM (sinks + recent, sinks beyond the budget), H2O (the
//    normalisation by the queries that see a key changes the answer; GQA mean),
//    SnapKV (avg pooling with the zero padding counted at the left edge, the
//    window's own scores not pooled in at the right edge, max pooling, GQA mean
//    over the query heads decides a key no head alone would pick), TOVA (head
//    mean over all heads of the layer), K-norm, PyramidKV's per-layer budgets
//    and its uniform fallback;
//  - every selection against its plain *_ref twin: the same kept set, exactly,
//    over random inputs (n 2..70, every C, 1/2/4 heads, kernels 1..7, avg/max);
//  - the observer + selection against the published rule computed here from
//    whole attention matrices [heads, n, n] (sorting in double); the sets
//    must agree except for keys whose scores tie with the cut within 1e-12;
//  - end to end on a tiny random model: the observer's accumulators (parallel
//    prefill) equal column sums of the reference model's attention (abs tol
//    1e-4); a StreamingLLM beam search's logits equal the reference forward
//    where generated tokens see only the kept prompt tokens (rel tol 1e-4, so
//    keys kept their original positions); budget=1.0 gives bitwise the same
//    beams as no policy; KV bytes equal the kept entries' closed form
//    (PyramidKV: per-layer budgets), and a policy on an EARN model is refused.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "helpers/ref_model.h"
#include "runtime/beam.h"
#include "runtime/kvpolicy.h"
#include "runtime/ops.h"
#include "runtime/trie.h"

#define TOL_TIE 1e-12   // scores this close to the cut may go either way
#define TOL_ACC 1e-4    // observer sums (float probs) vs the double reference
#define TOL_REL 1e-4    // logits vs the double reference

// keep [n] == the listed indices.
static void assert_kept(const uint8_t *keep, int n, const int *want, int n_want) {
    uint8_t w[512] = {0};
    for (int i = 0; i < n_want; i++) w[want[i]] = 1;
    for (int j = 0; j < n; j++) {
        if (keep[j] != w[j]) print_message("    key %d: kept %d, want %d\n", j, keep[j], w[j]);
        assert_int_equal(keep[j], w[j]);
    }
}

static int count_kept(const uint8_t *keep, int n) {
    int c = 0;
    for (int j = 0; j < n; j++) c += keep[j];
    return c;
}

// ---------------------------------------------------------------------------
// Specs and budgets

static void expect_parse_error(const char *spec, const char *needle) {
    KVPolicy p;
    Error e = {{0}};
    int rc = kvpolicy_parse(&p, spec, &e);
    if (rc == 0 || !strstr(e.msg, needle)) print_message("    '%s' -> rc %d '%s' (want '%s')\n", spec, rc, e.msg, needle);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(e.msg, needle));
}

static void test_parse(void **st) {
    (void)st;
    KVPolicy p;
    Error e;
    char buf[256];
    assert_int_equal(kvpolicy_parse(&p, "snapkv", &e), 0);
    assert_int_equal(p.kind, KVP_SNAPKV);
    assert_int_equal(p.window, 32);
    assert_int_equal(p.kernel, 5);
    assert_int_equal(p.pool, KVP_POOL_AVG);
    assert_true(p.budget == 0.5 && p.tokens == 0);
    assert_int_equal(kvpolicy_parse(&p, "snapkv:budget=0.1,window=16,pool=max,kernel=7", &e), 0);
    assert_true(p.budget == 0.1 && p.window == 16 && p.pool == KVP_POOL_MAX && p.kernel == 7);
    kvpolicy_format(buf, sizeof buf, &p);
    assert_string_equal(buf, "snapkv:budget=0.1,window=16,kernel=7,pool=max");
    assert_int_equal(kvpolicy_parse(&p, "pyramidkv:tokens=64,beta=10", &e), 0);
    assert_true(p.tokens == 64 && p.beta == 10.0);
    kvpolicy_format(buf, sizeof buf, &p);
    assert_string_equal(buf, "pyramidkv:tokens=64,window=32,kernel=5,pool=avg,beta=10");
    assert_int_equal(kvpolicy_parse(&p, "streaming:sink=2,budget=1", &e), 0);
    assert_true(p.kind == KVP_STREAMING && p.sink == 2 && p.budget == 1.0);
    assert_int_equal(kvpolicy_parse(&p, "h2o:recent=8", &e), 0);
    assert_int_equal(p.recent, 8);
    assert_int_equal(kvpolicy_parse(&p, "random:seed=7", &e), 0);
    assert_true(p.seed == 7);
    assert_int_equal(kvpolicy_parse(&p, "none", &e), 0);
    assert_int_equal(p.kind, KVP_NONE);
    for (int k = 0; k < KVP_COUNT; k++) { // every name parses to itself
        assert_int_equal(kvpolicy_parse(&p, kvpolicy_name((KVPolicyKind)k), &e), 0);
        assert_int_equal(p.kind, k);
    }

    expect_parse_error("snapk", "unknown policy 'snapk'");
    expect_parse_error("", "unknown policy ''");
    expect_parse_error("snapkv:budget", "'budget' is not key=value");
    expect_parse_error("snapkv:=0.1", "is not key=value");
    expect_parse_error("snapkv:budget=", "is not key=value");
    expect_parse_error("snapkv:", "nothing after ':'");
    expect_parse_error("snapkv:budget=0.1,,window=3", "empty field");
    expect_parse_error("snapkv:budget=0.1,", "empty field");
    expect_parse_error("snapkv:windw=3", "unknown key 'windw'");
    expect_parse_error("tova:window=3", "unknown key 'window'");
    expect_parse_error("streaming:beta=3", "unknown key 'beta'");
    expect_parse_error("snapkv:budget=0", "budget '0' is not a number in (0, 1]");
    expect_parse_error("snapkv:budget=-0.5", "budget '-0.5'");
    expect_parse_error("snapkv:budget=abc", "budget 'abc'");
    expect_parse_error("snapkv:budget=0.1x", "budget '0.1x'");
    expect_parse_error("snapkv:budget=nan", "budget 'nan'");
    expect_parse_error("snapkv:budget=1.5", "budget '1.5'");
    expect_parse_error("snapkv:tokens=0", "tokens '0'");
    expect_parse_error("snapkv:tokens=2.5", "tokens '2.5'");
    expect_parse_error("snapkv:budget=0.1,tokens=5", "not both");
    expect_parse_error("snapkv:kernel=4", "kernel '4' is not an odd integer");
    expect_parse_error("snapkv:pool=mean", "pool 'mean'");
    expect_parse_error("pyramidkv:beta=0.5", "beta '0.5'");
    expect_parse_error("snapkv:window=0", "window '0'");
    // ratio (kvpress's compression_ratio: the fraction removed) and rerotate
    assert_int_equal(kvpolicy_parse(&p, "snapkv:ratio=0.3", &e), 0);
    assert_true(fabs(p.budget - 0.7) < 1e-12 && p.tokens == 0);
    assert_int_equal(kvpolicy_parse(&p, "streaming:tokens=8,rerotate=1", &e), 0);
    assert_true(p.rerotate == 1 && p.tokens == 8);
    kvpolicy_format(buf, sizeof buf, &p);
    assert_string_equal(buf, "streaming:tokens=8,sink=4,rerotate=1");
    expect_parse_error("snapkv:ratio=1", "ratio '1' is not a number in [0, 1)");
    expect_parse_error("snapkv:ratio=-0.1", "ratio '-0.1'");
    expect_parse_error("snapkv:ratio=0.3,budget=0.5", "give budget or ratio");
    expect_parse_error("snapkv:ratio=0.3,tokens=5", "not both");
    expect_parse_error("streaming:rerotate=2", "rerotate '2' is not 0 or 1");
    expect_parse_error("snapkv:rerotate=1", "unknown key 'rerotate'");
    expect_parse_error("none:budget=0.5", "none: takes no keys");
}

static void test_budgets(void **st) {
    (void)st;
    KVPolicy p;
    Error e;
    assert_int_equal(kvpolicy_parse(&p, "snapkv:budget=0.1", &e), 0);
    assert_int_equal(kvpolicy_budget(&p, 130), 13);  // exactly 13, not 14 from 0.1 * 130 = 13.000000000000002
    assert_int_equal(kvpolicy_budget(&p, 131), 14);  // ceil
    assert_int_equal(kvpolicy_budget(&p, 3), 1);
    assert_int_equal(kvpolicy_parse(&p, "snapkv:budget=1.0", &e), 0);
    assert_int_equal(kvpolicy_budget(&p, 130), 130);
    assert_int_equal(kvpolicy_obs_rows(&p, 130), 0); // keeps all: nothing to observe
    assert_int_equal(kvpolicy_parse(&p, "h2o:tokens=500", &e), 0);
    assert_int_equal(kvpolicy_budget(&p, 130), 130);  // larger than the prompt: keep all
    assert_int_equal(kvpolicy_budget(&p, 600), 500);
    assert_int_equal(kvpolicy_obs_rows(&p, 600), 600); // h2o reads every row
    assert_int_equal(kvpolicy_parse(&p, "tova:tokens=5", &e), 0);
    assert_int_equal(kvpolicy_obs_rows(&p, 600), 1);
    // The SnapKV window takes at most half the budget.
    assert_int_equal(kvpolicy_window(32, 200), 32);
    assert_int_equal(kvpolicy_window(32, 13), 6);
    assert_int_equal(kvpolicy_window(32, 1), 1);
    assert_int_equal(kvpolicy_parse(&p, "snapkv:tokens=13", &e), 0);
    assert_int_equal(kvpolicy_obs_rows(&p, 130), 6);
}

// ---------------------------------------------------------------------------
// Hand-built cases

static void test_streaming_hand(void **st) {
    (void)st;
    uint8_t keep[32], kr[32];
    kvsel_streaming(keep, 10, 6, 4);
    assert_kept(keep, 10, (int[]){0, 1, 2, 3, 8, 9}, 6);
    kvsel_streaming(keep, 10, 3, 4); // the budget is smaller than the sinks
    assert_kept(keep, 10, (int[]){0, 1, 2}, 3);
    kvsel_streaming(keep, 10, 5, 0); // no sinks: the recent window
    assert_kept(keep, 10, (int[]){5, 6, 7, 8, 9}, 5);
    for (int n = 1; n < 20; n++)
        for (int C = 1; C <= n; C++)
            for (int s = 0; s < 6; s++) {
                kvsel_streaming(keep, n, C, s);
                kvsel_streaming_ref(kr, n, C, s);
                assert_memory_equal(keep, kr, (size_t)n);
                assert_int_equal(count_kept(keep, n), C);
            }
}

// Feeds attention rows probs [hq][n][n] (causal) to the observer for one
// sequence, layer 0, heads 0..hq-1, as the forward pass does; returns acc [hq, n].
static double *observe(const float *probs, int hq, int n, const KVPolicy *p) {
    KVObserver o;
    kvobs_init(&o, p, 1, &n, 1, hq);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    for (int j = 0; j < n; j++) tok[j] = j;
    for (int h = 0; h < hq; h++) kvobs_hook(&o, 0, 0, h, n, tok, n, tok, probs + (size_t)h * n * n);
    double *acc = malloc(sizeof(double) * (size_t)hq * n);
    memcpy(acc, o.acc, sizeof(double) * (size_t)hq * n);
    kvobs_free(&o);
    free(tok);
    return acc;
}

static void test_h2o_hand(void **st) {
    (void)st;
    // One head, n = 4. Column sums 1.8, 0.8, 0.8, 0.6; seen by 4, 3, 2, 1 queries:
    // normalised 0.45, 0.267, 0.4, 0.6. C = 3, recent = 1: key 3 + the top 2 of
    // keys 0..2 = {0, 2}. Without the normalisation it would be {0, 1} (a tie
    // 0.8 = 0.8 broken towards the earlier key).
    const float a[16] = {1.0f, 0, 0, 0, 0.5f, 0.5f, 0, 0, 0.2f, 0.2f, 0.6f, 0, 0.1f, 0.1f, 0.2f, 0.6f};
    KVPolicy p;
    kvpolicy_default(&p, KVP_H2O);
    p.tokens = 3;
    double *acc = observe(a, 1, 4, &p);
    assert_true(fabs(acc[0] - 1.8) < 1e-6 && fabs(acc[3] - 0.6) < 1e-6);
    uint8_t keep[4], kr[4];
    kvsel_h2o(keep, acc, 1, 4, 3, 1);
    kvsel_h2o_ref(kr, acc, 1, 4, 3, 1);
    assert_kept(keep, 4, (int[]){0, 2, 3}, 3);
    assert_memory_equal(keep, kr, 4);
    free(acc);
    // GQA: two heads, n = 3, C = 2, recent 1 (key 2 always). Normalised, head 0
    // scores keys 0, 1 as 0.3, 0.2 (alone it keeps key 0), head 1 as 0, 0.25; the
    // mean 0.15, 0.225 keeps key 1.
    const double acc2[6] = {0.9, 0.4, 1.7, 0.0, 0.5, 2.5};
    kvsel_h2o(keep, acc2, 2, 3, 2, 1);
    kvsel_h2o_ref(kr, acc2, 2, 3, 2, 1);
    assert_kept(keep, 3, (int[]){1, 2}, 2);
    assert_memory_equal(keep, kr, 3);
    kvsel_h2o(keep, acc2, 1, 3, 2, 1);
    assert_kept(keep, 3, (int[]){0, 2}, 2);
}

static void test_snapkv_hand(void **st) {
    (void)st;
    uint8_t keep[16], kr[16];
    // One head, n = 8, window w = 1 (key 7), C = 2: the top 1 of keys 0..6 after
    // avg pooling, kernel 5, zero padding counted (divide by 5 everywhere):
    //   raw   0.6  0    0    0    0.25 0.25 0.25 | 3.0 (window)
    //   avg   0.12 0.12 0.17 0.10 0.15 0.15 0.15
    // -> key 2. Dropping the padding from the mean would pick key 6 (0.75/3);
    // pooling the window's own score into key 5/6 would pick key 5; no pooling
    // would pick key 0.
    const double acc[8] = {0.6, 0, 0, 0, 0.25, 0.25, 0.25, 3.0};
    kvsel_snapkv(keep, acc, 1, 8, 2, 1, 5, KVP_POOL_AVG);
    kvsel_snapkv_ref(kr, acc, 1, 8, 2, 1, 5, KVP_POOL_AVG);
    assert_kept(keep, 8, (int[]){2, 7}, 2);
    assert_memory_equal(keep, kr, 8);
    kvsel_snapkv(keep, acc, 1, 8, 2, 1, 1, KVP_POOL_AVG); // kernel 1: no pooling
    assert_kept(keep, 8, (int[]){0, 7}, 2);
    // Max pooling, C = 3: max 0.6 0.6 0.6 0.25 0.25 0.25 0.25 -> keys 0, 1 (ties: earlier).
    kvsel_snapkv(keep, acc, 1, 8, 3, 1, 5, KVP_POOL_MAX);
    kvsel_snapkv_ref(kr, acc, 1, 8, 3, 1, 5, KVP_POOL_MAX);
    assert_kept(keep, 8, (int[]){0, 1, 7}, 3);
    assert_memory_equal(keep, kr, 8);
    // Max pooling at the right edge: the window (keys 6, 7) must not leak into key 5.
    const double acc_r[8] = {0.1, 0, 0, 0, 0, 0.05, 5.0, 5.0};
    kvsel_snapkv(keep, acc_r, 1, 8, 3, 2, 5, KVP_POOL_MAX);
    assert_kept(keep, 8, (int[]){0, 6, 7}, 3);
    // GQA: two heads, kernel 1, n = 5, w = 1, C = 2. Head 0 alone picks key 0,
    // head 1 alone key 2; the mean 0.25 0.35 0.30 0.10 picks key 1.
    const double acc_g[10] = {0.5, 0.4, 0.0, 0.1, 9.0, 0.0, 0.3, 0.6, 0.1, 9.0};
    kvsel_snapkv(keep, acc_g, 2, 5, 2, 1, 1, KVP_POOL_AVG);
    assert_kept(keep, 5, (int[]){1, 4}, 2);
    kvsel_snapkv(keep, acc_g, 1, 5, 2, 1, 1, KVP_POOL_AVG);
    assert_kept(keep, 5, (int[]){0, 4}, 2);
}

static void test_tova_knorm_hand(void **st) {
    (void)st;
    uint8_t keep[8];
    // Last rows of 4 heads over n = 5; head means 0.25 0.1 0.3 0.15 0.2: C = 2 -> {0, 2}.
    // The last token itself may go (TOVA's rule: the lowest scores leave, whoever they are).
    const double acc[20] = {0.7, 0.1, 0.0, 0.1, 0.1, 0.1, 0.1, 0.6, 0.1, 0.1,
                            0.1, 0.1, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5};
    kvsel_tova(keep, acc, 4, 5, 2);
    assert_kept(keep, 5, (int[]){0, 2}, 2);
    kvsel_tova(keep, acc, 4, 5, 3); // key 4 (0.2) next
    assert_kept(keep, 5, (int[]){0, 2, 4}, 3);
    // Keys [4, 2] with squared norms 5, 1, 8, 1, 0.5: the 3 smallest -> {1, 3, 4}.
    const float k[8] = {1, 2, 1, 0, 2, 2, 0, -1};
    const float k5[10] = {1, 2, 1, 0, 2, 2, 0, -1, 0.5f, 0.5f};
    kvsel_knorm(keep, k5, 5, 2, 3);
    assert_kept(keep, 5, (int[]){1, 3, 4}, 3);
    kvsel_knorm(keep, k, 4, 2, 1); // a tie (1 = 1): the earlier key
    assert_kept(keep, 4, (int[]){1}, 1);
}

static void test_pyramid_budgets(void **st) {
    (void)st;
    // n = 100, C = 40, w = 8, beta 20, 4 layers: A = 32, lo = 1.6, hi = 62.4,
    // step 20.27: 8 + {62, 42, 22, 2} = 70, 50, 30, 10 (sum 160 = 4 * 40).
    const int want[4] = {70, 50, 30, 10};
    for (int l = 0; l < 4; l++) {
        assert_int_equal(kvpolicy_pyramid_budget(100, 40, 8, 20.0, l, 4), want[l]);
        assert_int_equal(kvpolicy_pyramid_budget_ref(100, 40, 8, 20.0, l, 4), want[l]);
    }
    // Fallback: n = 60, hi = 62.4 > n - w = 52: every layer keeps C.
    for (int l = 0; l < 4; l++) assert_int_equal(kvpolicy_pyramid_budget(60, 40, 8, 20.0, l, 4), 40);
    // At the border: n - w = 62.4 would fit; n = 70 (62 < 62.4) falls back, n = 71 does not.
    assert_int_equal(kvpolicy_pyramid_budget(70, 40, 8, 20.0, 0, 4), 40);
    assert_int_equal(kvpolicy_pyramid_budget(71, 40, 8, 20.0, 0, 4), 70);
    // One layer: the uniform budget.
    assert_int_equal(kvpolicy_pyramid_budget(100, 40, 8, 20.0, 0, 1), 40);
    // Fast and reference agree everywhere, and the layers sum to L*C within L/2 (rounding).
    for (int n = 4; n < 120; n += 3)
        for (int C = 2; C < n; C += 2)
            for (int L = 1; L <= 12; L += 3) {
                int w = kvpolicy_window(32, C), sum = 0;
                for (int l = 0; l < L; l++) {
                    int b = kvpolicy_pyramid_budget(n, C, w, 20.0, l, L);
                    assert_int_equal(b, kvpolicy_pyramid_budget_ref(n, C, w, 20.0, l, L));
                    assert_true(b >= w && b <= n);
                    sum += b;
                }
                assert_true(abs(sum - L * C) <= (L + 1) / 2);
            }
}

// ---------------------------------------------------------------------------
// Fast vs reference twins, and vs the rule computed from whole attention matrices

// Random causal attention rows probs [hq][n][n] (softmax of N(0, 2) logits).
static void random_attention(float *probs, int hq, int n, Rng *r) {
    for (int h = 0; h < hq; h++)
        for (int i = 0; i < n; i++) {
            float *row = probs + ((size_t)h * n + i) * n;
            double z = 0;
            for (int j = 0; j < n; j++) row[j] = j <= i ? expf(2.0f * rng_normal(r)) : 0.0f;
            for (int j = 0; j <= i; j++) z += row[j];
            for (int j = 0; j <= i; j++) row[j] = (float)(row[j] / z);
        }
}

// Scores the published rule gives each key, computed from the matrices (NAN:
// not a candidate); the kept set = the candidates' top-c + `forced` keys.
static void rule_scores(double *s, const float *probs, int hq, int n, int C, const KVPolicy *p, int *c_top) {
    int w = p->kind == KVP_H2O ? (p->recent < C ? p->recent : C) : p->kind == KVP_TOVA ? 0 : kvpolicy_window(p->window, C);
    int m = n - w, half = p->kernel / 2;
    *c_top = C - w;
    for (int j = 0; j < n; j++) s[j] = j < m ? 0.0 : NAN;
    for (int h = 0; h < hq; h++) {
        double col[512] = {0};
        int row0 = p->kind == KVP_H2O ? 0 : p->kind == KVP_TOVA ? n - 1 : n - w;
        for (int i = row0; i < n; i++)
            for (int j = 0; j <= i; j++) col[j] += probs[((size_t)h * n + i) * n + j];
        for (int j = 0; j < m; j++) {
            double v;
            if (p->kind == KVP_H2O) v = col[j] / (n - j);
            else if (p->kind == KVP_TOVA) v = col[j];
            else { // pooled over the in-range neighbours before the window
                v = p->pool == KVP_POOL_MAX ? -INFINITY : 0.0;
                for (int t = j - half; t <= j + half; t++) {
                    if (t < 0 || t >= m) continue;
                    v = p->pool == KVP_POOL_MAX ? fmax(v, col[t]) : v + col[t];
                }
                if (p->pool == KVP_POOL_AVG) v /= p->kernel;
            }
            s[j] += v / hq;
        }
    }
}

static int desc_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

// Keys where the kept set differs from the rule's beyond ties at the cut (TOL_TIE).
static int rule_mismatches(const uint8_t *keep, const double *s, int n, int c_top) {
    double *sorted = malloc(sizeof(double) * (size_t)n);
    int m = 0;
    for (int j = 0; j < n; j++)
        if (!isnan(s[j])) sorted[m++] = s[j];
    qsort(sorted, (size_t)m, sizeof(double), desc_cmp);
    double cut = c_top > 0 ? sorted[c_top - 1] : INFINITY;
    int bad = 0;
    for (int j = 0; j < n; j++) {
        if (isnan(s[j])) { bad += keep[j] != 1; continue; } // window / recent keys
        int rule = c_top > 0 && s[j] >= cut;
        if (rule != keep[j] && !(fabs(s[j] - cut) <= TOL_TIE * fabs(cut))) bad++;
    }
    free(sorted);
    return bad;
}

static void test_vs_ref_and_rule(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 11);
    enum { NMAX = 70 };
    float *probs = malloc(sizeof(float) * 4 * NMAX * NMAX), *keys = malloc(sizeof(float) * NMAX * 8);
    double s[NMAX];
    uint8_t keep[NMAX], kr[NMAX];
    long cases = 0;
    for (int n = 2; n <= NMAX; n += 3) {
        for (int hi = 0; hi < 3; hi++) {
            int hq = 1 << hi;
            random_attention(probs, hq, n, &r);
            for (int i = 0; i < n * 8; i++) keys[i] = rng_normal(&r);
            for (int C = 1; C < n; C++) {
                for (int v = 0; v < 8; v++) {
                    KVPolicy p;
                    kvpolicy_default(&p, v < 2 ? KVP_H2O : v < 7 ? KVP_SNAPKV : KVP_TOVA);
                    p.tokens = C;
                    p.recent = v == 0 ? -1 : v == 1 ? 3 : -1;
                    p.kernel = 1 + 2 * (v % 4);
                    p.pool = v % 2 ? KVP_POOL_MAX : KVP_POOL_AVG;
                    p.window = v == 6 ? 4 : 32;
                    double *acc = observe(probs, hq, n, &p);
                    int w = kvpolicy_window(p.window, C), rec = p.recent >= 0 ? p.recent : C / 2;
                    if (p.kind == KVP_H2O) {
                        kvsel_h2o(keep, acc, hq, n, C, rec);
                        kvsel_h2o_ref(kr, acc, hq, n, C, rec);
                    } else if (p.kind == KVP_SNAPKV) {
                        kvsel_snapkv(keep, acc, hq, n, C, w, p.kernel, p.pool);
                        kvsel_snapkv_ref(kr, acc, hq, n, C, w, p.kernel, p.pool);
                    } else {
                        kvsel_tova(keep, acc, hq, n, C);
                        kvsel_tova_ref(kr, acc, hq, n, C);
                    }
                    assert_memory_equal(keep, kr, (size_t)n);
                    assert_int_equal(count_kept(keep, n), C);
                    p.recent = rec;
                    int c_top;
                    rule_scores(s, probs, hq, n, C, &p, &c_top);
                    assert_int_equal(rule_mismatches(keep, s, n, c_top), 0);
                    free(acc);
                    cases++;
                }
                kvsel_knorm(keep, keys, n, 8, C);
                kvsel_knorm_ref(kr, keys, n, 8, C);
                assert_memory_equal(keep, kr, (size_t)n);
                kvsel_random(keep, n, C, (uint64_t)(n * 1000 + C));
                kvsel_random_ref(kr, n, C, (uint64_t)(n * 1000 + C));
                assert_memory_equal(keep, kr, (size_t)n);
                assert_int_equal(count_kept(keep, n), C);
            }
        }
    }
    print_message("  %ld policy cases: fast == ref, and == the rule from the matrices\n", cases);
    free(probs);
    free(keys);
}

// The comparison can fail: a kept set with one good key swapped for a bad one
// (SnapKV, random matrices) is reported, for both pooling kinds.
static void test_checks_can_fail(void **st) {
    (void)st;
    enum { N = 40 };
    Rng r;
    rng_seed(&r, 5);
    float probs[2 * N * N];
    random_attention(probs, 2, N, &r);
    for (int pool = 0; pool < 2; pool++) {
        KVPolicy p;
        kvpolicy_default(&p, KVP_SNAPKV);
        p.tokens = 12;
        p.pool = (KVPool)pool;
        double *acc = observe(probs, 2, N, &p), s[N];
        uint8_t keep[N];
        int w = kvpolicy_window(p.window, 12), c_top;
        kvsel_snapkv(keep, acc, 2, N, 12, w, p.kernel, p.pool);
        rule_scores(s, probs, 2, N, 12, &p, &c_top);
        assert_int_equal(rule_mismatches(keep, s, N, c_top), 0);
        int best = -1, worst = -1; // best kept and worst dropped candidates
        for (int j = 0; j < N - w; j++) {
            if (keep[j] && (best < 0 || s[j] > s[best])) best = j;
            if (!keep[j] && (worst < 0 || s[j] < s[worst])) worst = j;
        }
        keep[best] = 0;
        keep[worst] = 1;
        assert_true(rule_mismatches(keep, s, N, c_top) >= 2);
        free(acc);
    }
}

// ---------------------------------------------------------------------------
// End to end on a tiny model

// 4-level codes over tokens 40..: 4 x 3 x 3 x 2 = 72 codes.
static void build_trie(Trie *t) {
    int n = 72, *it = malloc(sizeof(int) * 4 * (n + 1)), k = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 2; d++) {
                    k++;
                    it[4 * k] = 40 + a; it[4 * k + 1] = 44 + b; it[4 * k + 2] = 47 + c; it[4 * k + 3] = 50 + d;
                }
    trie_build(t, it, n, 4);
    free(it);
}

// The observer's sums after a real (parallel) prefill == column sums of the
// reference model's attention over the same rows.
static void test_observer_vs_reference(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 32, 48, 3, 4, 2, 60, 0);
    Model m;
    model_init_random(&m, &c, 5, 0.3f);
    enum { U = 3 };
    int lens[U] = {37, 9, 70}, T = 0;
    for (int u = 0; u < U; u++) T += lens[u];
    int *tok = malloc(sizeof(int) * (size_t)T);
    Rng r;
    rng_seed(&r, 2);
    for (int i = 0; i < T; i++) tok[i] = (int)(rng_u64(&r) % 60);
    KVPolicy p;
    kvpolicy_default(&p, KVP_SNAPKV);
    p.tokens = 8; // window 4: the last 4 rows
    KVObserver o;
    kvobs_init(&o, &p, U, lens, c.n_layers, c.n_heads);
    KVCache kv[U], *pk[U];
    for (int u = 0; u < U; u++) {
        int cap[3] = {lens[u], lens[u], lens[u]};
        kvcache_init(&kv[u], 3, c.n_kv_heads, c.head_dim, cap);
        pk[u] = &kv[u];
    }
    ForwardBatch fb = {.n_seqs = U, .n_new = lens, .tokens = tok, .caches = pk, .logits_mode = LOGITS_LAST,
                       .attn_hook = kvobs_hook, .attn_hook_ctx = &o, .attn_hook_concurrent = 1};
    ForwardScratch s = {0};
    Error e;
    float *logits = malloc(sizeof(float) * U * 60);
    assert_int_equal(model_forward(logits, &m, &fb, &s, &e), 0);
    double max_err = 0;
    for (int u = 0, at = 0; u < U; at += lens[u], u++) {
        int n = lens[u], L = c.n_layers, H = c.n_heads;
        double *attn = malloc(sizeof(double) * (size_t)L * H * n * n), *lg = malloc(sizeof(double) * (size_t)n * 60);
        ref_forward(lg, attn, &m, tok + at, NULL, NULL, NULL, n);
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++)
                for (int j = 0; j < n; j++) {
                    double want = 0;
                    for (int i = o.first_row[u]; i < n; i++) want += attn[(((size_t)l * H + h) * n + i) * n + j];
                    double got = o.acc[o.at[u] + ((size_t)l * H + h) * n + j];
                    max_err = fmax(max_err, fabs(got - want));
                }
        free(attn);
        free(lg);
    }
    print_message("  observer vs reference attention: max abs err %.2e\n", max_err);
    assert_true(max_err < TOL_ACC);
    kvobs_free(&o);
    for (int u = 0; u < U; u++) kvcache_free(&kv[u]);
    forward_scratch_free(&s);
    free(logits);
    free(tok);
    model_free(&m);
}

typedef struct {
    const Model *m;
    const int *prompt;
    int n;
    const uint8_t *kept; // [n] the prompt tokens generated tokens may see
    double max_err;
    int rows;
} StreamCheck;

// Each logits row of the search == the reference forward of prompt + the row's
// generated tokens, where generated tokens see only the kept prompt tokens.
static void stream_hook(void *ctx, int step, int n_rows, const int *row_user, const int *row_tokens, int n_tokens,
                        const float *logits) {
    (void)row_user;
    StreamCheck *sc = ctx;
    int T = sc->n + n_tokens, V = sc->m->config.vocab_size;
    int *seq = malloc(sizeof(int) * (size_t)T);
    uint8_t *mask = calloc((size_t)T * T, 1);
    double *ref = malloc(sizeof(double) * (size_t)T * V);
    for (int row = 0; row < n_rows; row++) {
        memcpy(seq, sc->prompt, sizeof(int) * (size_t)sc->n);
        memcpy(seq + sc->n, row_tokens + (size_t)row * n_tokens, sizeof(int) * (size_t)n_tokens);
        for (int i = 0; i < T; i++)
            for (int j = 0; j <= i; j++) mask[i * T + j] = i < sc->n || j >= sc->n || sc->kept[j] || step == 0;
        ref_forward(ref, NULL, sc->m, seq, NULL, NULL, mask, T);
        double err = rel_err(logits + (size_t)row * V, ref + (size_t)(T - 1) * V, (size_t)V);
        sc->max_err = fmax(sc->max_err, err);
        sc->rows++;
    }
    free(seq);
    free(mask);
    free(ref);
}

static void run_beam(BeamHyps *h, BeamSearch *bs, int U, int **prompts, int *lens) {
    Error e;
    int rc = beam_search_run(h, bs, U, (const int *const *)prompts, NULL, lens, &e);
    if (rc) print_message("    %s\n", e.msg);
    assert_int_equal(rc, 0);
}

static void test_beam_with_policies(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 48, 4, 4, 2, 60, 1);
    Model m;
    model_init_random(&m, &c, 9, 0.3f);
    Trie t;
    build_trie(&t);
    enum { U = 3, W = 5 };
    int lens[U] = {40, 17, 64}, *prompts[U];
    Rng r;
    rng_seed(&r, 4);
    for (int u = 0; u < U; u++) {
        prompts[u] = malloc(sizeof(int) * (size_t)lens[u]);
        for (int i = 0; i < lens[u]; i++) prompts[u][i] = (int)(rng_u64(&r) % 40);
    }
    BeamSearch bs;
    Error e;
    assert_int_equal(beam_search_init(&bs, &m, &t, W, &e), 0);
    BeamHyps base[U], h[U];
    run_beam(base, &bs, U, prompts, lens);
    size_t bptl = 2 * (size_t)c.n_kv_heads * (size_t)c.head_dim * sizeof(float), gen = (size_t)U * W * 3;
    size_t full_bytes = bs.kv_bytes;
    assert_int_equal(full_bytes, bptl * 4 * (size_t)(40 + 17 + 64) + bptl * 4 * gen);

    // budget = 1.0 (every policy): bitwise the same beams and KV bytes as no policy.
    for (int k = 1; k < KVP_COUNT; k++) {
        KVPolicy p;
        kvpolicy_default(&p, (KVPolicyKind)k);
        p.budget = 1.0;
        bs.kv_policy = &p;
        run_beam(h, &bs, U, prompts, lens);
        for (int u = 0; u < U; u++) {
            assert_int_equal(h[u].n, base[u].n);
            assert_memory_equal(h[u].tokens, base[u].tokens, sizeof(int) * (size_t)h[u].n * 4);
            assert_memory_equal(h[u].scores, base[u].scores, sizeof(double) * (size_t)h[u].n);
            beam_hyps_free(&h[u]);
        }
        assert_int_equal(bs.kv_bytes, full_bytes);
    }

    // StreamingLLM, 12 tokens kept (4 sinks + 8 recent): logits == the masked reference.
    KVPolicy sp;
    kvpolicy_default(&sp, KVP_STREAMING);
    sp.tokens = 12;
    bs.kv_policy = &sp;
    for (int u = 0; u < U; u++) {
        uint8_t kept[64];
        kvsel_streaming_ref(kept, lens[u], 12, 4);
        StreamCheck sc = {&m, prompts[u], lens[u], kept, 0, 0};
        bs.hook = stream_hook;
        bs.hook_ctx = &sc;
        run_beam(h, &bs, 1, &prompts[u], &lens[u]);
        print_message("  streaming user %d: %d logits rows, max rel err %.2e\n", u, sc.rows, sc.max_err);
        assert_true(sc.max_err < TOL_REL);
        assert_int_equal(bs.kv_bytes, bptl * 4 * 12 + bptl * 4 * (size_t)W * 3);
        beam_hyps_free(&h[0]);
    }
    bs.hook = NULL;

    // KV bytes: the kept entries (PyramidKV: per layer), prompts shorter than the budget whole.
    KVPolicy pp;
    kvpolicy_default(&pp, KVP_PYRAMIDKV);
    pp.tokens = 16; // window 8; n = 64: A = 8, lo 0.4, hi 15.6 <= 56: 8 + {16, 11, 5, 0} = 24, 19, 13, 8
                    // n = 40: pyramid too (15.6 <= 32); n = 17: hi > 9: uniform 16 per layer
    bs.kv_policy = &pp;
    run_beam(h, &bs, U, prompts, lens);
    size_t want = bptl * ((24 + 19 + 13 + 8) * 2 + 16 * 4) + bptl * 4 * gen;
    print_message("  pyramidkv tokens=16: kv_bytes %zu (full %zu)\n", bs.kv_bytes, full_bytes);
    assert_int_equal(bs.kv_bytes, want);
    for (int u = 0; u < U; u++) beam_hyps_free(&h[u]);
    for (int k = 1; k < KVP_COUNT; k++) { // every policy runs and keeps C per layer and head
        KVPolicy p;
        kvpolicy_default(&p, (KVPolicyKind)k);
        if (k == KVP_PYRAMIDKV) continue;
        p.tokens = 10;
        bs.kv_policy = &p;
        run_beam(h, &bs, U, prompts, lens);
        assert_int_equal(bs.kv_bytes, bptl * 4 * 10 * U + bptl * 4 * gen);
        for (int u = 0; u < U; u++) {
            assert_int_equal(h[u].n, W);
            beam_hyps_free(&h[u]);
        }
    }
    // An EARN model: refused.
    bs.kv_policy = &sp;
    Model me = m;
    me.config.method = METHOD_EARN;
    me.config.layer_split_k = 2;
    bs.model = &me;
    uint8_t *kinds[U];
    for (int u = 0; u < U; u++) kinds[u] = calloc((size_t)lens[u], 1);
    assert_int_equal(beam_search_run(h, &bs, U, (const int *const *)prompts, (const uint8_t *const *)kinds, lens, &e), -1);
    assert_non_null(strstr(e.msg, "full (finetune) model"));
    for (int u = 0; u < U; u++) {
        free(kinds[u]);
        free(prompts[u]);
        beam_hyps_free(&base[u]);
    }
    bs.model = &m;
    beam_search_free(&bs);
    trie_free(&t);
    model_free(&m);
}

// ---------------------------------------------------------------------------
// StreamingLLM re-rotation

#define TOL_ROT 2e-5 // |key entries| <= ~3, positions up to 5000: float rounding of the rotation only

// Keys rotated at their original positions, re-rotated to 0..C-1, equal the raw
// keys rotated at 0..C-1 (both the fast path and the undo/redo twin), values
// untouched, tok = 0..C-1 and n_seen = C.
static void test_rerotate_keys(void **st) {
    (void)st;
    enum { L = 2, G = 3, E = 16, C = 9 };
    const int orig[C] = {0, 1, 2, 3, 4991, 4992, 4995, 4998, 4999}; // 4 sinks + recent, a gap inside
    float inv_freq[E / 2];
    for (int i = 0; i < E / 2; i++) inv_freq[i] = (float)pow(10000.0, -2.0 * i / E);
    int cap[L] = {C, C};
    KVCache c, r;
    kvcache_init(&c, L, G, E, cap);
    kvcache_init(&r, L, G, E, cap);
    float *raw = malloc(sizeof(float) * L * G * C * E), *want = malloc(sizeof(float) * L * G * C * E);
    Rng rng;
    rng_seed(&rng, 3);
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++)
            for (int j = 0; j < C; j++) {
                float *x = raw + (((size_t)l * G + g) * C + j) * E, *w = want + (((size_t)l * G + g) * C + j) * E;
                for (int i = 0; i < E; i++) x[i] = 2.0f * rng_uniform(&rng) - 1.0f;
                float *k = kvcache_k(&c, l, g) + (size_t)j * E;
                memcpy(k, x, sizeof(float) * E);
                rope_forward(k, &orig[j], inv_freq, 1, 1, E, E); // as the prefill stored it
                memcpy(w, x, sizeof(float) * E);
                rope_forward(w, &j, inv_freq, 1, 1, E, E);       // the raw key at its new position
                for (int i = 0; i < E; i++) kvcache_v(&c, l, g)[(size_t)j * E + i] = x[i];
                kvcache_tok(&c, l, g)[j] = orig[j];
            }
    for (int i = 0; i < L * G; i++) c.len[i] = C;
    c.n_seen = 5000;
    kvcache_copy(&r, &c);
    kvpolicy_rerotate(&c, inv_freq);
    kvpolicy_rerotate_ref(&r, inv_freq);
    double err = 0, err_ref = 0, moved = 0;
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++)
            for (int j = 0; j < C; j++)
                for (int i = 0; i < E; i++) {
                    size_t at = (((size_t)l * G + g) * C + j) * E + i;
                    err = fmax(err, fabs(kvcache_k(&c, l, g)[(size_t)j * E + i] - want[at]));
                    err_ref = fmax(err_ref, fabs(kvcache_k(&r, l, g)[(size_t)j * E + i] - want[at]));
                    assert_true(kvcache_v(&c, l, g)[(size_t)j * E + i] == raw[at]);
                    if (j >= 4) moved = fmax(moved, fabs(want[at] - raw[at]));
                    if (i == 0) assert_int_equal(kvcache_tok(&c, l, g)[j], j);
                }
    print_message("  re-rotation: max abs err %.2e (fast), %.2e (undo/redo twin)\n", err, err_ref);
    assert_true(err < TOL_ROT && err_ref < TOL_ROT);
    assert_true(moved > 0.1); // the check is not vacuous: keys 4.. really moved
    assert_int_equal(c.n_seen, C);
    assert_int_equal(r.n_seen, C);
    kvcache_free(&c);
    kvcache_free(&r);
    free(raw);
    free(want);
}

// End to end: with no sinks the kept keys are the last C, and re-rotation
// shifts every position by the same n - C; RoPE is relative, so the search's
// logits equal the masked reference at the original positions (the same check
// as without re-rotation). With sinks the answer changes, the KV bytes do not.
static void test_beam_rerotate(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 48, 4, 4, 2, 60, 1);
    Model m;
    model_init_random(&m, &c, 9, 0.3f);
    Trie t;
    build_trie(&t);
    int n = 40, *prompt = malloc(sizeof(int) * 40);
    Rng r;
    rng_seed(&r, 4);
    for (int i = 0; i < n; i++) prompt[i] = (int)(rng_u64(&r) % 40);
    BeamSearch bs;
    Error e;
    assert_int_equal(beam_search_init(&bs, &m, &t, 5, &e), 0);
    KVPolicy p;
    kvpolicy_default(&p, KVP_STREAMING);
    p.tokens = 12;
    p.sink = 0;
    p.rerotate = 1;
    bs.kv_policy = &p;
    uint8_t kept[40];
    kvsel_streaming_ref(kept, n, 12, 0);
    StreamCheck sc = {&m, prompt, n, kept, 0, 0};
    bs.hook = stream_hook;
    bs.hook_ctx = &sc;
    BeamHyps h, h2;
    run_beam(&h, &bs, 1, &prompt, &n);
    print_message("  streaming sink=0 rerotate=1: %d logits rows, max rel err %.2e\n", sc.rows, sc.max_err);
    assert_true(sc.max_err < TOL_REL);
    beam_hyps_free(&h);
    bs.hook = NULL;
    p.sink = 4; // sinks: positions no longer shift uniformly
    run_beam(&h, &bs, 1, &prompt, &n);
    size_t bytes = bs.kv_bytes;
    p.rerotate = 0;
    run_beam(&h2, &bs, 1, &prompt, &n);
    assert_int_equal(bs.kv_bytes, bytes);
    int differ = 0;
    for (int j = 0; j < h.n; j++) differ |= h.scores[j] != h2.scores[j];
    assert_true(differ);
    beam_hyps_free(&h);
    beam_hyps_free(&h2);
    free(prompt);
    beam_search_free(&bs);
    trie_free(&t);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_budgets),
        cmocka_unit_test(test_streaming_hand),
        cmocka_unit_test(test_h2o_hand),
        cmocka_unit_test(test_snapkv_hand),
        cmocka_unit_test(test_tova_knorm_hand),
        cmocka_unit_test(test_pyramid_budgets),
        cmocka_unit_test(test_vs_ref_and_rule),
        cmocka_unit_test(test_checks_can_fail),
        cmocka_unit_test(test_observer_vs_reference),
        cmocka_unit_test(test_beam_with_policies),
        cmocka_unit_test(test_rerotate_keys),
        cmocka_unit_test(test_beam_rerotate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
