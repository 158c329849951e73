// test_recmetrics.c: Recall@K / NDCG@K (analysis/recmetrics.c) on cases worked
// out by hand (values written as the sums they come from). Tolerance 1e-12.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <cmocka.h>

#include "analysis/recmetrics.h"

#define EPS 1e-12
static const int KS[4] = {1, 5, 10, 20};

// Ranked list r0..r24 of distinct codes "<a_i>".
static const char *RANKED[25] = {"<a_0>", "<a_1>", "<a_2>", "<a_3>", "<a_4>", "<a_5>", "<a_6>", "<a_7>", "<a_8>",
                                 "<a_9>", "<a_10>", "<a_11>", "<a_12>", "<a_13>", "<a_14>", "<a_15>", "<a_16>",
                                 "<a_17>", "<a_18>", "<a_19>", "<a_20>", "<a_21>", "<a_22>", "<a_23>", "<a_24>"};

static double d(int j) { return 1.0 / log2(j + 2.0); } // discount of rank j (0-based)

static void test_single_target(void **st) {
    (void)st;
    RecMetrics m;
    recmetrics_init(&m, KS, 4);
    double r[4], n[4];
    // Target at rank 3 (0-based): missed at K=1, hit from K=5.
    const char *t[1] = {"<a_3>"};
    assert_int_equal(recmetrics_user(r, n, &m, RANKED, 20, t, 1), 1);
    assert_true(fabs(r[0] - 0.0) < EPS && fabs(n[0] - 0.0) < EPS);
    assert_true(fabs(r[1] - 1.0) < EPS && fabs(n[1] - 1.0 / log2(5.0)) < EPS);
    assert_true(fabs(r[3] - 1.0) < EPS && fabs(n[3] - 1.0 / log2(5.0)) < EPS);
    // Target at rank 0: all ones. Target not ranked: all zeros.
    const char *t0[1] = {"<a_0>"}, *tx[1] = {"<b_0>"};
    recmetrics_user(r, n, &m, RANKED, 20, t0, 1);
    for (int i = 0; i < 4; i++) assert_true(fabs(r[i] - 1.0) < EPS && fabs(n[i] - 1.0) < EPS);
    recmetrics_user(r, n, &m, RANKED, 20, tx, 1);
    for (int i = 0; i < 4; i++) assert_true(fabs(r[i]) < EPS && fabs(n[i]) < EPS);
    // Rank 12: hit only at K=20; a list of 12 codes never hits it.
    const char *t12[1] = {"<a_12>"};
    recmetrics_user(r, n, &m, RANKED, 20, t12, 1);
    assert_true(fabs(r[2]) < EPS && fabs(r[3] - 1.0) < EPS && fabs(n[3] - d(12)) < EPS);
    recmetrics_user(r, n, &m, RANKED, 12, t12, 1);
    assert_true(fabs(r[3]) < EPS);
}

static void test_multi_target(void **st) {
    (void)st;
    RecMetrics m;
    recmetrics_init(&m, KS, 4);
    double r[4], n[4];
    // Targets at ranks 0, 6 and not ranked at all: |G| = 3.
    const char *t[3] = {"<a_6>", "<z_1>", "<a_0>"};
    recmetrics_user(r, n, &m, RANKED, 20, t, 3);
    assert_true(fabs(r[0] - 1.0 / 3) < EPS);
    assert_true(fabs(n[0] - 1.0) < EPS);                                  // ideal@1 = d(0)
    assert_true(fabs(r[1] - 1.0 / 3) < EPS);
    assert_true(fabs(n[1] - d(0) / (d(0) + d(1) + d(2))) < EPS);          // ideal: 3 hits
    assert_true(fabs(r[2] - 2.0 / 3) < EPS);
    assert_true(fabs(n[2] - (d(0) + d(6)) / (d(0) + d(1) + d(2))) < EPS);
    // K larger than |G|: the ideal stops at |G| hits; all of G at the top = 1.
    const char *t2[2] = {"<a_1>", "<a_0>"};
    recmetrics_user(r, n, &m, RANKED, 20, t2, 2);
    assert_true(fabs(r[0] - 0.5) < EPS && fabs(n[0] - 1.0) < EPS);
    for (int i = 1; i < 4; i++) assert_true(fabs(r[i] - 1.0) < EPS && fabs(n[i] - 1.0) < EPS);
    // |G| = 25 > K = 20, with 20 of them ranked: recall 20/25, NDCG 1 at K=20.
    const char *t25[25];
    for (int i = 0; i < 25; i++) t25[i] = RANKED[24 - i];
    recmetrics_user(r, n, &m, RANKED, 20, t25, 25);
    assert_true(fabs(r[3] - 20.0 / 25) < EPS && fabs(n[3] - 1.0) < EPS);
    assert_true(fabs(r[1] - 5.0 / 25) < EPS && fabs(n[1] - 1.0) < EPS);
}

static void test_colliding_codes(void **st) {
    (void)st;
    RecMetrics m;
    recmetrics_init(&m, KS, 4);
    double r[4], n[4];
    // Two target items share code <a_2> (ranked 2): both are hits for recall;
    // NDCG counts the position once against an ideal of two hits.
    const char *t[2] = {"<a_2>", "<a_2>"};
    recmetrics_user(r, n, &m, RANKED, 20, t, 2);
    assert_true(fabs(r[0]) < EPS && fabs(n[0]) < EPS);
    assert_true(fabs(r[1] - 1.0) < EPS);
    assert_true(fabs(n[1] - d(2) / (d(0) + d(1))) < EPS);
    // One target whose code is shared with another (non-target) item: the ranked
    // code is a hit, whichever item it was meant for.
    const char *t1[1] = {"<a_2>"};
    recmetrics_user(r, n, &m, RANKED, 20, t1, 1);
    assert_true(fabs(r[1] - 1.0) < EPS && fabs(n[1] - d(2)) < EPS);
}

static void test_means_and_skipped_users(void **st) {
    (void)st;
    RecMetrics m;
    recmetrics_init(&m, KS, 4);
    const char *ta[1] = {"<a_0>"}, *tb[1] = {"<a_4>"};
    assert_int_equal(recmetrics_add(&m, RANKED, 20, ta, 1), 1);
    assert_int_equal(recmetrics_add(&m, RANKED, 20, NULL, 0), 0); // empty targets: skipped
    assert_int_equal(recmetrics_add(&m, RANKED, 20, tb, 1), 1);
    assert_int_equal(m.n_users, 2);
    assert_true(fabs(recmetrics_recall(&m, 0) - 0.5) < EPS);     // (1 + 0) / 2
    assert_true(fabs(recmetrics_recall(&m, 1) - 1.0) < EPS);     // (1 + 1) / 2
    assert_true(fabs(recmetrics_ndcg(&m, 1) - (1.0 + d(4)) / 2) < EPS);
    RecMetrics z;
    recmetrics_init(&z, KS, 4);
    assert_true(recmetrics_recall(&z, 0) == 0.0 && recmetrics_ndcg(&z, 3) == 0.0); // no users: 0, not NaN
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_target),
        cmocka_unit_test(test_multi_target),
        cmocka_unit_test(test_colliding_codes),
        cmocka_unit_test(test_means_and_skipped_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
