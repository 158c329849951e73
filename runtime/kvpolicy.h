// kvpolicy.h: training-free KV-cache policies ("presses" in kvpress terms),
// applied once, at prefill, to the prompt KV of a full (finetune) model.
//
//   streaming  StreamingLLM: the first `sink` (4) tokens + the most recent ones;
//              `rerotate=1` re-rotates the kept keys to the contiguous positions
//              0..C-1 (RoPE undone at the original position, applied at the new
//              one) and decoding continues at positions C, C+1, ... (the
//              paper's "positions within the cache"); default 0: original positions
//   h2o        H2O: heavy hitters by accumulated attention of the prompt's
//              queries, each key's sum divided by the number of queries that
//              see it (n - j under causal attention), + the `recent` last
//              tokens (default: half the budget)
//   snapkv     SnapKV: per query head, the attention of the last w queries
//              (the observation window, `window` 32) summed per key over the
//              keys before the window, 1-D pooling (`kernel` 5, `pool` avg|max),
//              then top-(C - w) + the window
//   pyramidkv  PyramidKV: SnapKV scoring; per-layer budgets falling
//              arithmetically from the first layer to the last (`beta` 20)
//   tova       TOVA: the head-mean (over every query head of the layer)
//              attention of the last prompt row; top-C, one kept set shared by
//              all KV heads of a layer
//   knorm      the C keys of smallest L2 norm (floor)
//   random     C keys drawn uniformly (`seed`) (floor)
//   none       keeps everything (the ordinary path)
//
// Spec: NAME[:key=value,...], e.g. "snapkv:budget=0.1,window=32,pool=max".
// The budget is per layer and per KV head, counted in prompt entries (sinks,
// windows and recent tokens included): `budget=R` a fraction of the prompt,
// R in (0, 1], C = ceil(R * n) (default 0.5); or `tokens=N`, C = N; or
// `ratio=R`, kvpress's compression_ratio (the fraction removed, [0, 1)), the
// same as budget=1-R. A budget of the whole prompt or more keeps all (C = min(C, n)).
//
// How and when (see beam.c): the prompt is prefilled as without a policy (its
// own queries attend to the whole prompt; kvpress's presses, which compress a
// layer's cache after that layer's prefill attention, give the same), then
// each prompt cache is compressed: per layer l and KV head g the kept entries
// keep their keys (post-RoPE, at their original positions) and their token
// indices, in token order, and the cache is reallocated to exactly the kept
// entries, so KVCache.bytes (what beam search reports) is the bytes kept.
// Decode appends normally (positions continue after the prompt).
//
// Attention scores come from a prefill observer: the forward pass's AttnHook,
// marked concurrent (ForwardBatch.attn_hook_concurrent), so the attention loop
// stays parallel; each (layer, sequence, query head) call adds, per key, the
// probabilities of the query rows the policy reads: every row (h2o), the last
// w rows (snapkv, pyramidkv), the last row (tova). streaming, knorm and random
// need no attention and prefill without the observer; `none` changes nothing.
//
// GQA: h2o, snapkv and pyramidkv score per query head and average the scores
// of the query heads of a KV group (snapkv: after pooling, as kvpress does).
// Ties between equal scores keep the earlier token.
#ifndef EARNEST_KVPOLICY_H
#define EARNEST_KVPOLICY_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/kvcache.h"
#include "runtime/util.h"

typedef enum {
    KVP_NONE = 0,
    KVP_STREAMING,
    KVP_H2O,
    KVP_SNAPKV,
    KVP_PYRAMIDKV,
    KVP_TOVA,
    KVP_KNORM,
    KVP_RANDOM,
    KVP_COUNT,
} KVPolicyKind;

typedef enum { KVP_POOL_AVG = 0, KVP_POOL_MAX = 1 } KVPool;

typedef struct {
    KVPolicyKind kind;
    double budget;   // fraction of the prompt kept, (0, 1]; used when tokens == 0
    int tokens;      // entries kept per layer and KV head; 0: use budget
    int sink;        // streaming: first tokens always kept (4)
    int recent;      // h2o: last tokens always kept; -1: half the budget
    int window;      // snapkv, pyramidkv: observation window w (32)
    int kernel;      // snapkv, pyramidkv: pooling kernel, odd (5)
    KVPool pool;     // snapkv, pyramidkv: avg (default) or max
    double beta;     // pyramidkv: >= 1 (20)
    uint64_t seed;   // random (0)
    int rerotate;    // streaming: 1 re-rotates the kept keys to positions 0..C-1 (0)
} KVPolicy;

// The defaults of `kind`.
void kvpolicy_default(KVPolicy *p, KVPolicyKind kind);
// Parses a spec (above). Errors name the policy, key or value at fault:
// unknown policy, malformed key=value, unknown key for the policy, a value
// that is not a number or is out of range, both budget and tokens.
int kvpolicy_parse(KVPolicy *p, const char *spec, Error *e);
const char *kvpolicy_name(KVPolicyKind kind);
// The spec with every parameter of the policy spelled out (defaults included).
void kvpolicy_format(char *out, size_t n, const KVPolicy *p);

// The policy's parameters as (key, value) pairs, for the eval JSON; a value is
// a number unless str is set. Returns the count (<= KVPOLICY_MAX_PARAMS).
#define KVPOLICY_MAX_PARAMS 8
typedef struct {
    const char *key;
    double num;
    const char *str;
} KVPolicyParam;
int kvpolicy_params(KVPolicyParam *out, const KVPolicy *p);

// ---------------------------------------------------------------------------
// Budgets

// C: prompt entries kept per layer and KV head for a prompt of n tokens, in [1, n].
int kvpolicy_budget(const KVPolicy *p, int n);
// The effective SnapKV/PyramidKV window for a kept count C < n: the window is
// kept whole, so it may take at most half the budget: min(w, max(1, C/2)).
int kvpolicy_window(int w, int C);
// Query rows the observer sums (the last ones), for a prompt of n tokens:
// 0 when the policy reads no attention or keeps everything.
int kvpolicy_obs_rows(const KVPolicy *p, int n);
// PyramidKV's kept count of layer l of L, from the uniform C < n and the
// effective window w: A = C - w, lo = A / beta, hi = 2A - lo; layer l keeps
// w + round(hi - l (hi - lo) / (L - 1)) (so the layers keep L*C in all, up to
// rounding); when hi > n - w (a short prompt: the first layer's share is more
// than the keys outside the window) every layer keeps C (the uniform fallback).
int kvpolicy_pyramid_budget(int n, int C, int w, double beta, int layer, int n_layers);
int kvpolicy_pyramid_budget_ref(int n, int C, int w, double beta, int layer, int n_layers);

// ---------------------------------------------------------------------------
// Selections: one (layer, KV head) of a prompt of n tokens, C < n entries kept.
// keep [n] receives 1 for a kept key, 0 otherwise (exactly C ones). Each has a
// plain-loop twin *_ref (repeated arg-max, explicit window sums) with the same
// signature; the tests check one against the other and both against the
// published rules written out on hand-built matrices.
//
// acc [hq, n] is what the observer accumulated for hq query heads: per key j,
// the sum of the attention probabilities of the query rows the policy reads.

// First min(sink, C) tokens + the C - min(sink, C) last ones.
void kvsel_streaming(uint8_t *keep, int n, int C, int sink);
void kvsel_streaming_ref(uint8_t *keep, int n, int C, int sink);
// acc over every row; r = min(recent, C) last tokens + top-(C - r) of the
// others by mean over the hq heads of acc[h][j] / (n - j).
void kvsel_h2o(uint8_t *keep, const double *acc, int hq, int n, int C, int recent);
void kvsel_h2o_ref(uint8_t *keep, const double *acc, int hq, int n, int C, int recent);
// acc over the last w rows (w the effective window, 1 <= w <= C); scores of
// keys j < n - w: per head, pool (avg: the kernel's mean with zero padding,
// i.e. divided by `kernel` also at the edges, PyTorch's avg_pool1d with
// padding kernel/2; max: the max over the in-range neighbours), then the mean
// over the hq heads; top-(C - w) + the w window keys.
void kvsel_snapkv(uint8_t *keep, const double *acc, int hq, int n, int C, int w, int kernel, KVPool pool);
void kvsel_snapkv_ref(uint8_t *keep, const double *acc, int hq, int n, int C, int w, int kernel, KVPool pool);
// acc [H, n] the last row of every query head of the layer; top-C of the head mean.
void kvsel_tova(uint8_t *keep, const double *acc, int H, int n, int C);
void kvsel_tova_ref(uint8_t *keep, const double *acc, int H, int n, int C);
// k [n, E] the head's keys: the C of smallest L2 norm.
void kvsel_knorm(uint8_t *keep, const float *k, int n, int E, int C);
void kvsel_knorm_ref(uint8_t *keep, const float *k, int n, int E, int C);
// The C keys with the smallest of n uniform draws from Rng(seed), drawn in key order.
void kvsel_random(uint8_t *keep, int n, int C, uint64_t seed);
void kvsel_random_ref(uint8_t *keep, int n, int C, uint64_t seed);

// ---------------------------------------------------------------------------
// Prefill: the observer and the compression

// Accumulators of one prefill batch: per sequence b a block acc [L, H, n_b]
// (zeroed by kvobs_init). Pass kvobs_hook and the KVObserver as the forward's
// attn_hook / attn_hook_ctx with attn_hook_concurrent = 1 (calls for different
// (sequence, head) may run at once; each writes its own block row).
typedef struct {
    const KVPolicy *p;
    int n_seqs, n_layers, n_heads;
    int *n;          // [n_seqs] prompt lengths
    int *first_row;  // [n_seqs] first query row summed (n - kvpolicy_obs_rows)
    size_t *at;      // [n_seqs] offset of each block in acc
    double *acc;
} KVObserver;

// Whether the policy needs the observer (it reads attention and something is dropped in some prompt).
int kvpolicy_needs_attention(const KVPolicy *p, int n_seqs, const int *n);
void kvobs_init(KVObserver *o, const KVPolicy *p, int n_seqs, const int *n, int n_layers, int n_heads);
void kvobs_free(KVObserver *o);
// The AttnHook (model.h): adds probs rows whose q_tok >= first_row[seq] into acc.
void kvobs_hook(void *ctx, int layer, int seq, int head, int n_q, const int32_t *q_tok, int n_k,
                const int32_t *k_tok, const float *probs);

// Compresses a prefilled prompt cache c (every layer and head holding the n
// prompt tokens in order) in place: per layer and KV head the policy's kept
// set, then a reallocation to the kept entries (c->bytes = bytes kept).
// acc: this sequence's observer block [L, H, n] (NULL when the policy reads no
// attention); n_heads: query heads of the model.
void kvpolicy_compress(KVCache *c, const KVPolicy *p, const double *acc, int n, int n_heads);


// StreamingLLM's re-rotation (rerotate=1), after kvpolicy_compress: every
// layer and KV head must hold the same C entries (streaming keeps the same set
// everywhere). Entry j, whose key was rotated at its original position tok[j],
// is rotated by the angle difference to position j (per frequency i:
// j*inv_freq[i] - tok[j]*inv_freq[i], each product in float as rope_forward
// forms it, so the result is rope_forward of the raw key at j up to rounding);
// tok[j] becomes j and n_seen becomes C, so decoding continues at position C.
// Values are not rotated. inv_freq [head_dim/2]: Model.rope_inv_freq.
void kvpolicy_rerotate(KVCache *c, const float *inv_freq);
// The plain twin: per entry, rope_backward at tok[j] (undo) then rope_forward at j.
void kvpolicy_rerotate_ref(KVCache *c, const float *inv_freq);

#endif
