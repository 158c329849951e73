// cuda_util.h: checked CUDA and cuBLAS calls, the compute dtype, and the
// stream + cuBLAS handle every GPU op runs on.
//
// As in runtime/util.h, a failed CUDA or cuBLAS call on good input is a bug or
// an exhausted device: the CHECK macros print the call, file:line and the
// runtime's message, and exit. Bad input (shapes, dtypes, ids) is caught on the
// host before any launch and returns an Error instead. Every launch is followed
// by CUDA_CHECK_LAUNCH(), which reports launch-configuration errors at their
// line; asynchronous faults surface at the next synchronising call.
#ifndef EARNEST_CUDA_UTIL_H
#define EARNEST_CUDA_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "runtime/util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_CHECK(call)                                                                                  \
    do {                                                                                                  \
        cudaError_t cuda_err_ = (call);                                                                   \
        if (cuda_err_ != cudaSuccess)                                                                     \
            die_at(__FILE__, __LINE__, "CUDA call %s failed: %s (%s)", #call, cudaGetErrorString(cuda_err_), \
                   cudaGetErrorName(cuda_err_));                                                          \
    } while (0)

#define CUBLAS_CHECK(call)                                                                                 \
    do {                                                                                                   \
        cublasStatus_t blas_st_ = (call);                                                                  \
        if (blas_st_ != CUBLAS_STATUS_SUCCESS)                                                             \
            die_at(__FILE__, __LINE__, "cuBLAS call %s failed: %s (%d)", #call, cublasGetStatusString(blas_st_), \
                   (int)blas_st_);                                                                         \
    } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// The dtype of weights, of the KV cache and of the activations that feed a
// matrix product. Everything else (the residual stream, q/k/v after the
// projections, softmax, logits) is float32; matrix products accumulate in f32.
typedef enum {
    CUDA_F32 = 0,
    CUDA_BF16 = 1,
} CudaDtype;

static inline size_t cuda_dtype_size(CudaDtype dt) { return dt == CUDA_BF16 ? 2 : 4; }
const char *cuda_dtype_name(CudaDtype dt);                  // "f32", "bf16"
int cuda_dtype_parse(CudaDtype *dt, const char *s, Error *e); // "f32" | "bf16"

// One stream and one cuBLAS handle bound to it (and the tuned products of
// EARNEST_CUDA_GEMM=tuned, gemm_lt.h): the ops of a forward pass run
// in order on this stream (explicit streams, no default-stream work).
typedef struct {
    cudaStream_t stream;
    cublasHandle_t blas;
    int device;
    char name[256];    // the device's name
    int n_sms;
    void *blas_workspace; // cuBLAS's, set explicitly: CUDA graph capture must not allocate
    struct GemmLt *gemm; // NULL: cublasGemmEx for every product (runtime/cuda/gemm_lt.h)
} CudaContext;

// 0 and *n set, or -1 with e set when no CUDA device can be used (no driver,
// no device): the caller decides whether that is an error or a skip.
int cuda_device_count(int *n, Error *e);
// Device 0, a new non-blocking stream and a cuBLAS handle on it; -1 with e set
// when no device is usable.
int cuda_context_init(CudaContext *cx, Error *e);
void cuda_context_free(CudaContext *cx);

// Device memory: checked cudaMalloc (plain allocations, never managed memory).
void *cuda_malloc_check(size_t bytes, const char *file, int line);
#define cuda_xmalloc(bytes) cuda_malloc_check((bytes), __FILE__, __LINE__)
void cuda_xfree(void *p); // NULL is fine

#ifdef __cplusplus
}
#endif

#endif
