// kvcache_cuda.cu: the device KV cache (model_cuda.h), kvcache.c's layout.
#include "runtime/cuda/model_cuda.h"

#include <string.h>

extern "C" size_t cuda_kvcache_elems(int n_layers, int n_kv_heads, int head_dim, const int *cap) {
    size_t entries = 0;
    for (int l = 0; l < n_layers; l++) entries += (size_t)n_kv_heads * (size_t)cap[l];
    return entries * (size_t)head_dim;
}

static void kv_layout(CudaKVCache *c, int n_layers, int n_kv_heads, int head_dim, const int *cap, CudaDtype dt) {
    memset(c, 0, sizeof *c);
    c->n_layers = n_layers;
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->dtype = dt;
    c->cap = (int *)xmalloc((size_t)n_layers * sizeof(int));
    c->len = (int *)xcalloc((size_t)n_layers * (size_t)n_kv_heads, sizeof(int));
    c->offset = (size_t *)xmalloc((size_t)n_layers * sizeof(size_t));
    size_t entries = 0;
    for (int l = 0; l < n_layers; l++) {
        CHECK(cap[l] >= 0, "negative KV capacity");
        c->cap[l] = cap[l];
        c->offset[l] = entries;
        entries += (size_t)n_kv_heads * (size_t)cap[l];
    }
    c->bytes = 2 * entries * (size_t)head_dim * cuda_dtype_size(dt);
}

extern "C" void cuda_kvcache_init(CudaKVCache *c, int n_layers, int n_kv_heads, int head_dim, const int *cap,
                                  CudaDtype dt) {
    kv_layout(c, n_layers, n_kv_heads, head_dim, cap, dt);
    c->k = cuda_xmalloc(c->bytes / 2);
    c->v = cuda_xmalloc(c->bytes / 2);
    c->owns = 1;
}

extern "C" void cuda_kvcache_init_view(CudaKVCache *c, const CudaKVCache *parent, const int *cap, void *k, void *v) {
    kv_layout(c, parent->n_layers, parent->n_kv_heads, parent->head_dim, cap, parent->dtype);
    c->k = k;
    c->v = v;
    c->parent = parent;
    c->n_seen = parent->n_seen;
}

extern "C" void cuda_kvcache_free(CudaKVCache *c) {
    if (c->owns) {
        cuda_xfree(c->k);
        cuda_xfree(c->v);
    }
    free(c->cap);
    free(c->len);
    free(c->offset);
    memset(c, 0, sizeof *c);
}

extern "C" void *cuda_kvcache_k(const CudaKVCache *c, int l) {
    return (char *)c->k + c->offset[l] * (size_t)c->head_dim * cuda_dtype_size(c->dtype);
}

extern "C" void *cuda_kvcache_v(const CudaKVCache *c, int l) {
    return (char *)c->v + c->offset[l] * (size_t)c->head_dim * cuda_dtype_size(c->dtype);
}
