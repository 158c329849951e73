// test_adamw.c: the optimizer, the schedule, clipping, the state file, and
// determinism of whole training steps.
//  - one and two steps against updates computed by hand (literal numbers for
//    one parameter; the formula in double for every parameter of a model,
//    checking which tensors decay): rel err < 1e-6;
//  - schedule values at warmup start/end, cosine middle and end (exact to 1e-7);
//  - clipping: the norm returned equals a naive double norm, and a clipped
//    step equals an unclipped step on pre-scaled gradients (bitwise);
//  - save/load round trip (bitwise), continuing from a loaded state equals
//    continuing in memory, and broken files are refused with a clear message;
//  - determinism: two runs of training steps from one seed give bitwise the
//    same losses and weights; and the loss of an overfitted batch falls.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "helpers/ref_model.h"
#include "helpers/st_fixture.h"
#include "runtime/adamw.h"
#include "runtime/model.h"
#include "runtime/train.h"

// One parameter by hand: p = 1, g = 0.5, lr = 0.1, wd = 0.01, betas 0.9/0.999, eps 1e-8.
// step 1: m = 0.05, v = 0.00025, mhat = 0.5, vhat = 0.25, adam = 0.5/(0.5+1e-8)
//         p = 1 - 0.1 * (0.01 * 1 + 0.99999998) = 0.899000002
// step 2 (g = -1): m = 0.045 - 0.1 = -0.055, v = 0.00024975 + 0.001 = 0.00124975,
//         mhat = -0.055/0.19 = -0.289473684, vhat = 0.00124975/0.001999 = 0.625187594,
//         adam = -0.289473684 / (0.790688051 + 1e-8) = -0.366103522,
//         p = 0.899000002 - 0.1 * (0.00899000002 - 0.366103522) = 0.934711354
static void test_step_by_hand(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 4, 4, 1, 2, 1, 3, 1);
    AdamWState s;
    adamw_init(&s, &c);
    // The scalar lives in embed (2-D, so it decays).
    assert_true(s.seg[0].decay);
    float *p = calloc(s.n, sizeof(float)), *g = calloc(s.n, sizeof(float));
    p[0] = 1.0f;
    g[0] = 0.5f;
    AdamWConfig oc;
    adamw_config_default(&oc);
    oc.grad_clip = 0.0f; // no clipping
    oc.weight_decay = 0.01f;
    adamw_step(&s, p, g, 0.1f, &oc);
    print_message("  step 1: %.9f (hand 0.899000002)\n", p[0]);
    assert_true(fabs(p[0] - 0.899000002) < 1e-6);
    // float betas: 1 - 0.9f and 1 - 0.999f are off by ~1e-7 and 1e-5 relative
    assert_true(fabs(s.m[0] - 0.05) < 1e-6 * 0.05 && fabs(s.v[0] - 0.00025) < 1e-4 * 0.00025);
    g[0] = -1.0f;
    adamw_step(&s, p, g, 0.1f, &oc);
    print_message("  step 2: %.9f (hand 0.934711354)\n", p[0]);
    assert_true(fabs(p[0] - 0.934711354) < 1e-6);
    assert_int_equal(s.step, 2);
    free(p); free(g);
    adamw_free(&s);
}

// Every parameter of a Qwen2 model against the formula in double; norms and
// biases must not decay, 2-D weights must.
static void test_step_formula_and_decay_mask(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 16, 24, 2, 4, 2, 11, 0);
    Model m;
    model_init_random(&m, &c, 5, 0.5f);
    AdamWState s;
    adamw_init(&s, &c);
    assert_int_equal(s.n, m.n_params);
    Rng r;
    rng_seed(&r, 6);
    float *g = malloc(s.n * sizeof(float));
    AdamWConfig oc;
    adamw_config_default(&oc);
    oc.grad_clip = 0.0f;
    oc.weight_decay = 0.1f;
    double *pd = malloc(s.n * sizeof(double)), *md = calloc(s.n, sizeof(double)), *vd = calloc(s.n, sizeof(double));
    for (size_t i = 0; i < s.n; i++) pd[i] = m.params_memory[i];
    const float lr = 3e-3f;
    for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < s.n; i++) g[i] = rng_normal(&r);
        adamw_step(&s, m.params_memory, g, lr, &oc);
        size_t off = 0;
        for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
            ParamTensorInfo info;
            model_param_info(&c, t, &info);
            int decays = t == 0 || (t >= 2 && t <= 4) || t == 8 || (t >= 10 && t <= 12) || t == 14; // weights
            for (size_t i = off; i < off + info.numel; i++) {
                md[i] = 0.9 * md[i] + 0.1 * g[i];
                vd[i] = 0.999 * vd[i] + 0.001 * (double)g[i] * g[i];
                double mh = md[i] / (1 - pow(0.9, step)), vh = vd[i] / (1 - pow(0.999, step));
                pd[i] -= lr * ((decays ? 0.1 * pd[i] : 0.0) + mh / (sqrt(vh) + 1e-8));
            }
            off += info.numel;
        }
    }
    double *mine = malloc(s.n * sizeof(double));
    for (size_t i = 0; i < s.n; i++) mine[i] = m.params_memory[i];
    double num = 0, den = 0;
    for (size_t i = 0; i < s.n; i++) {
        num = fmax(num, fabs(mine[i] - pd[i]));
        den = fmax(den, fabs(pd[i]));
    }
    print_message("  3 steps, %zu params vs double formula: rel err %.2e\n", s.n, num / den);
    assert_true(num / den < 1e-6);
    // Which segments decay: the 2-D ones.
    for (int k = 0; k < s.n_segs; k++) print_message("  segment %d: %zu floats, decay %d\n", k, s.seg[k].n, s.seg[k].decay);
    assert_int_equal(s.n_segs, 15); // untied Qwen2: every tensor present
    int want[15] = {1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1};
    for (int k = 0; k < 15; k++) assert_int_equal(s.seg[k].decay, want[k]);
    free(g); free(pd); free(md); free(vd); free(mine);
    adamw_free(&s);
    model_free(&m);
}

static void test_schedule(void **st) {
    (void)st;
    AdamWConfig c;
    adamw_config_default(&c);
    assert_true(c.lr == 1e-3f && c.warmup_ratio == 0.02f);
    const int64_t total = 1000; // warmup = ceil(0.02 * 1000) = 20 steps
    assert_true(fabs(adamw_lr(&c, 0, total) - 1e-3 / 20) < 1e-10);
    assert_true(fabs(adamw_lr(&c, 9, total) - 1e-3 * 10 / 20) < 1e-10);
    assert_true(fabs(adamw_lr(&c, 19, total) - 1e-3) < 1e-10); // warmup end
    assert_true(fabs(adamw_lr(&c, 20, total) - 1e-3) < 1e-10); // cosine start
    assert_true(fabs(adamw_lr(&c, 510, total) - 0.5e-3) < 1e-10); // middle: (510-20)/980 = 1/2
    double last = 1e-3 * 0.5 * (1 + cos(M_PI * 979.0 / 980.0));
    assert_true(fabs(adamw_lr(&c, 999, total) - last) < 1e-12); // last step: tiny, not 0
    assert_true(adamw_lr(&c, 1000, total) == 0.0f);              // past the end: the floor
    assert_true(adamw_lr(&c, 5000, total) == 0.0f);
    c.min_lr_ratio = 0.1f;
    assert_true(fabs(adamw_lr(&c, 510, total) - (1e-4 + 0.9e-3 * 0.5)) < 1e-10);
    assert_true(fabs(adamw_lr(&c, 1000, total) - 1e-4) < 1e-10);
    // Tiny runs: ceil keeps at least one warmup step; no warmup at ratio 0.
    assert_true(fabs(adamw_lr(&c, 0, 10) - 1e-3) < 1e-10);
    c.warmup_ratio = 0.0f;
    assert_true(fabs(adamw_lr(&c, 0, 10) - 1e-3) < 1e-10);
    // Monotone: up during warmup, down after.
    adamw_config_default(&c);
    for (int64_t s = 1; s < total; s++) {
        if (s < 20) assert_true(adamw_lr(&c, s, total) > adamw_lr(&c, s - 1, total));
        else if (s > 20) assert_true(adamw_lr(&c, s, total) <= adamw_lr(&c, s - 1, total));
    }
}

static void test_clipping(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 16, 24, 2, 4, 2, 11, 1);
    AdamWState s1, s2;
    adamw_init(&s1, &c);
    adamw_init(&s2, &c);
    Rng r;
    rng_seed(&r, 8);
    float *p1 = malloc(s1.n * 4), *p2 = malloc(s1.n * 4), *g = malloc(s1.n * 4), *gs = malloc(s1.n * 4);
    for (size_t i = 0; i < s1.n; i++) p1[i] = p2[i] = rng_normal(&r), g[i] = 3.0f * rng_normal(&r);
    double naive = 0;
    for (size_t i = 0; i < s1.n; i++) naive += (double)g[i] * g[i];
    naive = sqrt(naive);
    assert_true(fabs(grad_global_norm(g, s1.n) - naive) < 1e-12 * naive);
    AdamWConfig oc;
    adamw_config_default(&oc);
    oc.grad_clip = 1.0f;
    double norm = adamw_step(&s1, p1, g, 1e-3f, &oc);
    print_message("  norm %.6f (naive %.6f), clipped to 1\n", norm, naive);
    assert_true(fabs(norm - naive) < 1e-12 * naive);
    float scale = (float)(1.0 / naive);
    for (size_t i = 0; i < s1.n; i++) gs[i] = g[i] * scale;
    oc.grad_clip = 0.0f;
    adamw_step(&s2, p2, gs, 1e-3f, &oc);
    assert_memory_equal(p1, p2, s1.n * 4);
    assert_memory_equal(s1.memory, s2.memory, 2 * s1.n * 4);
    // Below the threshold nothing changes.
    oc.grad_clip = 1e6f;
    AdamWState s3;
    adamw_init(&s3, &c);
    float *p3 = malloc(s1.n * 4), *p4 = malloc(s1.n * 4);
    for (size_t i = 0; i < s1.n; i++) p3[i] = p4[i] = 0.5f;
    adamw_step(&s3, p3, g, 1e-3f, &oc);
    oc.grad_clip = 0.0f;
    adamw_free(&s3);
    adamw_init(&s3, &c);
    adamw_step(&s3, p4, g, 1e-3f, &oc);
    assert_memory_equal(p3, p4, s1.n * 4);
    free(p1); free(p2); free(p3); free(p4); free(g); free(gs);
    adamw_free(&s1); adamw_free(&s2); adamw_free(&s3);
}

static int file_exists(const char *p) { return access(p, F_OK) == 0; }
static const char *bad_missing(const char *dir) {
    static char p[600];
    snprintf(p, sizeof p, "%s/missing.bin", dir);
    return p;
}

static void test_save_load(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_QWEN2, 16, 24, 2, 4, 2, 11, 0);
    char *dir = st_fixture_tmpdir();
    char path[512], bad[512];
    snprintf(path, sizeof path, "%s/opt.bin", dir);
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    AdamWState s, t;
    adamw_init(&s, &c);
    adamw_init(&t, &c);
    Rng r;
    rng_seed(&r, 9);
    float *p = malloc(s.n * 4), *q = malloc(s.n * 4), *g = malloc(s.n * 4);
    for (size_t i = 0; i < s.n; i++) p[i] = rng_normal(&r);
    AdamWConfig oc;
    adamw_config_default(&oc);
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < s.n; i++) g[i] = rng_normal(&r);
        adamw_step(&s, p, g, 1e-3f, &oc);
    }
    Error e;
    assert_int_equal(adamw_save(&s, path, &e), 0);
    assert_int_equal(adamw_save(&s, path, &e), 0); // over an existing file
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_false(file_exists(tmp));
    assert_int_equal(adamw_load(&t, path, &e), 0);
    assert_int_equal(t.step, 2);
    assert_memory_equal(s.memory, t.memory, 2 * s.n * 4);
    // Resuming from the file continues exactly as in memory.
    memcpy(q, p, s.n * 4);
    for (size_t i = 0; i < s.n; i++) g[i] = rng_normal(&r);
    adamw_step(&s, p, g, 1e-3f, &oc);
    adamw_step(&t, q, g, 1e-3f, &oc);
    assert_memory_equal(p, q, s.n * 4);

    // Broken files: clear errors, state untouched.
    AdamWState u;
    adamw_init(&u, &c);
    char *data;
    size_t len;
    assert_int_equal(file_read_all(path, &data, &len, &e), 0);
    FILE *f = fopen(bad, "wb");
    fwrite(data, 1, len - 5, f); // truncated
    fclose(f);
    assert_int_equal(adamw_load(&u, bad, &e), -1);
    assert_true(st_fixture_contains(e.msg, "truncated"));
    data[40] ^= 1; // flipped bit in m
    f = fopen(bad, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    assert_int_equal(adamw_load(&u, bad, &e), -1);
    assert_true(st_fixture_contains(e.msg, "checksum"));
    data[40] ^= 1;
    data[0] = 'X';
    f = fopen(bad, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    assert_int_equal(adamw_load(&u, bad, &e), -1);
    assert_true(st_fixture_contains(e.msg, "not an earnest optimizer state"));
    assert_true(st_fixture_contains(e.msg, bad));
    assert_int_equal(u.step, 0);
    for (size_t i = 0; i < 2 * u.n; i++) assert_true(u.memory[i] == 0.0f);
    free(data);
    // A state of another model shape.
    ModelConfig c2 = ref_config(MODEL_ARCH_QWEN2, 16, 24, 3, 4, 2, 11, 0);
    AdamWState w;
    adamw_init(&w, &c2);
    assert_int_equal(adamw_load(&w, path, &e), -1);
    assert_true(st_fixture_contains(e.msg, "parameters, the model has"));
    assert_int_equal(adamw_load(&w, bad_missing(dir), &e), -1);
    assert_true(st_fixture_contains(e.msg, "missing.bin"));
    char under_file[600]; // a path whose parent is a regular file cannot be created
    snprintf(under_file, sizeof under_file, "%s/sub/opt.bin", path);
    assert_int_equal(adamw_save(&s, under_file, &e), -1);
    adamw_free(&w);
    adamw_free(&u);
    free(p); free(q); free(g);
    adamw_free(&s); adamw_free(&t);
    remove_tree(dir);
    free(dir);
}

// A few full training steps on a fixed batch; returns the losses.
static void train_run(float *losses, float *weights_out, int steps, uint64_t seed) {
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 2, 4, 2, 23, 1);
    Model m;
    model_init_random(&m, &c, seed, 0.1f);
    enum { S = 2, N = 24 };
    int n_tok[S] = {N, N}, tokens[S * N], labels[S * N], depth[S * N];
    Rng r;
    rng_seed(&r, seed + 1);
    for (int t = 0; t < S * N; t++) tokens[t] = (int)(rng_u64(&r) % 23);
    for (int t = 0; t < S * N; t++) {
        int i = t % N;
        depth[t] = (i >= 1 && i < N - 6) ? 1 : 2; // EARN k = 1: prompt stops after layer 0
        labels[t] = (i >= N - 6 && i + 1 < N) ? tokens[t + 1] : -1;
    }
    TrainBatch b = {.n_seqs = S, .n_tok = n_tok, .tokens = tokens, .depth = depth, .labels = labels};
    TrainActs acts = {0};
    ModelGrads g;
    grads_alloc(&g, &c);
    AdamWState s;
    adamw_init(&s, &c);
    AdamWConfig oc;
    adamw_config_default(&oc);
    oc.lr = 1e-2f;
    Error e;
    for (int step = 0; step < steps; step++) {
        assert_int_equal(train_forward(&acts, &m, &b, &e), 0);
        losses[step] = (float)acts.loss_mean;
        grads_zero(&g);
        train_backward(&g, &acts, &m, 1.0f / (float)acts.n_labels);
        adamw_step(&s, m.params_memory, g.memory, adamw_lr(&oc, step, steps), &oc);
    }
    if (weights_out) memcpy(weights_out, m.params_memory, m.n_params * sizeof(float));
    adamw_free(&s);
    grads_free(&g);
    train_acts_free(&acts);
    model_free(&m);
}

static void test_determinism_and_learning(void **st) {
    (void)st;
    ModelConfig c = ref_config(MODEL_ARCH_LLAMA, 32, 64, 2, 4, 2, 23, 1);
    size_t n = model_param_count(&c);
    enum { STEPS = 40 };
    float l1[STEPS], l2[STEPS];
    float *w1 = malloc(n * 4), *w2 = malloc(n * 4);
    train_run(l1, w1, STEPS, 42);
    train_run(l2, w2, STEPS, 42);
    assert_memory_equal(l1, l2, sizeof l1);
    assert_memory_equal(w1, w2, n * 4);
    print_message("  loss: step 0 %.4f, step %d %.4f\n", l1[0], STEPS - 1, l1[STEPS - 1]);
    assert_true(l1[STEPS - 1] < 0.5f * l1[0]); // it learns the fixed batch
    train_run(l2, NULL, 2, 43);                 // another seed, other numbers
    assert_true(l2[0] != l1[0]);
    free(w1); free(w2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_by_hand),
        cmocka_unit_test(test_step_formula_and_decay_mask),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_clipping),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_determinism_and_learning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
