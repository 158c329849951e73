// device.h: the runtime that `--device cpu|cuda` picks for eval, bench and
// forward (DESIGN.md: "earnest eval|bench|forward ... [--device cpu|cuda]").
//
// The CUDA runtime (runtime/cuda/) builds only when CMake finds nvcc and then
// defines EARNEST_HAVE_CUDA; without it `--device cuda` is refused before any
// work with a message that says so. A DeviceModel is the model on the chosen
// runtime, a DeviceSearch its constrained beam search (runtime/beam.h's
// semantics and figures on either runtime), so the verbs and the one
// evaluation path (rec_eval.c) are written once for both.
#ifndef EARNEST_DEVICE_H
#define EARNEST_DEVICE_H

#include "runtime/beam.h"
#include "runtime/model.h"
#include "runtime/specbeam.h"
#include "runtime/trie.h"
#include "runtime/util.h"

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } Device;

#define DEVICE_CHOICES "cpu|cuda"
#define DTYPE_CHOICES "f32|bf16"

// Sets *d from "cpu" or "cuda"; -1 with e set when this build has no such
// runtime or (cuda) the machine has no usable GPU.
int device_select(Device *d, const char *name, Error *e);
const char *device_name(Device d);
// Checks --dtype against the device: the CPU runtime computes in f32 only.
int device_dtype_check(Device d, const char *dtype, Error *e);

typedef struct {
    Device device;
    const char *dtype;  // "f32" or "bf16" (CUDA: weights, KV and product inputs)
    Model *host;        // the host model: what the CPU runtime runs, what the CUDA one was uploaded from;
                        // for device-random weights, a config-only Model (no parameters)
    void *cuda;         // CudaModel * on DEVICE_CUDA
    char name[256];     // "cpu" or the GPU's name
} DeviceModel;

// The model `m` (which must outlive dm) on device d. -1 with e set when the
// device is unusable or the shape unsupported.
int device_model_open(DeviceModel *dm, Device d, const char *dtype, Model *m, Error *e);
// Random weights of config c drawn where they run: CPU: model_init_random
// into `m` (which must outlive dm); CUDA: drawn on the device, m gets the config only.
int device_model_random(DeviceModel *dm, Device d, const char *dtype, Model *m, const ModelConfig *c, uint64_t seed,
                        float std, Error *e);
void device_model_close(DeviceModel *dm);
// The config the runtime runs with; benches switch method and split on it between runs.
ModelConfig *device_model_config(DeviceModel *dm);
// The runtime's matrix-product rate at out [M, N] = a [M, K] b [N, K]^T,
// GFLOP/s, median of reps: cblas_sgemm on the CPU, cuBLAS in dtype on CUDA.
double device_gemm_rate(DeviceModel *dm, int M, int N, int K, int reps);

// One sequence's prefill, LOGITS_ALL: logits [T, V] (host; NaN rows for
// tokens the plan stops early), depth [T] the layer plan. hook: the attention
// hook (model.h), CPU only (NULL on cuda).
int device_forward_prefill(DeviceModel *dm, float *logits, const int *tokens, int T, const int *depth, AttnHook hook,
                           void *hook_ctx, Error *e);

typedef struct {
    Device device;
    BeamSearch cpu;
    void *cuda;            // CudaBeamSearch *
    SpecBeam *spec;        // speculative beam search instead (CPU only; device_search_set_draft)
    // figures of the last run (BeamSearch's)
    double prefill_s, decode_s, prefill_flops;
    size_t kv_bytes, prompt_tokens, gen_tokens;
} DeviceSearch;

// What `--draft` asks for: speculative beam search with this draft model.
typedef struct {
    Model *draft;          // NULL: ordinary beam search
    SpecVerify verify;
    int gamma, draft_beams;
    uint64_t seed;         // relaxed verification's draws
} SpecOptions;

int device_search_init(DeviceSearch *ds, DeviceModel *dm, const Trie *trie, int width, Error *e);
int device_search_run(DeviceSearch *ds, BeamHyps *out, int n_users, const int *const *prompts,
                      const uint8_t *const *kinds, const int *prompt_len, Error *e);
void device_search_free(DeviceSearch *ds);
// The --draft flags of eval and bench, checked before any work: the draft's
// config.json against the target's vocabulary size (target_vocab; and, when
// both directories hold a vocab.txt, the same vocabulary file), a full
// (finetune) draft, gamma >= 1, draft_beams >= max_beam, the CPU device. -1
// with e naming the flag.
int spec_flags_check(const char *draft_dir, const char *target_dir, int target_vocab, int gamma, int draft_beams,
                     int max_beam, Device device, Error *e);

// Makes ds run speculative beam search (runtime/specbeam.h) with o's draft
// from then on; the CPU runtime only (-1 with e set on CUDA or bad input:
// vocabulary, gamma, draft beams). Its figures are then ds->spec->fig.
int device_search_set_draft(DeviceSearch *ds, DeviceModel *target, const Trie *trie, int width, const SpecOptions *o,
                            Error *e);

#endif
