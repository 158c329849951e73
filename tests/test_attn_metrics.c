// test_attn_metrics.c: attention metrics on small hand-built rows and
// matrices, with every expected value worked out by hand in the comments,
// and a planted-sink dump read back through the HDF5 reader.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "analysis/attn_dump.h"
#include "analysis/attn_metrics.h"

#define TOL 1e-6

static void assert_near(double got, double want, double tol, const char *what) {
    if (!(fabs(got - want) <= tol)) {
        print_error("%s: got %.9g, want %.9g (tol %g)\n", what, got, want, tol);
        fail();
    }
}

static AttnMetricOpts opts(double eps, int head, int tail, int topk) {
    AttnMetricOpts o = {eps, head, tail, topk, ATTN_SUM_TOL_DEFAULT, 1.0};
    return o;
}

// Uniform row over 4 keys: every p = 0.25 > 0.05 -> density 1; first 3 keys
// 0.75, last 3 keys 0.75; entropy ln 4 = 1.3862944, normalised 1; top-5 of 4
// keys = all = 1; first key 0.25; kinds [1,3,3,4] -> prefix 0.25, history 0.5,
// suffix 0.25.
static void test_uniform_row(void **state) {
    (void)state;
    float p[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    uint8_t k[4] = {1, 3, 3, 4};
    double m[ATTN_METRIC_COUNT];
    AttnMetricOpts o = opts(0.05, 3, 3, 5);
    attn_row_metrics(m, p, k, 4, &o);
    assert_near(m[ATTN_METRIC_DENSITY], 1.0, TOL, "density");
    assert_near(m[ATTN_METRIC_SINK_HEAD], 0.75, TOL, "sink_head");
    assert_near(m[ATTN_METRIC_SINK_TAIL], 0.75, TOL, "sink_tail");
    assert_near(m[ATTN_METRIC_ENTROPY], 1.3862944, TOL, "entropy");
    assert_near(m[ATTN_METRIC_ENTROPY_NORM], 1.0, TOL, "entropy_norm");
    assert_near(m[ATTN_METRIC_TOPK_MASS], 1.0, TOL, "topk");
    assert_near(m[ATTN_METRIC_FIRST_MASS], 0.25, TOL, "first");
    assert_near(m[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_PREFIX_REG], 0.25, TOL, "mass prefix");
    assert_near(m[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_HISTORY], 0.5, TOL, "mass history");
    assert_near(m[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_SUFFIX_REG], 0.25, TOL, "mass suffix");
    assert_near(m[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_INSTRUCTION], 0.0, TOL, "mass instruction");
    assert_near(m[ATTN_METRIC_N_KEYS], 4, 0, "n_keys");
}

// One-hot row over 5 keys on key 2 (a history token): 1 of 5 keys above eps
// -> density 0.2; key 2 is among the first 3 and the last 3 -> both sinks 1;
// entropy 0; top-k 1; first key 0; all mass on history.
static void test_one_hot_row(void **state) {
    (void)state;
    float p[5] = {0, 0, 1, 0, 0};
    uint8_t k[5] = {1, 2, 3, 3, 4};
    double m[ATTN_METRIC_COUNT];
    AttnMetricOpts o = opts(0.05, 3, 3, 5);
    attn_row_metrics(m, p, k, 5, &o);
    assert_near(m[ATTN_METRIC_DENSITY], 0.2, TOL, "density");
    assert_near(m[ATTN_METRIC_SINK_HEAD], 1.0, TOL, "sink_head");
    assert_near(m[ATTN_METRIC_SINK_TAIL], 1.0, TOL, "sink_tail");
    assert_near(m[ATTN_METRIC_ENTROPY], 0.0, TOL, "entropy");
    assert_near(m[ATTN_METRIC_ENTROPY_NORM], 0.0, TOL, "entropy_norm");
    assert_near(m[ATTN_METRIC_TOPK_MASS], 1.0, TOL, "topk");
    assert_near(m[ATTN_METRIC_FIRST_MASS], 0.0, TOL, "first");
    assert_near(m[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_HISTORY], 1.0, TOL, "mass history");
    // with head = tail = 2, key 2 of 5 is in neither the first 2 nor the last 2
    o = opts(0.05, 2, 2, 5);
    attn_row_metrics(m, p, k, 5, &o);
    assert_near(m[ATTN_METRIC_SINK_HEAD], 0.0, TOL, "sink_head h=2");
    assert_near(m[ATTN_METRIC_SINK_TAIL], 0.0, TOL, "sink_tail t=2");
}

// Edge cases by hand:
//  - p = [0.05, 0.95]: 0.05 is not > 0.05 -> density 1/2;
//  - p = [0.1, 0.4, 0.2, 0.3], top-2 = 0.4 + 0.3 = 0.7, top-1 = 0.4, top-3 = 0.9;
//  - p = [0.5, 0.25, 0.25]: entropy = 0.5 ln 2 + 0.5 ln 4 = 1.0397208,
//    normalised by ln 3 = 1.0986123 -> 0.9463946;
//  - n = 2 < h = 3: both sinks take the whole row (1).
static void test_row_edges(void **state) {
    (void)state;
    double m[ATTN_METRIC_COUNT];
    uint8_t k[4] = {2, 2, 2, 2};
    AttnMetricOpts o = opts(0.05, 3, 3, 2);
    float a[2] = {0.05f, 0.95f};
    attn_row_metrics(m, a, k, 2, &o);
    assert_near(m[ATTN_METRIC_DENSITY], 0.5, TOL, "density at eps");
    assert_near(m[ATTN_METRIC_SINK_HEAD], 1.0, TOL, "sink_head n<h");
    assert_near(m[ATTN_METRIC_SINK_TAIL], 1.0, TOL, "sink_tail n<t");
    float b[4] = {0.1f, 0.4f, 0.2f, 0.3f};
    attn_row_metrics(m, b, k, 4, &o);
    assert_near(m[ATTN_METRIC_TOPK_MASS], 0.7, TOL, "top-2");
    o.topk = 1;
    attn_row_metrics(m, b, k, 4, &o);
    assert_near(m[ATTN_METRIC_TOPK_MASS], 0.4, TOL, "top-1");
    o.topk = 3;
    attn_row_metrics(m, b, k, 4, &o);
    assert_near(m[ATTN_METRIC_TOPK_MASS], 0.9, TOL, "top-3");
    float c[3] = {0.5f, 0.25f, 0.25f};
    attn_row_metrics(m, c, k, 3, &o);
    assert_near(m[ATTN_METRIC_ENTROPY], 1.0397208, TOL, "entropy");
    assert_near(m[ATTN_METRIC_ENTROPY_NORM], 0.9463946, TOL, "entropy_norm");
}

static void test_decision_row(void **state) {
    (void)state;
    uint8_t a[4] = {1, 3, 3, 4};
    uint8_t b[6] = {1, 3, 4, 4, 5, 5};
    uint8_t c[2] = {5, 5};
    assert_int_equal(attn_decision_row(a, 4), 3);
    assert_int_equal(attn_decision_row(b, 6), 3); // the last suffix register, before the targets
    assert_int_equal(attn_decision_row(c, 2), -1);
}

// Causal uniform attention, T = 4, kinds [1,3,3,4]: row q is 1/(q+1) on keys
// 0..q. Above the diagonal we plant 7.0, which a correct implementation never
// reads (queries cannot see the future).
//   decision row = 3: uniform over 4 -> density 1, sink_head 0.75, sink_tail 0.75,
//     entropy ln 4 = 1.3862944.
//   all rows (4 rows): density 1; sink_head (1 + 1 + 1 + 0.75)/4 = 0.9375;
//     entropy (0 + ln2 + ln3 + ln4)/4 = (0.6931472 + 1.0986123 + 1.3862944)/4 = 0.7945135;
//     entropy_norm (0 + 1 + 1 + 1)/4 = 0.75 (row 0 has one key: 0 by definition);
//     mass_prefix_reg (1 + 1/2 + 1/3 + 1/4)/4 = 0.5208333; n_keys (1+2+3+4)/4 = 2.5.
static void test_causal_uniform_matrix(void **state) {
    (void)state;
    enum { T = 4 };
    float A[T * T];
    for (int q = 0; q < T; q++)
        for (int k = 0; k < T; k++) A[q * T + k] = k <= q ? 1.0f / (q + 1) : 7.0f;
    uint8_t kinds[T] = {1, 3, 3, 4}, rows[T] = {1, 1, 1, 1}, keys[T] = {1, 1, 1, 1};
    double out[ATTN_ROWS_COUNT * ATTN_METRIC_COUNT];
    int valid[ATTN_ROWS_COUNT];
    AttnMetricOpts o = opts(0.05, 3, 3, 5);
    attn_head_metrics(out, valid, A, kinds, rows, keys, T, &o);
    const double *dec = out + ATTN_ROWS_DECISION * ATTN_METRIC_COUNT;
    const double *all = out + ATTN_ROWS_ALL * ATTN_METRIC_COUNT;
    assert_int_equal(valid[0], 1);
    assert_int_equal(valid[1], 1);
    assert_near(dec[ATTN_METRIC_DENSITY], 1.0, TOL, "dec density");
    assert_near(dec[ATTN_METRIC_SINK_HEAD], 0.75, TOL, "dec sink_head");
    assert_near(dec[ATTN_METRIC_SINK_TAIL], 0.75, TOL, "dec sink_tail");
    assert_near(dec[ATTN_METRIC_ENTROPY], 1.3862944, TOL, "dec entropy");
    assert_near(all[ATTN_METRIC_DENSITY], 1.0, TOL, "all density");
    assert_near(all[ATTN_METRIC_SINK_HEAD], 0.9375, TOL, "all sink_head");
    assert_near(all[ATTN_METRIC_ENTROPY], 0.7945135, TOL, "all entropy");
    assert_near(all[ATTN_METRIC_ENTROPY_NORM], 0.75, TOL, "all entropy_norm");
    assert_near(all[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_PREFIX_REG], 0.5208333, TOL, "all mass prefix");
    assert_near(all[ATTN_METRIC_N_KEYS], 2.5, TOL, "all n_keys");
}

// EARN-style late layer, T = 6, kinds [prefix, hist, hist, suffix, target, target]:
// the layer computes rows 0, 3, 4, 5 and keeps keys 0, 3, 4, 5. Rows 1, 2 and
// keys 1, 2 hold 0.9 (garbage that must be ignored). With h = t = 1:
//   row 0: keys {0}        p [1]
//   row 3: keys {0,3}      p [0.6, 0.4]   (the decision row)
//   row 4: keys {0,3,4}    p [0.2, 0.3, 0.5]
//   row 5: keys {0,3,4,5}  p [0.1, 0.2, 0.3, 0.4]
//   decision: n_keys 2, sink_head 0.6, sink_tail 0.4, mass_prefix_reg 0.6,
//     mass_suffix_reg 0.4, mass_history 0, entropy -(0.6 ln 0.6 + 0.4 ln 0.4) = 0.6730117.
//   all: n_keys (1+2+3+4)/4 = 2.5; first_mass (1+0.6+0.2+0.1)/4 = 0.475;
//     sink_tail (1+0.4+0.5+0.4)/4 = 0.575; mass_target (0+0+0.5+0.7)/4 = 0.3;
//     mass_history 0; density (eps 0.15): (1 + 1 + 1 + 3/4)/4 = 0.9375.
static void test_earn_masks(void **state) {
    (void)state;
    enum { T = 6 };
    float A[T * T];
    for (int i = 0; i < T * T; i++) A[i] = 0.9f;
    A[0 * T + 0] = 1.0f;
    A[3 * T + 0] = 0.6f, A[3 * T + 3] = 0.4f;
    A[4 * T + 0] = 0.2f, A[4 * T + 3] = 0.3f, A[4 * T + 4] = 0.5f;
    A[5 * T + 0] = 0.1f, A[5 * T + 3] = 0.2f, A[5 * T + 4] = 0.3f, A[5 * T + 5] = 0.4f;
    uint8_t kinds[T] = {1, 3, 3, 4, 5, 5};
    uint8_t rows[T] = {1, 0, 0, 1, 1, 1}, keys[T] = {1, 0, 0, 1, 1, 1};
    double out[ATTN_ROWS_COUNT * ATTN_METRIC_COUNT];
    int valid[ATTN_ROWS_COUNT];
    AttnMetricOpts o = opts(0.15, 1, 1, 5);
    attn_head_metrics(out, valid, A, kinds, rows, keys, T, &o);
    const double *dec = out + ATTN_ROWS_DECISION * ATTN_METRIC_COUNT;
    const double *all = out + ATTN_ROWS_ALL * ATTN_METRIC_COUNT;
    assert_int_equal(valid[0], 1);
    assert_int_equal(valid[1], 1);
    assert_near(dec[ATTN_METRIC_N_KEYS], 2, TOL, "dec n_keys");
    assert_near(dec[ATTN_METRIC_SINK_HEAD], 0.6, TOL, "dec sink_head");
    assert_near(dec[ATTN_METRIC_SINK_TAIL], 0.4, TOL, "dec sink_tail");
    assert_near(dec[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_PREFIX_REG], 0.6, TOL, "dec mass prefix");
    assert_near(dec[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_SUFFIX_REG], 0.4, TOL, "dec mass suffix");
    assert_near(dec[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_HISTORY], 0.0, TOL, "dec mass history");
    assert_near(dec[ATTN_METRIC_ENTROPY], 0.6730117, TOL, "dec entropy");
    assert_near(all[ATTN_METRIC_N_KEYS], 2.5, TOL, "all n_keys");
    assert_near(all[ATTN_METRIC_FIRST_MASS], 0.475, TOL, "all first_mass");
    assert_near(all[ATTN_METRIC_SINK_TAIL], 0.575, TOL, "all sink_tail");
    assert_near(all[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_TARGET], 0.3, TOL, "all mass target");
    assert_near(all[ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_HISTORY], 0.0, TOL, "all mass history");
    assert_near(all[ATTN_METRIC_DENSITY], 0.9375, TOL, "all density");

    // a layer that does not compute the decision row has no decision value
    rows[3] = 0;
    attn_head_metrics(out, valid, A, kinds, rows, keys, T, &o);
    assert_int_equal(valid[ATTN_ROWS_DECISION], 0);
    assert_int_equal(valid[ATTN_ROWS_ALL], 1);
    // and a layer that computes nothing has neither
    memset(rows, 0, sizeof rows);
    attn_head_metrics(out, valid, A, kinds, rows, keys, T, &o);
    assert_int_equal(valid[ATTN_ROWS_DECISION], 0);
    assert_int_equal(valid[ATTN_ROWS_ALL], 0);
}

// Accumulator: 2 layers x 2 heads, two "samples" given as values directly.
// sink_head decision: sample 1 = l*10 + h + 1, sample 2 = twice that.
// Per cell mean = 1.5 (l*10+h+1): (0,0) 1.5, (0,1) 3, (1,0) 16.5, (1,1) 18.
// head mean: layer 0: 2.25, layer 1: 17.25; early (layer 0 only, N = 2): 2.25,
// late: 17.25; early head 1: 3.
static void test_accumulator(void **state) {
    (void)state;
    AttnMetricsAcc acc;
    attn_acc_init(&acc, 2, 2);
    double vals[ATTN_ROWS_COUNT * ATTN_METRIC_COUNT];
    int valid[ATTN_ROWS_COUNT] = {1, 0};
    for (int s = 1; s <= 2; s++)
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 2; h++) {
                memset(vals, 0, sizeof vals);
                vals[ATTN_METRIC_SINK_HEAD] = s * (l * 10 + h + 1);
                attn_acc_add(&acc, l, h, vals, valid);
            }
    double v;
    assert_true(attn_acc_value(&acc, 1, 0, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 16.5, TOL, "cell");
    assert_true(attn_acc_value(&acc, 0, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 2.25, TOL, "head mean");
    assert_true(attn_acc_value(&acc, ATTN_LAYER_EARLY, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 2.25, TOL, "early");
    assert_true(attn_acc_value(&acc, ATTN_LAYER_LATE, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 17.25, TOL, "late");
    assert_true(attn_acc_value(&acc, ATTN_LAYER_EARLY, 1, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 3.0, TOL, "early head 1");
    assert_false(attn_acc_value(&acc, 0, 0, ATTN_ROWS_ALL, ATTN_METRIC_SINK_HEAD, &v)); // never valid

    // CSV: exact header, the all-rows lines absent, a known line present
    FILE *f = tmpfile();
    assert_non_null(f);
    attn_acc_write_csv(f, &acc);
    rewind(f);
    char line[256];
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "layer,head,rows,metric,value\n");
    int found = 0, n_all = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strcmp(line, "-2,-1,decision,sink_head,17.25\n")) found = 1;
        if (strstr(line, ",all,")) n_all++;
    }
    fclose(f);
    assert_int_equal(found, 1);
    assert_int_equal(n_all, 0);
    attn_acc_free(&acc);

    // N = 3: early is l < 3/2, i.e. layers 0 and 1; late is layer 2.
    // entropy per layer 1, 2, 4 (one head, one sample) -> early 1.5, late 4.
    attn_acc_init(&acc, 3, 1);
    for (int l = 0; l < 3; l++) {
        memset(vals, 0, sizeof vals);
        vals[ATTN_METRIC_ENTROPY] = 1 << l;
        attn_acc_add(&acc, l, 0, vals, valid);
    }
    assert_true(attn_acc_value(&acc, ATTN_LAYER_EARLY, 0, ATTN_ROWS_DECISION, ATTN_METRIC_ENTROPY, &v));
    assert_near(v, 1.5, TOL, "early N=3");
    assert_true(attn_acc_value(&acc, ATTN_LAYER_LATE, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ATTN_METRIC_ENTROPY, &v));
    assert_near(v, 4.0, TOL, "late N=3");
    attn_acc_free(&acc);
}

// Planted sink through the dump: 2 layers x 2 heads. In layer 1, head 0 puts
// 0.9 on token 0 and spreads 0.1 evenly over keys 1..q (row 0: 1 on token 0);
// every other (layer, head) is uniform causal. Two samples, T = 8 and T = 4,
// all kinds history except the last token (suffix register).
//   planted head, h = 1: decision row first_mass = sink_head = 0.9 in both samples;
//     all rows, T = 8: (1 + 7 * 0.9)/8 = 0.9125; T = 4: (1 + 3 * 0.9)/4 = 0.925;
//     mean 0.91875.
//   uniform head: decision first_mass 1/8 and 1/4 -> mean 0.1875.
//   layer 1 head mean (decision): (0.9 + 0.1875)/2 = 0.54375.
//   density (eps 0.05), planted decision row T = 8: 0.9 > eps and 0.1/7 = 0.0143 is
//     not -> 1/8; T = 4: 0.1/3 = 0.033 not -> 1/4; mean 0.1875. Uniform rows:
//     1/8 and 1/4 > 0.05 -> density 1.
static void plant(float *A, int T, int planted) {
    for (int q = 0; q < T; q++)
        for (int k = 0; k < T; k++) {
            float v = 0;
            if (k <= q) {
                if (!planted) v = 1.0f / (q + 1);
                else if (q == 0) v = 1.0f;
                else v = k == 0 ? 0.9f : 0.1f / q;
            }
            A[q * T + k] = v;
        }
}

static void test_planted_sink_dump(void **state) {
    (void)state;
    char dir[] = "/tmp/earnest_attn_metrics_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/planted.h5", dir);
    AttnDumpInfo info = {.n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .dim = 8, .vocab_size = 50,
                         .method = "finetune"};
    AttnDumpWriter w;
    Error e;
    assert_int_equal(attn_dump_create(&w, path, &info, &e), 0);
    int Ts[2] = {8, 4};
    for (int s = 0; s < 2; s++) {
        int T = Ts[s];
        int32_t tok[8], idx[8];
        uint8_t kinds[8];
        for (int t = 0; t < T; t++) tok[t] = t + 1, idx[t] = t, kinds[t] = t == T - 1 ? 4 : 3;
        assert_int_equal(attn_dump_sample_begin(&w, T, tok, NULL, kinds, &e), 0);
        float A[64];
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 2; h++) {
                plant(A, T, l == 1 && h == 0);
                attn_dump_hook(&w, l, 0, h, T, idx, T, idx, A);
            }
        assert_int_equal(attn_dump_sample_end(&w, &e), 0);
    }
    assert_int_equal(attn_dump_close(&w, &e), 0);

    AttnDumpReader r;
    if (attn_dump_open(&r, path, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.n_samples, 2);
    AttnMetricsAcc acc;
    attn_acc_init(&acc, 2, 2);
    AttnMetricOpts o = opts(0.05, 1, 3, 5);
    for (int i = 0; i < r.n_samples; i++) {
        AttnSample s;
        if (attn_dump_read_sample(&s, &r, i, &e)) fail_msg("%s", e.msg);
        if (attn_acc_add_sample(&acc, &r, &s, &o, &e)) fail_msg("%s", e.msg);
        attn_sample_free(&s);
    }
    double v;
    assert_true(attn_acc_value(&acc, 1, 0, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 0.9, 1e-6, "planted sink_head decision");
    assert_true(attn_acc_value(&acc, 1, 0, ATTN_ROWS_DECISION, ATTN_METRIC_FIRST_MASS, &v));
    assert_near(v, 0.9, 1e-6, "planted first_mass decision");
    assert_true(attn_acc_value(&acc, 1, 0, ATTN_ROWS_ALL, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 0.91875, 1e-6, "planted sink_head all");
    assert_true(attn_acc_value(&acc, 1, 1, ATTN_ROWS_DECISION, ATTN_METRIC_FIRST_MASS, &v));
    assert_near(v, 0.1875, 1e-6, "uniform first_mass");
    assert_true(attn_acc_value(&acc, 1, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &v));
    assert_near(v, 0.54375, 1e-6, "layer 1 head mean");
    assert_true(attn_acc_value(&acc, 1, 0, ATTN_ROWS_DECISION, ATTN_METRIC_DENSITY, &v));
    assert_near(v, 0.1875, 1e-6, "planted density");
    assert_true(attn_acc_value(&acc, 0, 0, ATTN_ROWS_DECISION, ATTN_METRIC_DENSITY, &v));
    assert_near(v, 1.0, 1e-6, "uniform density");
    attn_acc_free(&acc);
    attn_dump_reader_close(&r);
    remove(path);
    rmdir(dir);
}

// attn_head_check on the EARN-style matrix of test_earn_masks (rows 0, 3, 4, 5
// computed over keys 0, 3, 4, 5; 0.9 elsewhere, which must not be looked at):
// it passes; each defect of a computed row's visible entry is found, with the
// row; defects where the row cannot see (future keys, dropped keys, rows not
// computed) are not; the sum tolerance is absolute.
static void test_head_check(void **state) {
    (void)state;
    enum { T = 6 };
    float A[T * T], B[T * T];
    for (int i = 0; i < T * T; i++) A[i] = 0.9f;
    A[0 * T + 0] = 1.0f;
    A[3 * T + 0] = 0.6f, A[3 * T + 3] = 0.4f;
    A[4 * T + 0] = 0.2f, A[4 * T + 3] = 0.3f, A[4 * T + 4] = 0.5f;
    A[5 * T + 0] = 0.1f, A[5 * T + 3] = 0.2f, A[5 * T + 4] = 0.3f, A[5 * T + 5] = 0.4f;
    uint8_t rows[T] = {1, 0, 0, 1, 1, 1}, keys[T] = {1, 0, 0, 1, 1, 1};
    char why[160];
    assert_int_equal(attn_head_check(A, rows, keys, T, 1e-3, why, sizeof why), -1);
    struct { int at; float v; int row; const char *why; } cases[] = {
        {4 * T + 3, NAN, 4, "entry at key 3 is nan"},
        {5 * T + 0, -2.5f, 5, "entry at key 0 is -2.5, negative"},
        {3 * T + 3, INFINITY, 3, "entry at key 3 is inf"},
        {3 * T + 3, 0.3f, 3, "its 2 visible entries sum to 0.9"},
        {0 * T + 0, 1.0011f, 0, "sum to 1.00109"},
        {4 * T + 5, NAN, -1, NULL},   // key 5 is in row 4's future
        {4 * T + 1, -1.0f, -1, NULL}, // key 1 was dropped in this layer
        {2 * T + 0, NAN, -1, NULL},   // row 2 was not computed
        {0 * T + 0, 1.0009f, -1, NULL}, // within 1e-3
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        memcpy(B, A, sizeof B);
        B[cases[c].at] = cases[c].v;
        why[0] = 0;
        int q = attn_head_check(B, rows, keys, T, 1e-3, why, sizeof why);
        if (q != cases[c].row || (cases[c].why && !strstr(why, cases[c].why)))
            fail_msg("case %zu: row %d (want %d), why '%s' (want '%s')", c, q, cases[c].row, why,
                     cases[c].why ? cases[c].why : "");
    }
    // a looser tolerance accepts what the default refuses; rows that see no key pass
    B[0] = 1.0011f;
    assert_int_equal(attn_head_check(B, rows, keys, T, 1e-2, why, sizeof why), -1);
    memset(keys, 0, sizeof keys);
    assert_int_equal(attn_head_check(B, rows, keys, T, 1e-3, why, sizeof why), -1);
}

// Writes a dump through the writer: 2 layers x 2 heads, 2 samples of T = 5.
// Layer 0 computes every row over every earlier key; layer 1 is an EARN late
// layer that computes rows {0, 3, 4} over keys {0, 3, 4}. Every row is uniform
// over what it sees, except (sample 1, layer 1, head 0, row 3), which gets
// `bad`: 0 none, 1 NaN on key 0, 2 -2.5 on key 0 (a sink of -2.5), 3 the row halved.
static void write_rows_dump(const char *path, int bad) {
    AttnDumpInfo info = {.n_layers = 2, .n_heads = 2, .n_kv_heads = 2, .dim = 8, .vocab_size = 50,
                         .method = "earn", .layer_split_k = 1, .n_prefix_regs = 1, .n_suffix_regs = 1};
    AttnDumpWriter w;
    Error e;
    if (attn_dump_create(&w, path, &info, &e)) fail_msg("%s", e.msg);
    enum { T = 5 };
    int32_t tok[T] = {1, 2, 3, 4, 5}, all[T] = {0, 1, 2, 3, 4}, late[3] = {0, 3, 4};
    uint8_t kinds[T] = {1, 3, 3, 4, 5};
    for (int s = 0; s < 2; s++) {
        if (attn_dump_sample_begin(&w, T, tok, NULL, kinds, &e)) fail_msg("%s", e.msg);
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 2; h++) {
                const int32_t *idx = l == 0 ? all : late;
                int n = l == 0 ? T : 3;
                float p[T * T];
                for (int i = 0; i < n; i++) {
                    int seen = 0;
                    for (int j = 0; j < n; j++) seen += idx[j] <= idx[i];
                    for (int j = 0; j < n; j++) p[i * n + j] = idx[j] <= idx[i] ? 1.0f / seen : 0.0f;
                }
                if (s == 1 && l == 1 && h == 0 && bad) { // row 3 is the second row of the late layer
                    if (bad == 1) p[1 * n + 0] = NAN;
                    if (bad == 2) p[1 * n + 0] = -2.5f;
                    if (bad == 3) p[1 * n + 0] *= 0.5f, p[1 * n + 1] *= 0.5f;
                }
                attn_dump_sample_put(&w, l, h, n, idx, n, idx, p);
            }
        if (attn_dump_sample_end(&w, &e)) fail_msg("%s", e.msg);
    }
    if (attn_dump_close(&w, &e)) fail_msg("%s", e.msg);
}

// Analyses a dump the way `earnest analyze` does; 0 or -1 with e set.
static int analyse_dump(const char *path, Error *e) {
    AttnDumpReader r;
    if (attn_dump_open(&r, path, e)) fail_msg("%s", e->msg);
    AttnMetricsAcc acc;
    attn_acc_init(&acc, r.info.n_layers, r.info.n_heads);
    AttnMetricOpts o;
    attn_metric_opts_default(&o);
    int rc = 0;
    for (int i = 0; i < r.n_samples && rc == 0; i++) {
        AttnSample s;
        if (attn_dump_read_sample(&s, &r, i, e)) fail_msg("%s", e->msg);
        rc = attn_acc_add_sample(&acc, &r, &s, &o, e);
        attn_sample_free(&s);
    }
    attn_acc_free(&acc);
    attn_dump_reader_close(&r);
    return rc;
}

// The metrics refuse a dump whose attention is not post-softmax, naming the
// sample, layer, head and row; the same dump without the defect, whose EARN
// layer leaves rows and keys out (zeros there), passes.
static void test_dump_rows_refused(void **state) {
    (void)state;
    char dir[] = "/tmp/earnest_attn_rows_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/rows.h5", dir);
    const char *why[4] = {NULL, "entry at key 0 is nan", "entry at key 0 is -2.5, negative",
                          "its 2 visible entries sum to 0.5"};
    for (int bad = 0; bad < 4; bad++) {
        write_rows_dump(path, bad);
        Error e = {{0}};
        int rc = analyse_dump(path, &e);
        if (bad == 0) {
            if (rc != 0) fail_msg("a valid EARN dump was refused: %s", e.msg);
            continue;
        }
        if (rc == 0) fail_msg("bad = %d: a dump with a row that is not a distribution was analysed", bad);
        const char *needles[4] = {"/samples/000001/attn: sample 1, layer 1, head 0, row 3",
                                  "not a probability distribution", why[bad], path};
        for (int k = 0; k < 4; k++)
            if (!strstr(e.msg, needles[k])) fail_msg("bad = %d: message lacks '%s': %s", bad, needles[k], e.msg);
    }
    remove(path);
    rmdir(dir);
}

// density_rel (p > c/n) and keys_eps (p > eps, = density_eps * n), by hand:
//   row {0.5, 0.2, 0.1, 0.1, 0.05, 0.05}, n = 6, 1/n = 0.1667: keys above -> 0.5, 0.2 -> 2/6;
//     c = 0.5 (> 0.0833): 0.5, 0.2, 0.1, 0.1 -> 4/6; keys_eps (eps 0.05): 4 (0.05f is not above);
//   n = 600, 0.7 spread over 20 keys (0.035 each), 0.3 over the other 580: density_eps is 0
//     (no key above 0.05) but density_rel = 20/600 (the 20 keys are 21x the uniform share);
//   uniform row: 0 (no key is above its uniform share); n = 1: 0.
// Then the fused loop equals the plain twin attn_density_rel_ref on random softmax rows.
static void test_density_rel(void **state) {
    (void)state;
    double m[ATTN_METRIC_COUNT];
    uint8_t k[600] = {0};
    AttnMetricOpts o = opts(0.05, 3, 3, 5);
    float r6[6] = {0.5f, 0.2f, 0.1f, 0.1f, 0.05f, 0.05f};
    attn_row_metrics(m, r6, k, 6, &o);
    assert_near(m[ATTN_METRIC_DENSITY_REL], 2.0 / 6, TOL, "density_rel c=1");
    assert_near(m[ATTN_METRIC_KEYS_EPS], 4, 0, "keys_eps");
    assert_near(m[ATTN_METRIC_KEYS_EPS], m[ATTN_METRIC_DENSITY] * 6, TOL, "keys_eps = density_eps * n");
    o.eps_rel = 0.5;
    attn_row_metrics(m, r6, k, 6, &o);
    assert_near(m[ATTN_METRIC_DENSITY_REL], 4.0 / 6, TOL, "density_rel c=0.5");
    assert_near(attn_density_rel_ref(r6, 6, 0.5), 4.0 / 6, TOL, "twin c=0.5");
    o.eps_rel = 1.0;
    float *p = malloc(600 * sizeof(float));
    for (int i = 0; i < 600; i++) p[i] = i < 20 ? 0.035f : 0.3f / 580;
    attn_row_metrics(m, p, k, 600, &o);
    assert_near(m[ATTN_METRIC_DENSITY], 0.0, TOL, "density_eps misses a spread row at n = 600");
    assert_near(m[ATTN_METRIC_DENSITY_REL], 20.0 / 600, TOL, "density_rel n=600");
    for (int i = 0; i < 4; i++) p[i] = 0.25f;
    attn_row_metrics(m, p, k, 4, &o);
    assert_near(m[ATTN_METRIC_DENSITY_REL], 0.0, TOL, "uniform row");
    p[0] = 1.0f;
    attn_row_metrics(m, p, k, 1, &o);
    assert_near(m[ATTN_METRIC_DENSITY_REL], 0.0, TOL, "n = 1");
    // fused loop vs the twin on random rows, several c
    uint64_t x = 88172645463325252ull;
    const double cs[3] = {0.5, 1.0, 2.0};
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + trial * 3 % 599;
        double z = 0;
        for (int i = 0; i < n; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            double u = (double)(x >> 11) / 9007199254740992.0;
            p[i] = (float)exp(6.0 * u * u);
            z += p[i];
        }
        for (int i = 0; i < n; i++) p[i] = (float)(p[i] / z);
        for (int c = 0; c < 3; c++) {
            o.eps_rel = cs[c];
            attn_row_metrics(m, p, k, n, &o);
            assert_near(m[ATTN_METRIC_DENSITY_REL], attn_density_rel_ref(p, n, cs[c]), 0, "fused vs twin");
        }
    }
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform_row),
        cmocka_unit_test(test_one_hot_row),
        cmocka_unit_test(test_row_edges),
        cmocka_unit_test(test_decision_row),
        cmocka_unit_test(test_causal_uniform_matrix),
        cmocka_unit_test(test_earn_masks),
        cmocka_unit_test(test_accumulator),
        cmocka_unit_test(test_planted_sink_dump),
        cmocka_unit_test(test_head_check),
        cmocka_unit_test(test_dump_rows_refused),
        cmocka_unit_test(test_density_rel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
