// gemm_lt.cu: see gemm_lt.h.
#include "runtime/cuda/gemm_lt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda/cuda_util.h"

#define LT_WORKSPACE (32u << 20)

// One shape's choice, with the descriptors cuBLASLt needs at every call.
typedef struct {
    int N, C, OC, beta1;
    int use_lt;                      // 0: cublasGemmEx was the fastest
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    size_t ws;
} LtShape;

struct GemmLt {
    cublasLtHandle_t lt;
    void *workspace;                 // LT_WORKSPACE bytes
    LtShape *shape;
    int n, cap;
    int verbose;
};

extern "C" void gemm_ex(cublasHandle_t blas, float *out, const void *inp, const void *weight, int N, int C, int OC,
                        float beta, cudaDataType_t ab) {
    const float alpha = 1.0f;
    // Row-major out [N, OC] = inp [N, C] W^T is column-major out^T [OC, N] = W [OC, C] (op T of the
    // column-major [C, OC] view) times inp^T (the column-major [C, N] view).
    CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &alpha, weight, ab, C, inp, ab, C, &beta, out,
                              CUDA_R_32F, OC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

extern "C" GemmLt *gemm_lt_from_env(void) {
    const char *v = getenv("EARNEST_CUDA_GEMM");
    if (v && !strcmp(v, "cublas")) return NULL;
    CHECK(!v || !strcmp(v, "tuned"), "EARNEST_CUDA_GEMM '%s' passed cuda_context_init's check", v);
    GemmLt *g = (GemmLt *)xcalloc(1, sizeof *g);
    CUBLAS_CHECK(cublasLtCreate(&g->lt));
    g->workspace = cuda_xmalloc(LT_WORKSPACE);
    const char *ph = getenv("EARNEST_CUDA_PHASES");
    g->verbose = ph && !strcmp(ph, "1");
    return g;
}

extern "C" void gemm_lt_free(GemmLt *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) {
        LtShape *s = &g->shape[i];
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(s->la));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(s->lb));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(s->lc));
        CUBLAS_CHECK(cublasLtMatmulDescDestroy(s->op));
    }
    free(g->shape);
    cuda_xfree(g->workspace);
    CUBLAS_CHECK(cublasLtDestroy(g->lt));
    free(g);
}

static cublasStatus_t lt_run(GemmLt *g, const LtShape *s, const cublasLtMatmulAlgo_t *algo, size_t ws, float *out,
                             const void *inp, const void *weight, float beta, cudaStream_t st) {
    const float alpha = 1.0f;
    return cublasLtMatmul(g->lt, s->op, &alpha, weight, s->la, inp, s->lb, &beta, out, s->lc, out, s->lc, algo,
                          g->workspace, ws, st);
}

// Mean milliseconds of one product over `reps` after two untimed ones; a
// negative value when the algorithm fails (a candidate cuBLASLt offered but
// cannot run: skipped, not fatal). algo NULL: cublasGemmEx.
static float time_candidate(GemmLt *g, cublasHandle_t blas, const LtShape *s, const cublasLtMatmulAlgo_t *algo,
                            size_t ws, float *scratch, const void *inp, const void *weight, float beta,
                            cudaStream_t st) {
    const int reps = 5;
    cudaEvent_t t0, t1;
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    float ms = -1.0f;
    for (int r = 0; r < reps + 2; r++) {
        if (r == 2) CUDA_CHECK(cudaEventRecord(t0, st));
        if (!algo) {
            gemm_ex(blas, scratch, inp, weight, s->N, s->C, s->OC, beta, CUDA_R_16BF);
        } else if (lt_run(g, s, algo, ws, scratch, inp, weight, beta, st) != CUBLAS_STATUS_SUCCESS) {
            CUDA_CHECK(cudaGetLastError()); // a refused algorithm leaves no sticky error; anything else dies here
            goto done;
        }
    }
    CUDA_CHECK(cudaEventRecord(t1, st));
    CUDA_CHECK(cudaEventSynchronize(t1));
    CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
    ms /= reps;
done:
    CUDA_CHECK(cudaStreamSynchronize(st));
    CUDA_CHECK(cudaEventDestroy(t0));
    CUDA_CHECK(cudaEventDestroy(t1));
    return ms;
}

// The descriptors of out^T [OC, N] = W^T-view [C, OC]^T x inp^T [C, N] (gemm_ex's product).
static void shape_describe(LtShape *s) {
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&s->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s->la, CUDA_R_16BF, (uint64_t)s->C, (uint64_t)s->OC, s->C));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s->lb, CUDA_R_16BF, (uint64_t)s->C, (uint64_t)s->N, s->C));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s->lc, CUDA_R_32F, (uint64_t)s->OC, (uint64_t)s->N, s->OC));
}

// Times cublasGemmEx and cuBLASLt's candidates for a new shape; keeps the fastest.
static LtShape *shape_tune(GemmLt *g, cublasHandle_t blas, const void *inp, const void *weight, int N, int C, int OC,
                           float beta, cudaStream_t st) {
    if (g->n == g->cap) g->shape = (LtShape *)xrealloc(g->shape, (size_t)(g->cap = 2 * g->cap + 8) * sizeof(LtShape));
    LtShape *s = &g->shape[g->n++];
    memset(s, 0, sizeof *s);
    s->N = N; s->C = C; s->OC = OC; s->beta1 = beta != 0.0f;
    shape_describe(s);
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t wsmax = LT_WORKSPACE;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsmax,
                                                      sizeof wsmax));
    cublasLtMatmulHeuristicResult_t res[GEMM_LT_CANDIDATES];
    int n_res = 0;
    if (cublasLtMatmulAlgoGetHeuristic(g->lt, s->op, s->la, s->lb, s->lc, s->lc, pref, GEMM_LT_CANDIDATES, res,
                                       &n_res) != CUBLAS_STATUS_SUCCESS)
        n_res = 0;
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    float *scratch = (float *)cuda_xmalloc((size_t)N * OC * sizeof(float));
    CUDA_CHECK(cudaMemsetAsync(scratch, 0, (size_t)N * OC * sizeof(float), st));
    float best = time_candidate(g, blas, s, NULL, 0, scratch, inp, weight, beta, st), base = best;
    int pick = -1;
    for (int i = 0; i < n_res; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        float ms = time_candidate(g, blas, s, &res[i].algo, res[i].workspaceSize, scratch, inp, weight, beta, st);
        if (ms > 0.0f && ms < best) {
            best = ms;
            pick = i;
        }
    }
    cuda_xfree(scratch);
    if (pick >= 0) {
        s->use_lt = 1;
        s->algo = res[pick].algo;
        s->ws = res[pick].workspaceSize;
    }
    if (g->verbose) {
        double gb = ((double)OC * C * 2 + (double)N * C * 2 + (double)N * OC * 4 * (1 + s->beta1)) / 1e9;
        fprintf(stderr, "gemm tuned: rows %d, %d -> %d, beta %g: cublasGemmEx %.1f us; %s %.1f us (%.0f GB/s; %d "
                "candidates)\n", N, C, OC, beta, 1e3 * base, pick >= 0 ? "cuBLASLt" : "kept cublasGemmEx",
                1e3 * best, gb / (best * 1e-3), n_res);
    }
    return s;
}

extern "C" int gemm_lt_matmul(GemmLt *g, cublasHandle_t blas, float *out, const void *inp, const void *weight, int N,
                              int C, int OC, float beta, cudaStream_t st) {
    LtShape *s = NULL;
    for (int i = 0; i < g->n && !s; i++) {
        LtShape *x = &g->shape[i];
        if (x->N == N && x->C == C && x->OC == OC && x->beta1 == (beta != 0.0f)) s = x;
    }
    if (!s) s = shape_tune(g, blas, inp, weight, N, C, OC, beta, st);
    if (!s->use_lt) return 0;
    CUBLAS_CHECK(lt_run(g, s, &s->algo, s->ws, out, inp, weight, beta, st));
    return 1;
}
