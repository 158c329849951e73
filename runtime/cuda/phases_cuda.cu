// phases_cuda.cu: see phases_cuda.h.
#include "runtime/cuda/phases_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cuda/cuda_util.h"

#define PHASES_MAX_EVENTS 2048

static const char *phase_name[PHASE_N] = {"embed", "norm",   "qkv",   "rope+kv", "attention", "out",
                                          "gate_up", "swiglu", "down", "head",    "select"};
static const char *kind_name[PHASES_KINDS] = {"prefill", "decode", "select"};

struct CudaPhases {
    cudaEvent_t ev[PHASES_MAX_EVENTS];
    int ph[PHASES_MAX_EVENTS];
    int n, n_created;
    CudaPhasesKind kind;
    double t0;                              // host time at begin
    long calls[PHASES_KINDS];
    double host_ms[PHASES_KINDS], gpu_ms[PHASES_KINDS];
    double ms[PHASES_KINDS][PHASE_N];
};

extern "C" CudaPhases *cuda_phases_from_env(void) {
    const char *v = getenv("EARNEST_CUDA_PHASES");
    if (!v || strcmp(v, "1")) return NULL;
    return (CudaPhases *)xcalloc(1, sizeof(CudaPhases));
}

static void record(CudaPhases *p, int ph, cudaStream_t st) {
    CHECK(p->n < PHASES_MAX_EVENTS, "cuda phases: more than %d marks in one call", PHASES_MAX_EVENTS);
    if (p->n == p->n_created) CUDA_CHECK(cudaEventCreate(&p->ev[p->n_created++]));
    p->ph[p->n] = ph;
    CUDA_CHECK(cudaEventRecord(p->ev[p->n++], st));
}

extern "C" void cuda_phases_begin(CudaPhases *p, CudaPhasesKind kind, cudaStream_t st) {
    if (!p) return;
    p->n = 0;
    p->kind = kind;
    p->t0 = time_now_s();
    record(p, -1, st);
}

extern "C" void cuda_phases_mark(CudaPhases *p, CudaPhase ph, cudaStream_t st) {
    if (p) record(p, (int)ph, st);
}

extern "C" void cuda_phases_end(CudaPhases *p, cudaStream_t st) {
    if (!p) return;
    const int k = (int)p->kind;
    p->host_ms[k] += 1e3 * (time_now_s() - p->t0);
    p->calls[k]++;
    CUDA_CHECK(cudaStreamSynchronize(st));
    for (int i = 1; i < p->n; i++) {
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, p->ev[i - 1], p->ev[i]));
        p->ms[k][p->ph[i]] += ms;
        p->gpu_ms[k] += ms;
    }
    p->n = 0;
}

extern "C" void cuda_phases_report_free(CudaPhases *p) {
    if (!p) return;
    for (int k = 0; k < PHASES_KINDS; k++) {
        if (!p->calls[k]) continue;
        double c = (double)p->calls[k];
        fprintf(stderr, "cuda phases, %s: %ld calls, per call: GPU %.3f ms, host issue %.3f ms;", kind_name[k],
                p->calls[k], p->gpu_ms[k] / c, p->host_ms[k] / c);
        for (int i = 0; i < PHASE_N; i++)
            if (p->ms[k][i] > 0.0)
                fprintf(stderr, " %s %.3f ms (%.0f%%)", phase_name[i], p->ms[k][i] / c, 100.0 * p->ms[k][i] / p->gpu_ms[k]);
        fputc('\n', stderr);
    }
    for (int i = 0; i < p->n_created; i++) CUDA_CHECK(cudaEventDestroy(p->ev[i]));
    free(p);
}
