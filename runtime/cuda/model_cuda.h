// model_cuda.h: the model on the GPU — weights, KV cache and forward pass —
// mirroring runtime/model.h and runtime/kvcache.h step for step.
//
// Weights come from the same checkpoints (a host Model, loaded from f32, bf16
// or f16 safetensors with HF names) and are converted once to the compute
// dtype (f32 or bf16); big presets can instead be drawn at random on the
// device (speed runs need no host copy of 7B parameters). Per layer, q|k|v and
// gate|up are fused into one matrix each, so a layer is four matrix products.
//
// The forward pass takes the same batch as model_forward (sequences of new
// tokens extending their caches, a per-token depth for the layer plan,
// LOGITS_LAST or LOGITS_ALL) and computes the same function: the tests compare
// the two on random checkpoints. The host plans each call (which rows each
// layer computes, where each key goes, the attention tiles), uploads the plan
// once, and the device runs the layers. Not on the GPU (refused with a
// message): attention masks and hooks (tree verification, attention dumps),
// and KV caches whose heads of one layer hold different counts (KV policies);
// cuda_model_upload refuses a model with LoRA adapters (compress500x).
#ifndef EARNEST_MODEL_CUDA_H
#define EARNEST_MODEL_CUDA_H

#include "runtime/cuda/cuda_util.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "runtime/model.h"

// Device weights: dt tensors in one allocation, f32 tensors (norms, biases) in
// another. Shapes per stack (L layers, D dim, F hidden, V vocab, QD = H*E,
// KD = G*E, QKV = QD + 2*KD).
typedef struct {
    void *embed;       // [V, D] dt
    void *wqkv;        // [L, QKV, D] dt   q_proj | k_proj | v_proj rows
    void *wo;          // [L, D, QD] dt
    void *wgu;         // [L, 2F, D] dt    gate_proj | up_proj rows
    void *wdown;       // [L, D, F] dt
    void *lm_head;     // [V, D] dt (== embed when tied)
    float *bqkv;       // [L, QKV] f32 (Qwen2; NULL otherwise)
    float *attn_norm;  // [L, D] f32
    float *mlp_norm;   // [L, D] f32
    float *final_norm; // [D] f32
} CudaParams;

typedef struct {
    ModelConfig config;
    CudaDtype dtype;
    CudaParams params;
    void *weights_dt;      // the dt allocation
    float *weights_f32;    // the f32 allocation
    size_t weight_bytes;   // both allocations
    float *rope_inv_freq;  // [E/2] device, as the CPU's
    int allow_long;
    CudaContext cx;
    struct CudaPhases *phases; // EARNEST_CUDA_PHASES=1: GPU time by op kind (phases_cuda.h); else NULL
} CudaModel;

// Uploads host weights converted to dt. -1 with e set when the device is
// unusable or the shape is unsupported (head size not 16/32/64/128).
int cuda_model_upload(CudaModel *cm, const Model *m, CudaDtype dt, Error *e);
// Random weights drawn on the device: N(0, std) matrices, norms 1, biases N(0, std).
int cuda_model_init_random(CudaModel *cm, const ModelConfig *c, CudaDtype dt, uint64_t seed, float std, Error *e);
void cuda_model_free(CudaModel *cm);

// ---------------------------------------------------------------------------
// The KV cache of one sequence on the device: kvcache.h's layout (per layer
// and kv head its own entries, capacity per layer) in dt. Lengths live on the
// host (the host plans every call). A cache may view memory it does not own
// (beam search carves its beams' caches out of one pool).
typedef struct CudaKVCache {
    int n_layers, n_kv_heads, head_dim;
    CudaDtype dtype;
    int *cap;          // host [L]
    int *len;          // host [L * G]
    size_t *offset;    // host [L] first entry of layer l
    void *k, *v;       // device [sum_l G*cap[l], E] dt
    int owns;          // 1: k and v are this cache's allocation
    int n_seen;
    const struct CudaKVCache *parent;
    size_t bytes;      // bytes of k and v (the accounting figure)
} CudaKVCache;

void cuda_kvcache_init(CudaKVCache *c, int n_layers, int n_kv_heads, int head_dim, const int *cap, CudaDtype dt);
// A cache over caller-owned device memory k, v (cuda_kvcache_elems(...) elements each).
void cuda_kvcache_init_view(CudaKVCache *c, const CudaKVCache *parent, const int *cap, void *k, void *v);
size_t cuda_kvcache_elems(int n_layers, int n_kv_heads, int head_dim, const int *cap);
void cuda_kvcache_free(CudaKVCache *c);
// The device address of layer l, kv head 0 (heads follow every cap[l] entries).
void *cuda_kvcache_k(const CudaKVCache *c, int l);
void *cuda_kvcache_v(const CudaKVCache *c, int l);

// ---------------------------------------------------------------------------
// Forward pass: ForwardBatch's fields, over device caches.
typedef struct {
    int n_seqs;
    const int *n_new;        // [n_seqs] host
    const int *tokens;       // [sum n_new] host token ids
    const int *positions;    // NULL: sequence index
    const int *depth;        // NULL: all N
    CudaKVCache **caches;    // [n_seqs]
    LogitsMode logits_mode;
} CudaForwardBatch;

typedef struct {
    void *memory;            // device work space
    size_t capacity;         // bytes
    void *host_plan;         // pinned host plan buffer
    void *dev_plan;          // its device copy
    size_t plan_capacity;    // bytes of each
    double last_flops;       // as ForwardScratch
    // A forward whose launches repeat the previous call's (a decode step:
    // same rows, tiles and buffers; only the plan's contents differ) is
    // captured once as a CUDA graph and replayed (EARNEST_CUDA_GRAPHS=0: never).
    // The graph holds the model's and the caches' addresses: a scratch serves
    // one model.
    int graphs;              // 0: EARNEST_CUDA_GRAPHS not yet read; 1: off; 2: on
    cudaGraphExec_t graph;   // the captured forward
    void *graph_sig, *seen_sig; // launch signatures of the graph and of the last eager call
    size_t graph_sig_len, seen_sig_len;
    float *graph_logits;     // the graph's logits rows; copied to the caller's after each replay
    size_t graph_logits_cap; // floats
} CudaForwardScratch;
void cuda_forward_scratch_free(CudaForwardScratch *s);

// logits: device [rows, V] f32 (rows as model_forward). Returns 0, or -1 with e
// set on bad input (the same checks as model_forward). Asynchronous: the
// logits are ready when cm->cx.stream is.
int cuda_model_forward(float *logits, CudaModel *cm, const CudaForwardBatch *batch, CudaForwardScratch *s, Error *e);

// The cuBLAS rate at out [M, N] = a [M, K] b [N, K]^T in the model's dtype,
// GFLOP/s, median of reps (the ceiling the benchmarks quote).
double cuda_gemm_rate(CudaModel *cm, int M, int N, int K, int reps);

#ifdef __cplusplus
}
#endif

#endif
