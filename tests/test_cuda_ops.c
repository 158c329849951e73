// test_cuda_ops.c: the GPU attention ops against their CPU twin
// attention_shared_forward_ref (runtime/ops.h), op by op: nr beams sharing a
// parent of P keys, each with one own key, hpg query heads per KV head, every
// supported head size, parents shorter and longer than one chunk
// (ATTN_CUDA_CHUNK and the shortest, ATTN_CUDA_BK) and groups wider than one query tile (ATTN_CUDA_BQ).
// attention_shared_forward_cuda leaves the parent partials, and
// attention_cached_forward_cuda adds the own key and writes the output.
// f32 storage: ||gpu - ref|| / ||ref|| <= 1e-5. And the tensor-core prefill
// (attention_prefill_forward_cuda, bf16) against attention_cached_forward_ref
// on the same bf16-rounded inputs: sequences of 64-300 new rows after 0 or 37
// old entries, MHA and GQA, every head size; tolerance 1e-2 (the
// probabilities enter the second product in bf16: ~3e-3). Outputs are
// poisoned with NaN before each launch, so an unwritten element fails.
// Exits 77 without a GPU.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/gpu_skip.h"

#include "runtime/ops.h"
#include "runtime/util.h"

#ifdef EARNEST_HAVE_CUDA
#include "runtime/cuda/ops_cuda.h"

static float *upload(const float *h, size_t n) {
    float *d = cuda_xmalloc(n * sizeof(float));
    CUDA_CHECK(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

static void fill(float *x, size_t n, Rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(r);
}

static double run_case(int E, int G, int hpg, int P, int nr, int chunk) {
    const int H = G * hpg, sq = H * E;
    Rng r;
    rng_seed(&r, (uint64_t)(E * 1000 + G * 100 + hpg * 10 + P + nr));
    float *kp = malloc((size_t)G * P * E * 4), *vp = malloc((size_t)G * P * E * 4); // [G, P, E]
    float *ko = malloc((size_t)nr * G * E * 4), *vo = malloc((size_t)nr * G * E * 4); // [nr, G, 1, E]
    float *q = malloc((size_t)nr * sq * 4), *ref = malloc((size_t)nr * sq * 4), *got = malloc((size_t)nr * sq * 4);
    fill(kp, (size_t)G * P * E, &r); fill(vp, (size_t)G * P * E, &r);
    fill(ko, (size_t)nr * G * E, &r); fill(vo, (size_t)nr * G * E, &r);
    fill(q, (size_t)nr * sq, &r);
    AttnOwnKV *own = malloc((size_t)nr * sizeof *own);
    for (int g = 0; g < G; g++) {
        for (int i = 0; i < nr; i++)
            own[i] = (AttnOwnKV){ko + ((size_t)i * G + g) * E, vo + ((size_t)i * G + g) * E, 0, 0, NULL, NULL};
        attention_shared_forward_ref(ref + (size_t)g * hpg * E, NULL, NULL, NULL, q + (size_t)g * hpg * E,
                                     kp + (size_t)g * P * E, vp + (size_t)g * P * E, own, (size_t)nr, (size_t)hpg,
                                     (size_t)P, (size_t)E, (size_t)sq);
    }
    float *dkp = upload(kp, (size_t)G * P * E), *dvp = upload(vp, (size_t)G * P * E);
    float *dko = upload(ko, (size_t)nr * G * E), *dvo = upload(vo, (size_t)nr * G * E), *dq = upload(q, (size_t)nr * sq);
    int n_chunks = (P + chunk - 1) / chunk, n_pt = 0;
    AttnParentTileCuda *pt = malloc((size_t)G * (nr * hpg / ATTN_CUDA_BQ + 1) * sizeof *pt);
    for (int g = 0; g < G; g++)
        for (int v0 = 0; v0 < nr * hpg; v0 += ATTN_CUDA_BQ) pt[n_pt++] = (AttnParentTileCuda){dkp, dvp, 0, nr, g, v0, P, P};
    AttnTileCuda *tl = malloc((size_t)nr * sizeof *tl);
    for (int i = 0; i < nr; i++)
        tl[i] = (AttnTileCuda){dko + (size_t)i * G * E, dvo + (size_t)i * G * E, i, 1, 0, 0, 1, n_chunks};
    AttnParentTileCuda *dpt = cuda_xmalloc((size_t)n_pt * sizeof *pt);
    AttnTileCuda *dtl = cuda_xmalloc((size_t)nr * sizeof *tl);
    CUDA_CHECK(cudaMemcpy(dpt, pt, (size_t)n_pt * sizeof *pt, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dtl, tl, (size_t)nr * sizeof *tl, cudaMemcpyHostToDevice));
    size_t parts = (size_t)n_chunks * nr * H;
    float *pm = cuda_xmalloc(parts * 4), *pl = cuda_xmalloc(parts * 4), *pa = cuda_xmalloc(parts * E * 4);
    float *dout = cuda_xmalloc((size_t)nr * sq * 4);
    CUDA_CHECK(cudaMemset(dout, 0xff, (size_t)nr * sq * 4)); // NaN
    attention_shared_forward_cuda(pm, pl, pa, dq, dpt, n_pt, n_chunks, chunk, (size_t)nr, (size_t)H, (size_t)G, (size_t)E,
                                  (size_t)sq, CUDA_F32, 0);
    attention_cached_forward_cuda(dout, dq, dtl, nr, pm, pl, pa, (size_t)nr, (size_t)H, (size_t)G, (size_t)E,
                                  (size_t)sq, CUDA_F32, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(got, dout, (size_t)nr * sq * 4, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)nr * sq; i++) {
        double d = (double)got[i] - ref[i];
        num += isnan(got[i]) ? 1e30 : d * d;
        den += (double)ref[i] * ref[i];
    }
    void *dev[] = {dkp, dvp, dko, dvo, dq, dpt, dtl, pm, pl, pa, dout};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) cuda_xfree(dev[i]);
    free(kp); free(vp); free(ko); free(vo); free(q); free(ref); free(got); free(own); free(pt); free(tl);
    return sqrt(num / den);
}

static uint16_t to_bf16(float x) { // round to nearest even, as __float2bfloat16_rn
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// One sequence: n_old cached entries, then n new rows; per kv head [cap, E] bf16.
static double run_prefill(int E, int G, int hpg, int n, int n_old) {
    const int H = G * hpg, sq = H * E, cap = n_old + n;
    Rng r;
    rng_seed(&r, (uint64_t)(E * 7919 + G * 31 + hpg * 7 + n + n_old));
    size_t nkv = (size_t)G * cap * E;
    float *k = malloc(nkv * 4), *v = malloc(nkv * 4), *q = malloc((size_t)n * sq * 4);
    float *ref = malloc((size_t)n * sq * 4), *probs = malloc((size_t)n * cap * 4), *got = malloc((size_t)n * sq * 4);
    uint16_t *kb = malloc(nkv * 2), *vb = malloc(nkv * 2), *ob = malloc((size_t)n * sq * 2);
    for (size_t i = 0; i < nkv; i++) {
        kb[i] = to_bf16(rng_normal(&r));
        vb[i] = to_bf16(rng_normal(&r));
        k[i] = bf16_to_f32(kb[i]);
        v[i] = bf16_to_f32(vb[i]);
    }
    for (size_t i = 0; i < (size_t)n * sq; i++) q[i] = bf16_to_f32(to_bf16(rng_normal(&r))); // the kernel rounds Q too
    for (int h = 0; h < H; h++) {
        int g = h / hpg;
        attention_cached_forward_ref(ref + (size_t)h * E, probs, q + (size_t)h * E, NULL, NULL,
                                     k + (size_t)g * cap * E, v + (size_t)g * cap * E, NULL, NULL, 0, 0,
                                     (size_t)n_old, 0, (size_t)n, (size_t)E, (size_t)sq);
    }
    void *dk = cuda_xmalloc(nkv * 2), *dv = cuda_xmalloc(nkv * 2), *dout = cuda_xmalloc((size_t)n * sq * 2);
    float *dq = upload(q, (size_t)n * sq);
    CUDA_CHECK(cudaMemcpy(dk, kb, nkv * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dv, vb, nkv * 2, cudaMemcpyHostToDevice));
    int n_t = 0;
    AttnTileCuda tl[8];
    for (int i0 = 0; i0 < n; i0 += ATTN_CUDA_BQ_TC)
        tl[n_t++] = (AttnTileCuda){dk, dv, i0, n - i0 < ATTN_CUDA_BQ_TC ? n - i0 : ATTN_CUDA_BQ_TC, i0, n_old, cap, 0};
    AttnTileCuda *dtl = cuda_xmalloc(sizeof tl);
    CUDA_CHECK(cudaMemcpy(dtl, tl, sizeof tl, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(dout, 0xff, (size_t)n * sq * 2)); // NaN
    attention_prefill_forward_cuda(dout, dq, dtl, n_t, (size_t)H, (size_t)G, (size_t)E, (size_t)sq, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(ob, dout, (size_t)n * sq * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)n * sq; i++) {
        got[i] = bf16_to_f32(ob[i]);
        double d = (double)got[i] - ref[i];
        num += isnan(got[i]) ? 1e30 : d * d;
        den += (double)ref[i] * ref[i];
    }
    cuda_xfree(dk); cuda_xfree(dv); cuda_xfree(dout); cuda_xfree(dq); cuda_xfree(dtl);
    free(k); free(v); free(q); free(ref); free(probs); free(got); free(kb); free(vb); free(ob);
    return sqrt(num / den);
}

static void test_prefill_tensor_cores(void **state) {
    (void)state;
    const int Es[4] = {16, 32, 64, 128}, hpgs[2] = {1, 4}, ns[3] = {64, 100, 300}, olds[2] = {0, 37};
    int bad = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 2; d++) {
                    double rel = run_prefill(Es[a], 2, hpgs[b], ns[c], olds[d]);
                    int ok = rel <= 1e-2;
                    bad += !ok;
                    if (!ok || (c == 2 && d == 1))
                        printf("  prefill E=%3d G=2 hpg=%d rows=%3d old=%2d  rel %.2e%s\n", Es[a], hpgs[b], ns[c],
                               olds[d], rel, ok ? "" : "  FAIL");
                }
    assert_int_equal(bad, 0);
}

static void test_shared_attention(void **state) {
    (void)state;
    const int Es[4] = {16, 32, 64, 128}, hpgs[3] = {1, 2, 7}, Ps[3] = {1, 40, 600}, nrs[2] = {5, 20};
    const int chunks[2] = {ATTN_CUDA_CHUNK, ATTN_CUDA_BK}; // the longest chunk and the shortest
    int bad = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 2; d++)
                    for (int k = 0; k < 2; k++) {
                        double rel = run_case(Es[a], 2, hpgs[b], Ps[c], nrs[d], chunks[k]);
                        int ok = rel <= 1e-5;
                        bad += !ok;
                        if (!ok || (b == 1 && d == 1))
                            printf("  E=%3d G=2 hpg=%d P=%3d beams=%2d chunk=%3d  rel %.2e%s\n", Es[a], hpgs[b], Ps[c],
                                   nrs[d], chunks[k], rel, ok ? "" : "  FAIL");
                    }
    // The chunk rule: multiples of ATTN_CUDA_BK within [ATTN_CUDA_BK, ATTN_CUDA_CHUNK], at
    // least two blocks per multiprocessor where the parent allows it.
    assert_int_equal(attention_chunk_len(150, 32, 132), 32);   // 5 chunks x 32 tiles = 160 blocks
    assert_int_equal(attention_chunk_len(1024, 32, 132), 128); // 9 chunks wanted: 114 keys, rounded up to 128
    assert_int_equal(attention_chunk_len(16384, 32, 132), ATTN_CUDA_CHUNK);
    assert_int_equal(attention_chunk_len(150, 640, 132), 160); // enough tiles: one chunk of the whole parent
    assert_int_equal(attention_chunk_len(0, 0, 132), ATTN_CUDA_CHUNK);
    assert_int_equal(bad, 0);
}

int main(void) {
    if (!gpu_tests_available()) return 77;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_shared_attention),
                                       cmocka_unit_test(test_prefill_tensor_cores)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
int main(void) { return gpu_tests_available() ? 1 : 77; }
#endif
