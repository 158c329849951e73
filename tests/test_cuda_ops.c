// test_cuda_ops.c: the GPU attention ops against their CPU twin
// attention_shared_forward_ref (runtime/ops.h), op by op: nr beams sharing a
// parent of P keys, each with one own key, hpg query heads per KV head, every
// supported head size, parents shorter and longer than one chunk
// (ATTN_CUDA_CHUNK) and groups wider than one query tile (ATTN_CUDA_BQ).
// attention_shared_forward_cuda leaves the parent partials, and
// attention_cached_forward_cuda adds the own key and writes the output.
// f32 storage: ||gpu - ref|| / ||ref|| <= 1e-5. Output poisoned with NaN
// before each launch, so an unwritten element fails. Exits 77 without a GPU.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

static double run_case(int E, int G, int hpg, int P, int nr) {
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
    int n_chunks = (P + ATTN_CUDA_CHUNK - 1) / ATTN_CUDA_CHUNK, n_pt = 0;
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
    attention_shared_forward_cuda(pm, pl, pa, dq, dpt, n_pt, n_chunks, (size_t)nr, (size_t)H, (size_t)G, (size_t)E,
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

static void test_shared_attention(void **state) {
    (void)state;
    const int Es[4] = {16, 32, 64, 128}, hpgs[3] = {1, 2, 7}, Ps[3] = {1, 40, 600}, nrs[2] = {5, 20};
    int bad = 0;
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 3; c++)
                for (int d = 0; d < 2; d++) {
                    double rel = run_case(Es[a], 2, hpgs[b], Ps[c], nrs[d]);
                    int ok = rel <= 1e-5;
                    bad += !ok;
                    if (!ok || (b == 1 && d == 1))
                        printf("  E=%3d G=2 hpg=%d P=%3d beams=%2d  rel %.2e%s\n", Es[a], hpgs[b], Ps[c], nrs[d], rel,
                               ok ? "" : "  FAIL");
                }
    assert_int_equal(bad, 0);
}

int main(void) {
    Error e;
    int n;
    if (cuda_device_count(&n, &e)) {
        printf("GPU tests skipped: %s\n", e.msg);
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_shared_attention)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
int main(void) {
    printf("GPU tests skipped: this build has no CUDA runtime (no nvcc)\n");
    return 77;
}
#endif
