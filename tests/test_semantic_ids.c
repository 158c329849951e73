// test_semantic_ids.c: semantic IDs from train co-occurrence (datasets/semantic_ids.h).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/prepare.h"
#include "datasets/semantic_ids.h"

// The collision level on a hand-made table: groups numbered in item order.
static void test_separate_collisions(void **state) {
    (void)state;
    // 7 items x (2 levels + collision column).
    int codes[7 * 3] = {0, 0, -1, 1, 2, -1, 0, 0, -1, 1, 2, -1, 0, 0, -1, 3, 3, -1, 0, 1, -1};
    int want_last[7] = {0, 0, 1, 1, 2, 0, 0};
    assert_int_equal(semid_separate_collisions(codes, 7, 2), 3);
    for (int i = 0; i < 7; i++) assert_int_equal(codes[i * 3 + 2], want_last[i]);
    // No collisions: everyone gets 0 and the level has size 1.
    int single[3 * 2] = {5, -1, 2, -1, 9, -1};
    assert_int_equal(semid_separate_collisions(single, 3, 1), 1);
    for (int i = 0; i < 3; i++) assert_int_equal(single[i * 2 + 1], 0);
}

// k-means on three far-apart blobs recovers them exactly (up to labels).
static void test_kmeans_blobs(void **state) {
    (void)state;
    enum { N = 300, D = 4, K = 3 };
    float *x = malloc(sizeof(float) * N * D);
    int truth[N], assign[N];
    float cent[K * D];
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < N; i++) {
        truth[i] = (int)(rng_u64(&r) % K);
        for (int d = 0; d < D; d++) x[i * D + d] = 0.3f * rng_normal(&r) + (d == truth[i] ? 10.0f : 0.0f);
    }
    semid_kmeans(assign, cent, x, N, D, K, 10, 1);
    // Same partition: items agree on "same cluster" iff they agree in truth.
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) assert_int_equal(truth[i] == truth[j], assign[i] == assign[j]);
    // Each centroid is the mean of its members (after the last update), so near a blob centre.
    for (int c = 0; c < K; c++) {
        float mx = 0.0f;
        for (int d = 0; d < D; d++) mx = fmaxf(mx, cent[c * D + d]);
        assert_true(mx > 9.5f && mx < 10.5f);
    }
    free(x);
}

// A planted-cluster dataset (synthetic generator), split as the pipeline does.
typedef struct {
    Dataset d;
    int *cluster; // [n_items + 1] planted cluster of dense item i (row 0 unused)
    int n_clusters;
} Planted;

static void planted_make(Planted *p, int n_users, int n_items, int n_clusters, uint64_t seed) {
    SynthConfig c;
    synth_config_default(&c);
    c.n_users = n_users;
    c.n_items = n_items;
    c.n_clusters = n_clusters;
    c.seed = seed;
    RawLog log;
    raw_log_init(&log);
    int *raw_cluster = malloc(sizeof(int) * (size_t)n_items);
    synth_generate(&log, raw_cluster, &c);
    int *item_raw = NULL;
    Error e;
    if (prep_split(&p->d, &item_raw, &log, &e) != 0) fail_msg("%s", e.msg);
    p->cluster = malloc(sizeof(int) * ((size_t)p->d.n_items + 1));
    p->cluster[0] = -1;
    for (int i = 1; i <= p->d.n_items; i++) p->cluster[i] = raw_cluster[item_raw[i]];
    p->n_clusters = n_clusters;
    free(item_raw);
    free(raw_cluster);
    raw_log_free(&log);
}

static void planted_free(Planted *p) {
    dataset_free(&p->d);
    free(p->cluster);
}

// A copy of the codes prep_build_codes gives the planted dataset (row 0 unused).
typedef struct {
    int levels;
    int codes_per_level[DATASET_MAX_LEVELS];
    int *codes; // [(n_items + 1) * levels]
} Codes;

static void codes_build(Codes *c, Planted *p, const SemIdConfig *cfg) {
    prep_build_codes(&p->d, cfg);
    c->levels = p->d.code_levels;
    memcpy(c->codes_per_level, p->d.codes_per_level, sizeof c->codes_per_level);
    size_t n = ((size_t)p->d.n_items + 1) * (size_t)c->levels;
    c->codes = malloc(n * sizeof(int));
    memcpy(c->codes, p->d.codes, n * sizeof(int));
}

static void codes_free(Codes *c) {
    free(c->codes);
    c->codes = NULL;
}

static void test_unique_and_deterministic(void **state) {
    (void)state;
    Planted p;
    planted_make(&p, 3000, 2000, 16, 3);
    SemIdConfig cfg;
    semid_config_default(&cfg);
    cfg.codes = 8; // few clusters per level, so that collisions happen and get separated
    Codes a, b;
    codes_build(&a, &p, &cfg);
    int L = a.levels, n = p.d.n_items;
    assert_int_equal(L, cfg.levels + 1);
    // No two items share the full code; indices are within codes_per_level.
    int collided = 0;
    for (int i = 1; i <= n; i++) {
        for (int l = 0; l < L; l++) {
            assert_true(a.codes[(size_t)i * L + l] >= 0);
            assert_true(a.codes[(size_t)i * L + l] < a.codes_per_level[l]);
        }
        for (int j = i + 1; j <= n; j++) {
            assert_true(memcmp(a.codes + (size_t)i * L, a.codes + (size_t)j * L, sizeof(int) * (size_t)L) != 0);
            collided |= memcmp(a.codes + (size_t)i * L, a.codes + (size_t)j * L, sizeof(int) * (size_t)(L - 1)) == 0;
        }
    }
    assert_true(collided); // 8^3 codes for 2000 items: many share the k-means code
    assert_true(a.codes_per_level[L - 1] > 1);
    for (int l = 0; l < L - 1; l++) assert_int_equal(a.codes_per_level[l], 8);
    // Deterministic for a seed (and here also across 1 and 2 threads, which the
    // design does not promise but the implementation gives).
    for (int threads = 1; threads <= 2; threads++) {
        threads_init(threads);
        codes_build(&b, &p, &cfg);
        assert_memory_equal(a.codes, b.codes, sizeof(int) * (size_t)(n + 1) * L);
        assert_memory_equal(a.codes_per_level, b.codes_per_level, sizeof(int) * (size_t)L);
        codes_free(&b);
    }
    // Another seed: other codes.
    cfg.seed = 99;
    codes_build(&b, &p, &cfg);
    assert_true(memcmp(a.codes, b.codes, sizeof(int) * (size_t)(n + 1) * L) != 0);
    codes_free(&b);
    codes_free(&a);
    planted_free(&p);
}

// Items of one planted cluster mostly share their first-level code, and the
// first level agrees with train co-occurrence far above chance.
static void test_planted_clusters(void **state) {
    (void)state;
    Planted p;
    planted_make(&p, 2000, 400, 16, 5);
    SemIdConfig cfg;
    semid_config_default(&cfg);
    cfg.codes = p.n_clusters;
    cfg.window = 1;
    Codes codes;
    codes_build(&codes, &p, &cfg);
    int L = codes.levels, n = p.d.n_items, C = p.n_clusters;
    assert_int_equal(codes.codes_per_level[0], C);
    // Purity: for each planted cluster, the share of its items carrying its most
    // common first-level code; averaged over items.
    int *count = calloc((size_t)C * C, sizeof(int));
    for (int i = 1; i <= n; i++) count[p.cluster[i] * C + codes.codes[(size_t)i * L]]++;
    int agree = 0;
    for (int c = 0; c < C; c++) {
        int best = 0;
        for (int a = 0; a < C; a++) best = count[c * C + a] > best ? count[c * C + a] : best;
        agree += best;
    }
    double purity = (double)agree / n;
    // Pairs: same cluster -> same code, and different clusters -> different codes.
    long same_c = 0, same_c_same_a = 0, diff_c = 0, diff_c_same_a = 0;
    for (int i = 1; i <= n; i++)
        for (int j = i + 1; j <= n; j++) {
            int sa = codes.codes[(size_t)i * L] == codes.codes[(size_t)j * L];
            if (p.cluster[i] == p.cluster[j]) { same_c++; same_c_same_a += sa; }
            else { diff_c++; diff_c_same_a += sa; }
        }
    double p_same = (double)same_c_same_a / same_c, p_diff = (double)diff_c_same_a / diff_c;
    SemIdCheck chk;
    const DatasetSplit *train = &p.d.splits[SPLIT_TRAIN];
    semid_check(&chk, codes.codes, L, train->offsets, train->items, NULL, p.d.n_users, n, 3);
    print_message("planted: purity %.3f, P(same a | same cluster) %.3f, P(same a | other cluster) %.3f, "
                  "co-occurrence ratio %.2f\n", purity, p_same, p_diff, chk.ratio);
    assert_true(purity >= 0.8);
    assert_true(p_same >= 0.7);
    assert_true(p_diff <= 0.05);
    assert_true(chk.ratio > 2.0);
    free(count);
    codes_free(&codes);
    planted_free(&p);
}

// The check statistic against a hand count.
static void test_check_by_hand(void **state) {
    (void)state;
    // Items 1..4 with first-level codes 0, 0, 1, 1 (levels = 2, second column
    // unused); rows indexed by item id, row 0 unused as in a Dataset.
    int codes[5 * 2] = {-1, -1, 0, 0, 0, 1, 1, 0, 1, 1};
    // User 1: 1 2 3; user 2: 4 3 3 1. Window 1 pairs: (1,2) same, (2,3) diff, (4,3) same,
    // (3,3) skipped, (3,1) diff -> 2 of 4. Window 2 adds (1,3) diff, (4,3) same, (3,1) diff -> 3 of 7.
    size_t off[3] = {0, 3, 7};
    int items[7] = {1, 2, 3, 4, 3, 3, 1};
    SemIdCheck c;
    semid_check(&c, codes, 2, off, items, NULL, 2, 4, 1);
    assert_int_equal(c.n_pairs, 4);
    assert_true(fabs(c.p_cooc - 0.5) < 1e-12);
    // Random distinct pair: (2*1 + 2*1) / (4*3) = 1/3.
    assert_true(fabs(c.p_random - 1.0 / 3.0) < 1e-12);
    assert_true(fabs(c.ratio - 1.5) < 1e-12);
    semid_check(&c, codes, 2, off, items, NULL, 2, 4, 2);
    assert_int_equal(c.n_pairs, 7);
    assert_true(fabs(c.p_cooc - 3.0 / 7.0) < 1e-12);
    // Only pairs whose later position is >= 2, window 2: user 1: (1,3) diff,
    // (2,3) diff; user 2: (4,3) same, (3,3) skipped, (3,1) diff twice -> 1 of 5.
    size_t from[2] = {2, 2};
    semid_check(&c, codes, 2, off, items, from, 2, 4, 2);
    assert_int_equal(c.n_pairs, 5);
    assert_true(fabs(c.p_cooc - 1.0 / 5.0) < 1e-12);
}

// Embeddings: unit rows, finite; items with identical contexts embed (nearly) alike;
// an item never seen in train gets a unit vector too.
static void test_embed(void **state) {
    (void)state;
    // Items 1 and 2 always appear between 3 and 4; item 5 never appears in train.
    // Items 6, 7, 8 form another group.
    size_t off[7] = {0, 3, 6, 9, 12, 15, 18};
    int items[18] = {3, 1, 4, 3, 2, 4, 3, 1, 4, 3, 2, 4, 6, 7, 8, 8, 7, 6};
    SemIdConfig cfg;
    semid_config_default(&cfg);
    cfg.dim = 4;
    cfg.window = 1;
    float emb[8 * 4];
    semid_embed(emb, off, items, 6, 8, &cfg);
    for (int i = 0; i < 8; i++) {
        double s = 0.0;
        for (int d = 0; d < 4; d++) {
            assert_true(isfinite(emb[i * 4 + d]));
            s += (double)emb[i * 4 + d] * emb[i * 4 + d];
        }
        assert_true(fabs(s - 1.0) < 1e-4);
    }
    double cos12 = 0.0, cos16 = 0.0;
    for (int d = 0; d < 4; d++) {
        cos12 += (double)emb[0 * 4 + d] * emb[1 * 4 + d];
        cos16 += (double)emb[0 * 4 + d] * emb[5 * 4 + d];
    }
    assert_true(cos12 > 0.99);
    assert_true(fabs(cos16) < 0.5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_separate_collisions),
        cmocka_unit_test(test_kmeans_blobs),
        cmocka_unit_test(test_check_by_hand),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_unique_and_deterministic),
        cmocka_unit_test(test_planted_clusters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
