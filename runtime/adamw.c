// adamw.c: see adamw.h.
#include "runtime/adamw.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

void adamw_config_default(AdamWConfig *c) {
    c->lr = 1e-3f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.01f;
    c->warmup_ratio = 0.02f;
    c->min_lr_ratio = 0.0f;
    c->grad_clip = 1.0f;
}

void adamw_init(AdamWState *s, const ModelConfig *c) {
    memset(s, 0, sizeof *s);
    s->n = model_param_count(c);
    s->memory = xcalloc(2 * s->n, sizeof(float));
    s->m = s->memory;
    s->v = s->memory + s->n;
    // Segments in the order model_alloc carves params_memory.
    size_t off = 0;
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        if (info.numel == 0) continue;
        AdamWSegment *sg = &s->seg[s->n_segs++];
        sg->off = off;
        sg->n = info.numel;
        sg->decay = info.ndim == 2; // weights decay; norms and biases do not
        sg->tensor = t;
        off += info.numel;
    }
    CHECK(off == s->n, "adamw_init: segments cover %zu of %zu floats", off, s->n);
}

void adamw_train_lora_only(AdamWState *s) {
    for (int k = 0; k < s->n_segs; k++) {
        AdamWSegment *sg = &s->seg[k];
        if (sg->tensor >= MODEL_FIRST_LORA_TENSOR) continue;
        if (sg->tensor == 0) sg->decay = 0; // embed_tokens: only the compression tokens' rows move
        else sg->frozen = 1;
    }
}

void adamw_free(AdamWState *s) {
    free(s->memory);
    memset(s, 0, sizeof *s);
}

float adamw_lr(const AdamWConfig *c, int64_t step, int64_t total_steps) {
    int64_t warmup = (int64_t)ceil((double)c->warmup_ratio * (double)total_steps);
    double lr = c->lr, lr_min = (double)c->lr * c->min_lr_ratio;
    if (step < warmup) return (float)(lr * (double)(step + 1) / (double)warmup);
    int64_t span = total_steps - warmup > 1 ? total_steps - warmup : 1;
    double progress = (double)(step - warmup) / (double)span;
    if (progress > 1.0) progress = 1.0;
    return (float)(lr_min + (lr - lr_min) * 0.5 * (1.0 + cos(M_PI * progress)));
}

enum { NORM_BLOCK = 4096 };

double grad_global_norm(const float *g, size_t n) {
    // Per-block sums in parallel (each block summed in order), then the block
    // sums in order: the same number whatever the thread count.
    size_t n_blocks = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    double *part = xmalloc((n_blocks ? n_blocks : 1) * sizeof(double));
    #pragma omp parallel for schedule(static)
    for (size_t b = 0; b < n_blocks; b++) {
        size_t i0 = b * NORM_BLOCK, i1 = i0 + NORM_BLOCK < n ? i0 + NORM_BLOCK : n;
        double acc = 0.0;
        for (size_t i = i0; i < i1; i++) acc += (double)g[i] * (double)g[i];
        part[b] = acc;
    }
    double total = 0.0;
    for (size_t b = 0; b < n_blocks; b++) total += part[b];
    free(part);
    return sqrt(total);
}

double adamw_step(AdamWState *s, float *params, const float *grads, float lr, const AdamWConfig *c) {
    double norm = grad_global_norm(grads, s->n);
    float gscale = 1.0f;
    if (c->grad_clip > 0.0f && norm > (double)c->grad_clip) gscale = (float)((double)c->grad_clip / norm);
    s->step++;
    // Bias corrections 1 - beta^t, in double (t may be large).
    float bc1 = (float)(1.0 - pow((double)c->beta1, (double)s->step));
    float bc2 = (float)(1.0 - pow((double)c->beta2, (double)s->step));
    for (int k = 0; k < s->n_segs; k++) {
        const AdamWSegment *sg = &s->seg[k];
        if (sg->frozen) continue;
        float wd = sg->decay ? c->weight_decay : 0.0f;
        float *p = params + sg->off, *m = s->m + sg->off, *v = s->v + sg->off;
        const float *g = grads + sg->off;
        #pragma omp parallel for schedule(static) if (sg->n > 65536)
        for (size_t i = 0; i < sg->n; i++) {
            float gi = g[i] * gscale;
            m[i] = c->beta1 * m[i] + (1.0f - c->beta1) * gi;
            v[i] = c->beta2 * v[i] + (1.0f - c->beta2) * gi * gi;
            float mhat = m[i] / bc1, vhat = v[i] / bc2;
            // decoupled decay first (as torch.optim.AdamW), then the Adam step
            p[i] -= lr * (wd * p[i] + mhat / (sqrtf(vhat) + c->eps));
        }
    }
    return norm;
}

// ---------------------------------------------------------------------------
// State on disk:
//   "EARNADAM" | u32 version (1) | u32 0 | u64 n | i64 step | f32 m[n] | f32 v[n] | u64 fnv1a(m, v)
// little-endian, as the machine writes it (x86-64/aarch64).

static const char ADAMW_MAGIC[8] = {'E', 'A', 'R', 'N', 'A', 'D', 'A', 'M'};
enum { ADAMW_VERSION = 1 };

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

int adamw_save(const AdamWState *s, const char *path, Error *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    uint32_t ver[2] = {ADAMW_VERSION, 0};
    uint64_t n = s->n;
    int64_t step = s->step;
    uint64_t sum = fnv1a(0xcbf29ce484222325ull, s->memory, 2 * s->n * sizeof(float));
    int ok = fwrite(ADAMW_MAGIC, 1, 8, af.f) == 8 && fwrite(ver, sizeof ver, 1, af.f) == 1 &&
             fwrite(&n, sizeof n, 1, af.f) == 1 && fwrite(&step, sizeof step, 1, af.f) == 1 &&
             fwrite(s->memory, sizeof(float), 2 * s->n, af.f) == 2 * s->n && fwrite(&sum, sizeof sum, 1, af.f) == 1;
    if (!ok) {
        int err = errno;
        atomic_abort(&af);
        return err_set(e, "%s: cannot write the optimizer state: %s", path, strerror(err));
    }
    return atomic_commit(&af, e);
}

int adamw_load(AdamWState *s, const char *path, Error *e) {
    char *data = NULL;
    size_t len = 0;
    if (file_read_all(path, &data, &len, e)) return -1;
    const size_t header = 8 + 8 + 8 + 8;
    int rc = -1;
    uint32_t ver[2];
    uint64_t n, sum, want_sum;
    int64_t step;
    if (len < header || memcmp(data, ADAMW_MAGIC, 8) != 0) {
        err_set(e, "%s: not an earnest optimizer state (bad magic)", path);
        goto done;
    }
    memcpy(ver, data + 8, sizeof ver);
    memcpy(&n, data + 16, sizeof n);
    memcpy(&step, data + 24, sizeof step);
    if (ver[0] != ADAMW_VERSION) {
        err_set(e, "%s: optimizer state version %u, this build reads version %d", path, ver[0], ADAMW_VERSION);
        goto done;
    }
    if (n != (uint64_t)s->n) {
        err_set(e, "%s: optimizer state holds %llu parameters, the model has %zu", path, (unsigned long long)n, s->n);
        goto done;
    }
    size_t body = 2 * s->n * sizeof(float);
    if (len != header + body + sizeof sum) {
        err_set(e, "%s: optimizer state is %zu bytes, expected %zu (truncated or corrupt)", path, len,
                header + body + sizeof sum);
        goto done;
    }
    if (step < 0) {
        err_set(e, "%s: optimizer state: negative step %lld", path, (long long)step);
        goto done;
    }
    memcpy(&sum, data + header + body, sizeof sum);
    want_sum = fnv1a(0xcbf29ce484222325ull, data + header, body);
    if (sum != want_sum) {
        err_set(e, "%s: optimizer state checksum mismatch (corrupt file)", path);
        goto done;
    }
    memcpy(s->memory, data + header, body);
    s->step = step;
    rc = 0;
done:
    free(data);
    return rc;
}
