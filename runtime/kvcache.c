// kvcache.c: see kvcache.h.
#include "runtime/kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/util.h"

void kvcache_init(KVCache *c, int n_layers, int n_kv_heads, int head_dim, const int *cap) {
    memset(c, 0, sizeof *c);
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->cap = xmalloc((size_t)n_layers * sizeof(int));
    c->len = xcalloc((size_t)n_layers * (size_t)n_kv_heads, sizeof(int));
    c->offset = xmalloc((size_t)n_layers * sizeof(size_t));
    size_t entries = 0;
    for (int l = 0; l < n_layers; l++) {
        CHECK(cap[l] >= 0, "negative KV capacity");
        c->cap[l] = cap[l];
        c->offset[l] = entries;
        entries += (size_t)n_kv_heads * (size_t)cap[l];
    }
    size_t floats = entries * (size_t)head_dim;
    c->k = xmalloc(floats * sizeof(float));
    c->v = xmalloc(floats * sizeof(float));
    c->tok = xmalloc(entries * sizeof(int32_t));
    c->bytes = 2 * floats * sizeof(float);
}

void kvcache_init_child(KVCache *c, const KVCache *parent, const int *cap) {
    kvcache_init(c, parent->n_layers, parent->n_kv_heads, parent->head_dim, cap);
    c->parent = parent;
    c->n_seen = parent->n_seen;
}

void kvcache_free(KVCache *c) {
    free(c->cap);
    free(c->len);
    free(c->offset);
    free(c->k);
    free(c->v);
    free(c->tok);
    memset(c, 0, sizeof *c);
}

void kvcache_reset(KVCache *c) {
    memset(c->len, 0, (size_t)c->n_layers * (size_t)c->n_kv_heads * sizeof(int));
    c->n_seen = c->parent ? c->parent->n_seen : 0;
}

void kvcache_copy(KVCache *dst, const KVCache *src) {
    CHECK(dst->n_layers == src->n_layers && dst->n_kv_heads == src->n_kv_heads &&
              dst->head_dim == src->head_dim && dst->parent == src->parent,
          "kvcache_copy: caches of different shape");
    size_t E = (size_t)src->head_dim;
    for (int l = 0; l < src->n_layers; l++) {
        for (int g = 0; g < src->n_kv_heads; g++) {
            int n = src->len[l * src->n_kv_heads + g];
            CHECK(n <= dst->cap[l], "kvcache_copy: destination too small");
            memcpy(kvcache_k(dst, l, g), kvcache_k(src, l, g), (size_t)n * E * sizeof(float));
            memcpy(kvcache_v(dst, l, g), kvcache_v(src, l, g), (size_t)n * E * sizeof(float));
            memcpy(kvcache_tok(dst, l, g), kvcache_tok(src, l, g), (size_t)n * sizeof(int32_t));
            dst->len[l * dst->n_kv_heads + g] = n;
        }
    }
    dst->n_seen = src->n_seen;
}

void kvcache_gather(KVCache *dst, const KVCache *src, const int *idx, int n) {
    CHECK(dst != src && dst->n_layers == src->n_layers && dst->n_kv_heads == src->n_kv_heads &&
              dst->head_dim == src->head_dim && dst->parent == src->parent,
          "kvcache_gather: caches of different shape");
    const size_t E = (size_t)src->head_dim;
    const int base = src->parent ? src->parent->n_seen : 0;
    for (int l = 0; l < src->n_layers; l++) {
        CHECK(n <= dst->cap[l], "kvcache_gather: destination too small");
        for (int g = 0; g < src->n_kv_heads; g++) {
            int have = src->len[l * src->n_kv_heads + g];
            for (int i = 0; i < n; i++) {
                CHECK(idx[i] >= 0 && idx[i] < have, "kvcache_gather: entry %d of %d", idx[i], have);
                memcpy(kvcache_k(dst, l, g) + (size_t)i * E, kvcache_k(src, l, g) + (size_t)idx[i] * E, E * sizeof(float));
                memcpy(kvcache_v(dst, l, g) + (size_t)i * E, kvcache_v(src, l, g) + (size_t)idx[i] * E, E * sizeof(float));
                kvcache_tok(dst, l, g)[i] = base + i;
            }
            dst->len[l * dst->n_kv_heads + g] = n;
        }
    }
    dst->n_seen = base + n;
}

void kvcache_keep_tokens(KVCache *c, const uint8_t *keep, int n) {
    const int L = c->n_layers, G = c->n_kv_heads;
    const size_t E = (size_t)c->head_dim;
    CHECK(c->parent == NULL, "kvcache_keep_tokens: a prompt cache without parent");
    int kept_n = 0;
    for (int j = 0; j < n; j++) kept_n += keep[j] != 0;
    int *cap = xmalloc((size_t)L * sizeof(int));
    for (int l = 0; l < L; l++) cap[l] = kept_n;
    KVCache kept;
    kvcache_init(&kept, L, G, c->head_dim, cap);
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++) {
            CHECK(c->len[l * G + g] == n, "kvcache_keep_tokens: layer %d head %d holds %d entries, not the prompt's %d",
                  l, g, c->len[l * G + g], n);
            const int32_t *tok = kvcache_tok(c, l, g);
            int at = 0;
            for (int j = 0; j < n; j++) {
                CHECK(tok[j] >= 0 && tok[j] < n, "kvcache_keep_tokens: entry of token %d in a prompt of %d", tok[j], n);
                if (!keep[tok[j]]) continue;
                memcpy(kvcache_k(&kept, l, g) + (size_t)at * E, kvcache_k(c, l, g) + (size_t)j * E, E * sizeof(float));
                memcpy(kvcache_v(&kept, l, g) + (size_t)at * E, kvcache_v(c, l, g) + (size_t)j * E, E * sizeof(float));
                kvcache_tok(&kept, l, g)[at++] = tok[j];
            }
            kept.len[l * G + g] = at;
        }
    kept.n_seen = c->n_seen;
    kvcache_free(c);
    *c = kept;
    free(cap);
}
