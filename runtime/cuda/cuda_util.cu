// cuda_util.cu: see cuda_util.h.
#include "runtime/cuda/cuda_util.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/cuda/gemm_lt.h"

#define CUDA_BLAS_WORKSPACE (32u << 20)

extern "C" const char *cuda_dtype_name(CudaDtype dt) { return dt == CUDA_BF16 ? "bf16" : "f32"; }

extern "C" int cuda_dtype_parse(CudaDtype *dt, const char *s, Error *e) {
    if (!strcmp(s, "f32")) *dt = CUDA_F32;
    else if (!strcmp(s, "bf16")) *dt = CUDA_BF16;
    else return err_set(e, "--dtype '%s': unknown dtype (known: f32, bf16)", s);
    return 0;
}

extern "C" int cuda_device_count(int *n, Error *e) {
    *n = 0;
    cudaError_t st = cudaGetDeviceCount(n);
    if (st != cudaSuccess) {
        *n = 0;
        return err_set(e, "no usable CUDA device: %s (%s)", cudaGetErrorString(st), cudaGetErrorName(st));
    }
    if (*n == 0) return err_set(e, "no CUDA device found");
    return 0;
}

// The runtime's environment switches, checked before anything is created.
static int env_check(Error *e) {
    static const struct { const char *name, *values[3]; } sw[] = {
        {"EARNEST_CUDA_GEMM", {"tuned", "cublas", NULL}},
        {"EARNEST_CUDA_GRAPHS", {"1", "0", NULL}},
        {"EARNEST_CUDA_PHASES", {"1", "0", NULL}},
    };
    for (size_t i = 0; i < sizeof sw / sizeof *sw; i++) {
        const char *v = getenv(sw[i].name);
        if (!v || !strcmp(v, sw[i].values[0]) || !strcmp(v, sw[i].values[1])) continue;
        return err_set(e, "%s: '%s' is neither '%s' nor '%s'", sw[i].name, v, sw[i].values[0], sw[i].values[1]);
    }
    return 0;
}

extern "C" int cuda_context_init(CudaContext *cx, Error *e) {
    memset(cx, 0, sizeof *cx);
    if (env_check(e)) return -1;
    int n;
    if (cuda_device_count(&n, e)) return -1;
    cx->device = 0;
    CUDA_CHECK(cudaSetDevice(cx->device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, cx->device));
    snprintf(cx->name, sizeof cx->name, "%s", prop.name);
    cx->n_sms = prop.multiProcessorCount;
    CUDA_CHECK(cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&cx->blas));
    CUBLAS_CHECK(cublasSetStream(cx->blas, cx->stream));
    // Plain f32 products stay f32 (no TF32): the f32 runtime is the exact twin of the CPU's.
    CUBLAS_CHECK(cublasSetMathMode(cx->blas, CUBLAS_DEFAULT_MATH));
    cx->blas_workspace = cuda_xmalloc(CUDA_BLAS_WORKSPACE);
    CUBLAS_CHECK(cublasSetWorkspace(cx->blas, cx->blas_workspace, CUDA_BLAS_WORKSPACE));
    cx->gemm = gemm_lt_from_env();
    return 0;
}

extern "C" void cuda_context_free(CudaContext *cx) {
    gemm_lt_free(cx->gemm);
    if (cx->blas) CUBLAS_CHECK(cublasDestroy(cx->blas));
    cuda_xfree(cx->blas_workspace);
    if (cx->stream) CUDA_CHECK(cudaStreamDestroy(cx->stream));
    memset(cx, 0, sizeof *cx);
}

extern "C" void *cuda_malloc_check(size_t bytes, const char *file, int line) {
    void *p = NULL;
    cudaError_t st = cudaMalloc(&p, bytes ? bytes : 1);
    if (st != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        die_at(file, line, "cudaMalloc of %zu bytes failed: %s (%zu of %zu bytes free)", bytes, cudaGetErrorString(st),
               free_b, total_b);
    }
    return p;
}

extern "C" void cuda_xfree(void *p) {
    if (p) CUDA_CHECK(cudaFree(p));
}
