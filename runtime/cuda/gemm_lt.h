// gemm_lt.h: bf16 matrix products through cuBLASLt with the algorithm chosen
// by timing, once per shape and context.
//
// cublasGemmEx picks its kernel by heuristics alone. For the skinny products
// of decode (20 beams: out [20, OC] = x [20, C] W^T) a kernel that tiles only
// the output leaves most multiprocessors idle while the weights stream from
// memory; cuBLASLt offers split-K and stream-K variants. The first product of
// a shape (rows, C, OC, beta) times cublasGemmEx and up to GEMM_LT_CANDIDATES
// of cuBLASLt's heuristic candidates on a scratch output, keeps the fastest,
// and every later product of that shape runs it. The result is the same
// product in f32 accumulation (the summation order within K may differ: the
// tests' tolerances for bf16 hold).
//
// Chosen by EARNEST_CUDA_GEMM: "tuned" (this file; the default) or "cublas"
// (cublasGemmEx always). EARNEST_CUDA_PHASES=1 also prints each choice.
// Measured on one H200 (experiments/results/gpu/decode_probe/): the rows-20
// out-projection 4096 -> 4096 (beta 1) took 21.1 us by cublasGemmEx and 11.2
// us by cuBLASLt's best; the other shapes gained 1-7 %.
#ifndef EARNEST_GEMM_LT_H
#define EARNEST_GEMM_LT_H

#include <stddef.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GEMM_LT_CANDIDATES 16

typedef struct GemmLt GemmLt;

// The plain product: out [N, OC] f32 = beta * out + inp [N, C] W [OC, C]^T
// by cublasGemmEx (inputs of type ab, f32 accumulation) on blas's stream.
void gemm_ex(cublasHandle_t blas, float *out, const void *inp, const void *weight, int N, int C, int OC, float beta,
             cudaDataType_t ab);

// NULL when EARNEST_CUDA_GEMM=cublas (cuda_context_init refuses other values
// than "tuned" and "cublas" before it gets here).
GemmLt *gemm_lt_from_env(void);
void gemm_lt_free(GemmLt *g);

// out [N, OC] f32 = beta * out + inp [N, C] W [OC, C]^T, bf16 inputs, on
// stream st: 1 when done here, 0 when cublasGemmEx was the fastest for this
// shape (the caller runs it).
int gemm_lt_matmul(GemmLt *g, cublasHandle_t blas, float *out, const void *inp, const void *weight, int N, int C,
                   int OC, float beta, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
