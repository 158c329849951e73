// test_ops_attention.c: the inference attention ops of runtime/ops.h
// (attention_cached_forward: one sequence, one head, a block of queries
// against [parent | own] KV entries; attention_shared_forward: beams of
// several sequences sharing a parent, one KV head and its query heads;
// attention_cached_sparse_forward: a block reading only the keys its mask shows)
// against their plain-loop _ref twins.
//
// Cases: odd head size E = 13 inside wider strided rows (sq = H*E + 3), GQA
// (3 query heads per KV head, each reading its KV head's entries), with and
// without a parent cache, with and without earlier own entries, several query
// blocks (150 new rows: blocks of 64, 64 and 22), masks through a
// non-identity index map, several sequences of different lengths in one
// shared-parent task.
// Tolerance: rel err (max |fast - ref| / max |ref|) < 1e-5 on outputs and
// probabilities (float vs double accumulation; seen ~1e-7). Keys a query
// cannot see must get probability exactly 0. The two _ref twins must agree
// with each other (< 1e-6) where both apply: a shared-parent row is the
// cached op on a block of one query.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/ops.h"
#include "runtime/util.h"

#define REF_TOL 1e-5
#define REF_REF_TOL 1e-6

enum { E = 13, H = 6, G = 2, HPG = H / G, SQ = H * E + 3 };

static float *normal_array(size_t n, Rng *r) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(r);
    return x;
}

static double max_rel(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0.0 ? num / den : num;
}

// ---------------------------------------------------------------------------
// attention_cached_forward

// One sequence with P parent entries, n_old earlier own entries and nq new
// rows, every head, every query block of 64, optionally masked.
static void check_cached(size_t P, size_t n_old, size_t nq, int with_mask, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    const size_t n_own = n_old + nq, mask_n = nq + 9;
    float *q = normal_array(nq * SQ, &r);
    float *kp = normal_array(G * P * E, &r), *vp = normal_array(G * P * E, &r);     // [G][P, E]
    float *ko = normal_array(G * n_own * E, &r), *vo = normal_array(G * n_own * E, &r); // [G][n_own, E]
    float *out1 = calloc(nq * SQ, sizeof(float)), *out2 = calloc(nq * SQ, sizeof(float));
    size_t nk_max = P + n_own;
    float *p1 = malloc(64 * nk_max * sizeof(float)), *p2 = malloc(64 * nk_max * sizeof(float));
    int *idx = malloc(nq * sizeof(int));
    uint8_t *mask = malloc(mask_n * mask_n);
    for (size_t i = 0; i < nq; i++) idx[i] = (int)((i * 7 + 3) % mask_n); // not the identity
    for (size_t i = 0; i < mask_n * mask_n; i++) mask[i] = rng_uniform(&r) < 0.7f;
    const uint8_t *mk = with_mask ? mask : NULL;
    double perr = 0.0;
    for (size_t h = 0; h < H; h++) {
        size_t g = h / HPG;
        const float *kpg = P ? kp + g * P * E : NULL, *vpg = P ? vp + g * P * E : NULL;
        const float *kog = ko + g * n_own * E, *vog = vo + g * n_own * E;
        for (size_t i0 = 0; i0 < nq; i0 += 64) {
            size_t i1 = i0 + 64 < nq ? i0 + 64 : nq, nk = P + n_old + i1;
            const float *qb = q + i0 * SQ + h * E;
            attention_cached_forward(out1 + i0 * SQ + h * E, p1, qb, kpg, vpg, kog, vog, mk, idx, mask_n, P, n_old,
                                     i0, i1, E, SQ);
            attention_cached_forward_ref(out2 + i0 * SQ + h * E, p2, qb, kpg, vpg, kog, vog, mk, idx, mask_n, P,
                                         n_old, i0, i1, E, SQ);
            perr = fmax(perr, max_rel(p1, p2, (i1 - i0) * nk));
            for (size_t i = i0; i < i1; i++) {
                const float *row = p1 + (i - i0) * nk;
                for (size_t j = P + n_old + i + 1; j < nk; j++) assert_true(row[j] == 0.0f); // later keys
                for (size_t j = 0; mk && j < i; j++)
                    if (!mask[(size_t)idx[i] * mask_n + (size_t)idx[j]]) assert_true(row[P + n_old + j] == 0.0f);
                double sum = 0.0;
                for (size_t j = 0; j < nk; j++) sum += row[j];
                assert_true(fabs(sum - 1.0) < 1e-5);
            }
        }
    }
    double oerr = max_rel(out1, out2, nq * SQ);
    print_message("  cached P=%zu n_old=%zu nq=%zu mask=%d: out rel err %.2e, probs rel err %.2e\n", P, n_old, nq,
                  with_mask, oerr, perr);
    assert_true(oerr < REF_TOL);
    assert_true(perr < REF_TOL);
    free(q); free(kp); free(vp); free(ko); free(vo); free(out1); free(out2); free(p1); free(p2);
    free(idx); free(mask);
}

static void test_cached(void **st) {
    (void)st;
    check_cached(0, 0, 150, 0, 1);  // prefill: three query blocks
    check_cached(0, 0, 150, 1, 2);  // prefill with a mask
    check_cached(37, 5, 150, 1, 3); // parent + earlier own entries + mask
    check_cached(37, 0, 1, 0, 4);   // one decode step of a beam under a hook
    check_cached(0, 21, 3, 1, 5);   // a few new tokens after a prefill
}

// attention_cached_sparse_forward against the dense reference: an AnLLM-shaped
// mask (a row sees the 5 instruction keys, every anchor -- each 5th key -- and
// its own 5-key segment; most keys hidden, so most blocks gather) through the
// identity index or a permuted one, and the random mask above (mostly visible:
// the dense fallback), with and without parent and earlier own entries.
static void check_sparse(size_t P, size_t n_old, size_t nq, int anllm, int identity, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    const size_t n_own = n_old + nq, mask_n = identity ? nq : nq + 9, nk_max = P + n_own;
    float *q = normal_array(nq * SQ, &r);
    float *kp = normal_array(G * P * E, &r), *vp = normal_array(G * P * E, &r);
    float *ko = normal_array(G * n_own * E, &r), *vo = normal_array(G * n_own * E, &r);
    float *out1 = calloc(nq * SQ, sizeof(float)), *out2 = calloc(nq * SQ, sizeof(float));
    float *work = malloc(attention_cached_sparse_work(64, nk_max, E) * sizeof(float));
    float *p2 = malloc(64 * nk_max * sizeof(float));
    int *idx = malloc(nq * sizeof(int));
    uint8_t *mask = calloc(mask_n * mask_n, 1);
    for (size_t i = 0; i < nq; i++) idx[i] = identity ? (int)i : (int)((i * 7 + 3) % mask_n);
    for (size_t i = 0; i < nq; i++)
        for (size_t j = 0; j < nq; j++) {
            int see = anllm ? j < 5 || j % 5 == 4 || j / 5 == i / 5 : rng_uniform(&r) < 0.7f;
            mask[(size_t)idx[i] * mask_n + (size_t)idx[j]] = (uint8_t)see;
        }
    for (size_t h = 0; h < H; h++) {
        size_t g = h / HPG;
        const float *kpg = P ? kp + g * P * E : NULL, *vpg = P ? vp + g * P * E : NULL;
        const float *kog = ko + g * n_own * E, *vog = vo + g * n_own * E;
        for (size_t i0 = 0; i0 < nq; i0 += 64) {
            size_t i1 = i0 + 64 < nq ? i0 + 64 : nq;
            const float *qb = q + i0 * SQ + h * E;
            attention_cached_sparse_forward(out1 + i0 * SQ + h * E, work, qb, kpg, vpg, kog, vog, mask, idx, mask_n,
                                            P, n_old, i0, i1, E, SQ);
            attention_cached_sparse_forward_ref(out2 + i0 * SQ + h * E, p2, qb, kpg, vpg, kog, vog, mask, idx,
                                                mask_n, P, n_old, i0, i1, E, SQ);
        }
    }
    double oerr = max_rel(out1, out2, nq * SQ);
    print_message("  sparse P=%zu n_old=%zu nq=%zu anllm=%d identity=%d: out rel err %.2e\n", P, n_old, nq, anllm,
                  identity, oerr);
    assert_true(oerr < REF_TOL);
    free(q); free(kp); free(vp); free(ko); free(vo); free(out1); free(out2); free(work); free(p2);
    free(idx); free(mask);
}

static void test_cached_sparse(void **st) {
    (void)st;
    check_sparse(0, 0, 150, 1, 1, 11);  // AnLLM prefill, identity index (the vector OR)
    check_sparse(0, 0, 150, 1, 0, 12);  // the same through a permuted index
    check_sparse(37, 5, 150, 1, 1, 13); // parent + earlier own entries
    check_sparse(0, 0, 150, 0, 0, 14);  // mostly visible: the dense fallback
    check_sparse(0, 21, 3, 1, 1, 15);   // a few new tokens
}

// ---------------------------------------------------------------------------
// attention_shared_forward

enum { NS = 3 };

// Three sequences sharing a parent of P entries: n_old earlier own entries
// and nq new rows each (the middle one masked); KV head g = 1.
static void check_shared(size_t P, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    const size_t n_old[NS] = {4, 0, 7}, nq[NS] = {1, 3, 2}, g = 1, mask_n = 5;
    const int idx1[3] = {4, 0, 2};
    uint8_t mask1[5 * 5];
    for (size_t i = 0; i < 25; i++) mask1[i] = 1;
    mask1[2 * 5 + 4] = 0; // new row 2 (mask index 2) may not see new row 0 (mask index 4)
    mask1[0 * 5 + 4] = 0; // new row 1 (mask index 0) may not see new row 0
    size_t nr = 0, max_own = 0;
    for (size_t s = 0; s < NS; s++) nr += nq[s];
    float *kp = normal_array(P * E, &r), *vp = normal_array(P * E, &r);
    float *ko[NS], *vo[NS];
    AttnOwnKV own[8];
    size_t row = 0;
    for (size_t s = 0; s < NS; s++) {
        size_t n = n_old[s] + nq[s];
        max_own = n > max_own ? n : max_own;
        ko[s] = normal_array(n * E, &r);
        vo[s] = normal_array(n * E, &r);
        for (size_t i = 0; i < nq[s]; i++, row++)
            own[row] = (AttnOwnKV){.k = ko[s], .v = vo[s], .n_old = (int)n_old[s], .i = (int)i,
                                   .mask_row = s == 1 ? mask1 + (size_t)idx1[i] * mask_n : NULL,
                                   .idx = s == 1 ? idx1 : NULL};
    }
    float *q = normal_array(nr * SQ, &r);
    float *out1 = calloc(nr * SQ, sizeof(float)), *out2 = calloc(nr * SQ, sizeof(float));
    float *scores = malloc(HPG * nr * (P + max_own) * sizeof(float));
    float *qbuf = malloc(HPG * nr * E * sizeof(float)), *obuf = malloc(HPG * nr * E * sizeof(float));
    const size_t at = g * HPG * E; // the first query head of kv head g
    attention_shared_forward(out1 + at, scores, qbuf, obuf, q + at, P ? kp : NULL, P ? vp : NULL, own, nr, HPG, P, E,
                             SQ);
    attention_shared_forward_ref(out2 + at, NULL, NULL, NULL, q + at, P ? kp : NULL, P ? vp : NULL, own, nr, HPG, P,
                                 E, SQ);
    double err = max_rel(out1, out2, nr * SQ);
    for (size_t i = 0; i < nr * SQ; i++)
        if (i % SQ < at || i % SQ >= at + HPG * E) assert_true(out1[i] == 0.0f); // other heads untouched

    // The same rows through the cached op's _ref, one query at a time.
    float *out3 = calloc(nr * SQ, sizeof(float)), p[64];
    row = 0;
    for (size_t s = 0; s < NS; s++)
        for (size_t i = 0; i < nq[s]; i++, row++)
            for (size_t j = 0; j < HPG; j++) {
                size_t o = row * SQ + at + j * E; // query i of sequence s, head j of kv head g
                attention_cached_forward_ref(out3 + o, p, q + o, P ? kp : NULL, P ? vp : NULL, ko[s], vo[s],
                                             s == 1 ? mask1 : NULL, s == 1 ? idx1 : NULL, mask_n, P, n_old[s], i,
                                             i + 1, E, SQ);
            }
    double err_rr = max_rel(out3, out2, nr * SQ);
    print_message("  shared P=%zu rows=%zu heads=%d: fast vs _ref rel err %.2e, shared vs cached _ref %.2e\n", P, nr,
                  HPG, err, err_rr);
    assert_true(err < REF_TOL);
    assert_true(err_rr < REF_REF_TOL);
    for (size_t s = 0; s < NS; s++) { free(ko[s]); free(vo[s]); }
    free(kp); free(vp); free(q); free(out1); free(out2); free(out3); free(scores); free(qbuf); free(obuf);
}

static void test_shared(void **st) {
    (void)st;
    check_shared(41, 11); // beams over a prompt
    check_shared(0, 12);  // an empty parent
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached),
        cmocka_unit_test(test_cached_sparse),
        cmocka_unit_test(test_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
