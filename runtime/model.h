// model.h: the Llama-family decoder (RMSNorm, RoPE, GQA, SwiGLU; Qwen2 biases;
// optional tied embeddings), its parameters, and the forward pass.
//
// Weight layout follows Hugging Face: a Linear(in, out) weight is [out, in]
// row-major, so y = x W^T, which is one cblas_sgemm with W transposed.
#ifndef EARNEST_MODEL_H
#define EARNEST_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/config.h"
#include "runtime/kvcache.h"
#include "runtime/util.h"

// Parameter tensors (shapes per layer stack; L layers, D dim, F hidden_dim,
// H heads, G kv heads, E head_dim, V vocab). All carved from one allocation.
typedef struct {
    float *embed;      // [V, D]       model.embed_tokens.weight
    float *attn_norm;  // [L, D]       model.layers.i.input_layernorm.weight
    float *wq;         // [L, H*E, D]  ...self_attn.q_proj.weight
    float *wk;         // [L, G*E, D]  ...self_attn.k_proj.weight
    float *wv;         // [L, G*E, D]  ...self_attn.v_proj.weight
    float *bq;         // [L, H*E]     ...self_attn.q_proj.bias (Qwen2; NULL otherwise)
    float *bk;         // [L, G*E]
    float *bv;         // [L, G*E]
    float *wo;         // [L, D, H*E]  ...self_attn.o_proj.weight
    float *mlp_norm;   // [L, D]       ...post_attention_layernorm.weight
    float *w_gate;     // [L, F, D]    ...mlp.gate_proj.weight
    float *w_up;       // [L, F, D]    ...mlp.up_proj.weight
    float *w_down;     // [L, D, F]    ...mlp.down_proj.weight
    float *final_norm; // [D]          model.norm.weight
    float *lm_head;    // [V, D]       lm_head.weight (== embed when tied)
    // LoRA adapters (compress500x only; NULL when lora_rank r = 0), PEFT's names and
    // layout: lora_A [r, in], lora_B [out, r]; the adapted projection of a flagged
    // row is y = x W^T + (alpha / r) * (x A^T) B^T (ops.h lora_forward).
    float *lora_qa;    // [L, r, D]    model.layers.i.self_attn.q_proj.lora_A.weight
    float *lora_qb;    // [L, H*E, r]  ...self_attn.q_proj.lora_B.weight
    float *lora_ka;    // [L, r, D]    ...self_attn.k_proj.lora_A.weight
    float *lora_kb;    // [L, G*E, r]  ...self_attn.k_proj.lora_B.weight
    float *lora_va;    // [L, r, D]    ...self_attn.v_proj.lora_A.weight
    float *lora_vb;    // [L, G*E, r]  ...self_attn.v_proj.lora_B.weight
    float *lora_oa;    // [L, r, H*E]  ...self_attn.o_proj.lora_A.weight
    float *lora_ob;    // [L, D, r]    ...self_attn.o_proj.lora_B.weight
} ModelParams;

#define MODEL_N_PARAM_TENSORS 23
#define MODEL_FIRST_LORA_TENSOR 15 // tensors 15..22 are the LoRA adapters (after every base tensor)

typedef struct {
    const char *hf_name;   // HF name; "%d" stands for the layer index in per-layer tensors
    int per_layer;         // 1: one HF tensor per layer
    int ndim;              // of one HF tensor
    size_t shape[2];       // of one HF tensor
    size_t numel;          // of the whole stack (0: absent in this config)
} ParamTensorInfo;

// Describes tensor t (0..MODEL_N_PARAM_TENSORS-1, in ModelParams order) for config c.
void model_param_info(const ModelConfig *c, int t, ParamTensorInfo *info);
float **model_param_slot(ModelParams *p, int t);
size_t model_param_count(const ModelConfig *c); // floats in the one allocation

typedef struct {
    ModelConfig config;
    ModelParams params;
    float *params_memory; // the one allocation
    size_t n_params;      // floats in params_memory
    float *rope_inv_freq; // [E/2] theta^(-2i/E)
    int allow_long;       // 1: positions may reach beyond max_position_embeddings (the caller warned)
} Model;

// allow: let positions run beyond max_position_embeddings (model_forward and
// train_forward refuse them otherwise); prints a warning naming `verb` once.
void model_allow_long(Model *m, int allow, const char *verb);

// Allocates parameters for `c` (zeroed); the config must be valid.
void model_alloc(Model *m, const ModelConfig *c);
// Random init for tests and tiny models: N(0, std) weights, norms = 1, biases N(0, std).
void model_init_random(Model *m, const ModelConfig *c, uint64_t seed, float std);
void model_free(Model *m);
// A copy of `in` with new_vocab >= in's vocab_size tokens, ids 0..V0-1 being the
// old ones: every existing tensor is kept as it is, and the new embedding (and
// untied lm_head) rows are N(0, s), s the RMS of the existing rows, so new
// tokens start at the scale of the old ones. `out` is allocated here.
void model_grow_vocab(Model *out, const Model *in, int new_vocab, uint64_t seed);
// LoRA's scale alpha / r (0 without adapters).
static inline float model_lora_scale(const ModelConfig *c) {
    return c->lora_rank > 0 ? c->lora_alpha / (float)c->lora_rank : 0.0f;
}
// LoRA's initialisation (as PEFT): every lora_A ~ U(-1/sqrt(in), 1/sqrt(in)),
// every lora_B = 0, so the adapted model starts as the base model exactly.
void model_lora_init(Model *m, uint64_t seed);
// compress500x's starting model: out = in (a model without adapters, every
// base tensor copied exactly) plus rank-r adapters initialised by
// model_lora_init; out->config is in's with lora_rank = r, lora_alpha = alpha.
void model_add_lora(Model *out, const Model *in, int r, float alpha, uint64_t seed);
// SkipLayers: out gets in's first m layers (1 <= m <= N), its embeddings, final
// norm and head, exactly; out->config is in's with n_layers = m. Per-layer
// tensors are [N, ...] blocks, so the kept part is each one's first m slices.
void model_keep_layers(Model *out, const Model *in, int m);

// ---------------------------------------------------------------------------
// Forward pass over a batch of sequences.
//
// Each sequence b brings n_new[b] new tokens that extend its KV cache caches[b]
// (which already holds the earlier tokens, or is empty for a prefill). Prefill
// of several sequences of different lengths and incremental decode are the
// same call. Tokens of all sequences are packed one after another.
//
// The layer plan (EARN and friends): depth[i] is the number of layers token i
// is computed in: it passes through layers 0..depth[i]-1 and its key/value
// enters the cache of those layers only; its hidden state is dropped after.
// depth = N everywhere is the ordinary model; EARN gives prompt tokens depth k
// and registers and generated tokens depth N. Logits exist only for tokens of
// depth N.
//
// Attention: a new token attends to every cache entry of its layer that came
// from an earlier call, and to the new tokens of its own sequence that precede
// it in order (causal), restricted by `mask` when given.
typedef enum {
    LOGITS_NONE = 0,
    LOGITS_LAST = 1, // one row per sequence: its last new token (must have depth N)
    LOGITS_ALL = 2,  // one row per new token; rows of tokens with depth < N are NaN
} LogitsMode;

// Called once per (layer, sequence, head) with the post-softmax attention of
// the tokens computed in that layer: probs [n_q, n_k] row-major, q_tok[i] and
// k_tok[j] the sequence indices (0 = first token ever fed to the cache) of
// the query and key. Keys a query cannot see have probability 0.
typedef void (*AttnHook)(void *ctx, int layer, int seq, int head, int n_q, const int32_t *q_tok,
                         int n_k, const int32_t *k_tok, const float *probs);

typedef struct {
    int n_seqs;
    const int *n_new;        // [n_seqs]
    const int *tokens;       // [sum n_new] token ids
    const int *positions;    // [sum n_new] RoPE positions; NULL: sequence index (cache n_seen + i)
    const int *depth;        // [sum n_new] layers each token is computed in; NULL: all N
    const uint8_t *const *mask; // NULL, or per sequence NULL or [n_new, n_new]: mask[i*n+j] = 1
                             // lets new token i see new token j (j <= i still required)
    const uint8_t *lora;     // NULL, or [sum n_new]: 1 = the token's q/k/v/o projections add the LoRA
                             // term (compress500x's prompt and compression tokens); needs lora_rank > 0
    KVCache **caches;        // [n_seqs], one per sequence (may share a read-only parent)
    LogitsMode logits_mode;
    AttnHook attn_hook;      // optional; a hooked call runs each (sequence, head) as one block of all its rows
    void *attn_hook_ctx;
    int attn_hook_concurrent; // 1: the hook may run for different (sequence, head) at once (it writes
                              // per-(sequence, head) state only), so attention stays parallel
} ForwardBatch;

// The thread count of the fused small-batch layer (at most 8 rows: decode).
// Its threads meet at four barriers per layer, which on idle cores costs
// nothing (2 threads: 1.0-1.2 ms per batch-1 step of the small preset, 1
// thread: 1.7) and on oversubscribed cores costs a scheduler slice each (a
// peer descheduled at a barrier: 10x slower). So the forward times its fused
// layers, keeps the faster of one thread and all threads, and re-tries the
// other at calls spaced 8, 16, ... 1,024 apart. Both give the same bits.
typedef struct {
    int fixed;          // > 0: always min(fixed, threads) (tests); 0: chosen by timing
    double layer_s[2];  // seconds per fused layer: [0] one thread, [1] all threads
    int measured[2];    // samples behind layer_s
    int best;           // 0 or 1
    long calls, next_try;
    int interval;
} FusedThreads;
// The thread count for a call's fused layers (1 or max_threads): the best so
// far, or the other one when its re-try is due; each is measured first.
int fused_threads_pick(FusedThreads *f, int max_threads);
// Books a call's seconds per fused layer on n_threads. The best choice's
// figure is a running average (0.8 old + 0.2 new); a re-try's replaces the
// other's, and wins when faster (re-tries again 8 calls later), else the next
// re-try waits twice as long (at most 1,024 calls).
void fused_threads_update(FusedThreads *f, int n_threads, int max_threads, double layer_s);

// Scratch space for one forward call; grows as needed, reused across calls.
typedef struct {
    float *memory;
    size_t capacity;   // floats
    double last_flops; // multiply-adds x2 done by the last call (matrix products and attention)
    FusedThreads fused;
} ForwardScratch;
void forward_scratch_free(ForwardScratch *s);

// logits: [rows, V] with rows = n_seqs (LOGITS_LAST) or sum n_new (LOGITS_ALL).
// Returns 0, or -1 with e set on bad input (token id out of range, cache full, ...).
int model_forward(float *logits, Model *m, const ForwardBatch *batch, ForwardScratch *s, Error *e);

// The checks model_forward makes on sequence b of a batch: its n_new tokens
// (tokens, positions, depth start at its first token; positions and depth may
// be NULL), against a cache with n_seen tokens, lengths len [L * G] and
// capacities cap [L]. Shared with the GPU runtime (runtime/cuda/).
int model_forward_check_seq(const ModelConfig *c, int allow_long, LogitsMode mode, int b, int n_new,
                            const int *tokens, const int *positions, const int *depth, int n_seen, const int *len,
                            const int *cap, Error *e);

#endif
