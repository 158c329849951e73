// kvcache.h: the key/value cache of one sequence.
//
// Per layer and per KV head the cache keeps its own list of entries: the key
// and value vectors and the sequence index of the token they came from. A
// layer's capacity is set at init, so an EARN model gives the layers above k
// room for registers and generated tokens only, and the allocation is exactly
// what the plan needs. KV policies may later keep different subsets per head.
//
// Beam search: a cache may name a read-only `parent` (the prompt's cache,
// computed once); attention sees the parent's entries of a layer/head first,
// then its own. Beams then own only their generated tokens' KV.
#ifndef EARNEST_KVCACHE_H
#define EARNEST_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct KVCache {
    int n_layers, n_kv_heads, head_dim;
    int *cap;          // [L] entries per head in layer l
    int *len;          // [L * G] entries held by layer l, kv head g
    size_t *offset;    // [L] first entry of layer l (entries of its G heads follow one another)
    float *k;          // [sum_l G*cap[l], E]
    float *v;          // [sum_l G*cap[l], E]
    int32_t *tok;      // [sum_l G*cap[l]] sequence index of each entry
    int n_seen;        // tokens fed so far (the next token's sequence index, counting the parent's)
    const struct KVCache *parent; // shared read-only prefix, or NULL
    size_t bytes;      // bytes allocated for k and v (the accounting figure)
} KVCache;

// cap: [n_layers] capacity per layer (entries per kv head).
void kvcache_init(KVCache *c, int n_layers, int n_kv_heads, int head_dim, const int *cap);
// A cache whose entries continue `parent` (which must outlive it).
void kvcache_init_child(KVCache *c, const KVCache *parent, const int *cap);
void kvcache_free(KVCache *c);
void kvcache_reset(KVCache *c); // empty, keeps the allocation and the parent
// Copies the entries (and n_seen) of src into dst (same shape, same parent); for beam reordering.
void kvcache_copy(KVCache *dst, const KVCache *src);

// Speculative beam search keeps the accepted part of a drafted tree: dst's own
// entries become src's own entries idx[0..n) (indices into src's own entries,
// which must be the same tokens in every layer and KV head, as the caches of
// generated tokens are), in that order; their sequence indices are renumbered
// base, base + 1, ... with base = the parent's n_seen (0 without one), and
// dst->n_seen = base + n. dst and src: same shape, same parent, not the same cache.
void kvcache_gather(KVCache *dst, const KVCache *src, const int *idx, int n);

// A prompt cache (no parent) whose every layer and KV head holds all n tokens
// of its prompt keeps only the tokens with keep[j] = 1 (keep [n], by sequence
// index), at their original sequence indices; the allocation shrinks to them
// (AnLLM: the instruction segment and the anchors). n_seen is unchanged.
void kvcache_keep_tokens(KVCache *c, const uint8_t *keep, int n);

static inline float *kvcache_k(const KVCache *c, int l, int g) {
    return c->k + (c->offset[l] + (size_t)g * (size_t)c->cap[l]) * (size_t)c->head_dim;
}
static inline float *kvcache_v(const KVCache *c, int l, int g) {
    return c->v + (c->offset[l] + (size_t)g * (size_t)c->cap[l]) * (size_t)c->head_dim;
}
static inline int32_t *kvcache_tok(const KVCache *c, int l, int g) {
    return c->tok + c->offset[l] + (size_t)g * (size_t)c->cap[l];
}

#endif
