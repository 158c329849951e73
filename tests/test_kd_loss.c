// test_kd_loss.c: the KD losses of runtime/kd_loss.h (WordKD, TVDKD,
// AtSpeed-S, AtSpeed-R; SeqKD and SFT are ops.h's cross-entropy, tested in
// test_backward.c).
//
// For every loss, on random rows (V = 48 tokens, |S| = 11 code tokens at
// scattered ids, teachers with and without mass outside S, temperatures 1 and
// 2, AtSpeed-S with K = 4, 11 and 20 > |S|):
//  1. forward: the fast loss against the *_ref twin: |a - b| <= 1e-9 (1 + |b|)
//     (both accumulate in double from the same float inputs);
//  2. backward: the fast gradient against the *_ref gradient: rel err
//     (max |a - b| / max |b|) <= 1e-5 (float stores of double values);
//  3. backward: the *_ref gradient against central finite differences of the
//     *_ref forward, step 1e-3 on the float logits (the actual float step is
//     used): rel err <= 1e-4 (truncation error O(h^2) on smooth pieces);
//     rows are drawn with logit gaps (no ties, no |p - q| near 0 for the TV
//     losses, no top-K boundary within a step), where the losses are smooth;
//  4. the backward ADDS into dz (a second call doubles it), and entries
//     outside S stay untouched for AtSpeed-S/R;
//  5. sanity: identical student and teacher distributions give loss 0 and a
//     zero gradient (WordKD, TVDKD, AtSpeed-R).
// The largest errors seen are printed.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/kd_loss.h"
#include "runtime/util.h"

#define V 48
#define N 11
#define FWD_TOL 1e-9
#define REF_TOL 1e-5
#define FD_TOL 1e-4

static const int S[N] = {3, 7, 8, 12, 19, 20, 26, 31, 33, 40, 47};

typedef struct {
    KDLoss kind;
    int topk;
    float T;
} Case;

static double fwd(const Case *c, int ref, const float *z, const float *tlp) {
    switch (c->kind) {
    case KD_WORDKD: return ref ? kd_wordkd_forward_ref(z, S, tlp, N, V) : kd_wordkd_forward(z, S, tlp, N, V);
    case KD_TVDKD: return ref ? kd_tvdkd_forward_ref(z, S, tlp, N, V) : kd_tvdkd_forward(z, S, tlp, N, V);
    case KD_ATSPEED_S:
        return ref ? kd_atspeed_s_forward_ref(z, S, tlp, N, c->topk, c->T)
                   : kd_atspeed_s_forward(z, S, tlp, N, c->topk, c->T);
    case KD_ATSPEED_R: return ref ? kd_atspeed_r_forward_ref(z, S, tlp, N, c->T) : kd_atspeed_r_forward(z, S, tlp, N, c->T);
    default: fail(); return 0;
    }
}

static void bwd(const Case *c, int ref, float *dz, const float *z, const float *tlp, float dloss) {
    switch (c->kind) {
    case KD_WORDKD:
        ref ? kd_wordkd_backward_ref(dz, z, S, tlp, N, V, dloss) : kd_wordkd_backward(dz, z, S, tlp, N, V, dloss);
        break;
    case KD_TVDKD:
        ref ? kd_tvdkd_backward_ref(dz, z, S, tlp, N, V, dloss) : kd_tvdkd_backward(dz, z, S, tlp, N, V, dloss);
        break;
    case KD_ATSPEED_S:
        ref ? kd_atspeed_s_backward_ref(dz, z, S, tlp, N, c->topk, c->T, dloss)
            : kd_atspeed_s_backward(dz, z, S, tlp, N, c->topk, c->T, dloss);
        break;
    case KD_ATSPEED_R:
        ref ? kd_atspeed_r_backward_ref(dz, z, S, tlp, N, c->T, dloss)
            : kd_atspeed_r_backward(dz, z, S, tlp, N, c->T, dloss);
        break;
    default: fail();
    }
}

// Teacher log-probs on S: a full-vocabulary log_softmax of random logits;
// outside = 0 puts all mass on S.
static void teacher(float *tlp, Rng *r, int outside) {
    double t[V], mx = -INFINITY, s = 0.0;
    for (int v = 0; v < V; v++) t[v] = 2.0 * rng_normal(r);
    if (!outside) {
        for (int v = 0; v < V; v++) t[v] = -INFINITY;
        for (int i = 0; i < N; i++) t[S[i]] = 2.0 * rng_normal(r);
    }
    for (int v = 0; v < V; v++) mx = fmax(mx, t[v]);
    for (int v = 0; v < V; v++) s += isfinite(t[v]) ? exp(t[v] - mx) : 0.0;
    for (int i = 0; i < N; i++) tlp[i] = (float)(t[S[i]] - mx - log(s));
}

// Student logits whose S entries are spaced at least 0.05 apart (no ties, no
// top-K boundary crossed by a 1e-3 step).
static void student(float *z, Rng *r) {
    for (int v = 0; v < V; v++) z[v] = 1.5f * rng_normal(r);
    int perm[N];
    for (int i = 0; i < N; i++) perm[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(rng_u64(r) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < N; i++) z[S[perm[i]]] = -1.5f + 0.3f * (float)i + 0.1f * rng_uniform(r);
}

static double max_abs(const float *a, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

// The TV losses have kinks where a bucket's p equals its q: such rows are redrawn.
static int near_kink(const Case *c, const float *z, const float *tlp) {
    if (c->kind != KD_TVDKD && c->kind != KD_ATSPEED_R) return 0;
    float dz[V] = {0};
    for (int i = 0; i < V; i++) {
        float zp[V];
        memcpy(zp, z, sizeof zp);
        zp[i] += 2e-3f;
        float zm[V];
        memcpy(zm, z, sizeof zm);
        zm[i] -= 2e-3f;
        double a = fwd(c, 1, zp, tlp), b = fwd(c, 1, z, tlp), d = fwd(c, 1, zm, tlp);
        if (fabs((a - b) - (b - d)) > 1e-7) return 1; // the slope changes within the step
        (void)dz;
    }
    return 0;
}

static double g_fd_worst, g_ref_worst, g_fwd_worst;

static void check_case(const Case *c, uint64_t seed, int outside) {
    Rng r;
    rng_seed(&r, seed);
    float z[V], tlp[N];
    int tries = 0;
    do {
        teacher(tlp, &r, outside);
        student(z, &r);
        assert_true(++tries < 200);
    } while (near_kink(c, z, tlp));
    // 1. forward vs ref
    double a = fwd(c, 0, z, tlp), b = fwd(c, 1, z, tlp);
    assert_true(isfinite(a) && a >= -1e-12);
    assert_true(fabs(a - b) <= FWD_TOL * (1.0 + fabs(b)));
    g_fwd_worst = fmax(g_fwd_worst, fabs(a - b));
    // 2. backward vs ref
    float g[V] = {0}, gr[V] = {0};
    bwd(c, 0, g, z, tlp, 0.7f);
    bwd(c, 1, gr, z, tlp, 0.7f);
    double m = max_abs(gr, V), d = 0.0;
    assert_true(m > 0);
    for (int v = 0; v < V; v++) d = fmax(d, fabs((double)g[v] - gr[v]));
    assert_true(d / m <= REF_TOL);
    g_ref_worst = fmax(g_ref_worst, d / m);
    // 3. ref backward vs finite differences of the ref forward (dloss 0.7)
    double dfd = 0.0;
    for (int v = 0; v < V; v++) {
        float zp[V], zm[V];
        memcpy(zp, z, sizeof zp);
        memcpy(zm, z, sizeof zm);
        zp[v] = z[v] + 1e-3f;
        zm[v] = z[v] - 1e-3f;
        double fd = 0.7 * (fwd(c, 1, zp, tlp) - fwd(c, 1, zm, tlp)) / ((double)zp[v] - (double)zm[v]);
        dfd = fmax(dfd, fabs(fd - gr[v]));
    }
    assert_true(dfd / m <= FD_TOL);
    g_fd_worst = fmax(g_fd_worst, dfd / m);
    // 4. accumulation; AtSpeed-S/R leave the tokens outside S alone
    float g2[V];
    memcpy(g2, g, sizeof g2);
    bwd(c, 0, g2, z, tlp, 0.7f);
    for (int v = 0; v < V; v++) assert_true(fabs(g2[v] - 2.0f * g[v]) <= 1e-6f * (1.0f + fabsf(g[v])));
    if (c->kind == KD_ATSPEED_S || c->kind == KD_ATSPEED_R) {
        int in_s[V] = {0};
        for (int i = 0; i < N; i++) in_s[S[i]] = 1;
        for (int v = 0; v < V; v++)
            if (!in_s[v]) assert_true(g[v] == 0.0f);
    }
}

static void run_cases(const Case *c) {
    for (uint64_t seed = 1; seed <= 12; seed++) check_case(c, 1000 * (uint64_t)c->kind + seed, (int)(seed % 2));
}

static void test_wordkd(void **st) {
    (void)st;
    Case c = {KD_WORDKD, 0, 1.0f};
    run_cases(&c);
}
static void test_tvdkd(void **st) {
    (void)st;
    Case c = {KD_TVDKD, 0, 1.0f};
    run_cases(&c);
}
static void test_atspeed_s(void **st) {
    (void)st;
    const int ks[3] = {4, N, 20};
    const float ts[2] = {1.0f, 2.0f};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            Case c = {KD_ATSPEED_S, ks[i], ts[j]};
            run_cases(&c);
        }
}
static void test_atspeed_r(void **st) {
    (void)st;
    const float ts[2] = {1.0f, 2.0f};
    for (int j = 0; j < 2; j++) {
        Case c = {KD_ATSPEED_R, 0, ts[j]};
        run_cases(&c);
    }
}

// A student equal to the teacher: zero loss and gradient.
static void test_equal_is_zero(void **st) {
    (void)st;
    Rng r;
    rng_seed(&r, 77);
    float z[V], tlp[N];
    for (int v = 0; v < V; v++) z[v] = rng_normal(&r);
    double mx = -INFINITY, s = 0.0;
    for (int v = 0; v < V; v++) mx = fmax(mx, z[v]);
    for (int v = 0; v < V; v++) s += exp(z[v] - mx);
    for (int i = 0; i < N; i++) tlp[i] = (float)(z[S[i]] - mx - log(s));
    assert_true(fabs(kd_wordkd_forward(z, S, tlp, N, V)) < 1e-6);
    assert_true(fabs(kd_tvdkd_forward(z, S, tlp, N, V)) < 1e-6);
    assert_true(fabs(kd_atspeed_r_forward(z, S, tlp, N, 1.5f)) < 1e-6);
    float g[V] = {0};
    kd_wordkd_backward(g, z, S, tlp, N, V, 1.0f);
    assert_true(max_abs(g, V) < 1e-6);
}

static void test_names(void **st) {
    (void)st;
    const char *names[] = {"sft", "wordkd", "tvdkd", "seqkd", "atspeed-s", "atspeed-r"};
    for (int i = 0; i < 6; i++) {
        KDLoss k;
        assert_int_equal(kd_loss_parse(names[i], &k), 0);
        assert_string_equal(kd_loss_name(k), names[i]);
    }
    KDLoss k;
    assert_int_equal(kd_loss_parse("kl", &k), -1);
    assert_int_equal(kd_loss_on_beams(KD_SFT), -1);
    assert_int_equal(kd_loss_on_beams(KD_WORDKD), 0);
    assert_int_equal(kd_loss_on_beams(KD_ATSPEED_R), 1);
}

static void test_report(void **st) {
    (void)st;
    printf("kd losses, worst over all cases: |fast - ref| loss %.2e, grad rel %.2e (tol %.0e), "
           "ref grad vs finite differences rel %.2e (tol %.0e)\n", g_fwd_worst, g_ref_worst, REF_TOL, g_fd_worst,
           FD_TOL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wordkd),    cmocka_unit_test(test_tvdkd),         cmocka_unit_test(test_atspeed_s),
        cmocka_unit_test(test_atspeed_r), cmocka_unit_test(test_equal_is_zero), cmocka_unit_test(test_names),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
