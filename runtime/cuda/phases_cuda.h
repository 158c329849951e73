// phases_cuda.h: where the GPU time of forwards and beam selections goes, by
// op kind (EARNEST_CUDA_PHASES=1; a diagnosis, off otherwise).
//
// Every mark records a CUDA event on the stream; at the end of a forward the
// host waits, and the time between consecutive events goes to the kind of
// the op that ended at the later one. Beside the GPU time, the host time spent
// issuing the forward's launches: a forward whose GPU time is no longer than
// its issue time is bound by launches, not by the GPU. The totals per forward
// kind (prefill: more tokens than sequences; decode: one token per sequence)
// are printed to stderr when the model is freed. The waits make the run
// slower than without; read the shares, not the totals, as the figure.
#ifndef EARNEST_PHASES_CUDA_H
#define EARNEST_PHASES_CUDA_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    PHASE_EMBED, PHASE_NORM, PHASE_QKV, PHASE_ROPE_KV, PHASE_ATTN, PHASE_OUT, PHASE_GATE_UP, PHASE_SWIGLU,
    PHASE_DOWN, PHASE_HEAD, PHASE_SELECT, PHASE_N
} CudaPhase;

typedef enum { PHASES_PREFILL, PHASES_DECODE, PHASES_SELECT, PHASES_KINDS } CudaPhasesKind;

typedef struct CudaPhases CudaPhases;

CudaPhases *cuda_phases_from_env(void); // NULL unless EARNEST_CUDA_PHASES=1
// All of these do nothing on NULL.
void cuda_phases_begin(CudaPhases *p, CudaPhasesKind kind, cudaStream_t st);
void cuda_phases_mark(CudaPhases *p, CudaPhase ph, cudaStream_t st);
void cuda_phases_end(CudaPhases *p, cudaStream_t st);
void cuda_phases_report_free(CudaPhases *p); // prints the totals, frees

#ifdef __cplusplus
}
#endif

#endif
