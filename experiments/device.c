// device.c: see device.h.
#include "experiments/device.h"

#include <cblas.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#ifdef EARNEST_HAVE_CUDA
#include "runtime/cuda/beam_cuda.h"
#endif

#include "runtime/config.h"
#include "runtime/plan.h"
#include "runtime/sha256.h"

int device_select(Device *d, const char *name, Error *e) {
    if (!strcmp(name, "cpu")) {
        *d = DEVICE_CPU;
        return 0;
    }
    if (!strcmp(name, "cuda")) {
#ifdef EARNEST_HAVE_CUDA
        int n; // a CUDA build on a machine without a usable GPU refuses here too, before any work
        if (cuda_device_count(&n, e)) return err_prefix(e, "--device cuda: ");
        *d = DEVICE_CUDA;
        return 0;
#else
        return err_set(e, "--device cuda: this build has no CUDA runtime (CMake found no nvcc, so runtime/cuda/ "
                          "was not built); use --device cpu");
#endif
    }
    return err_set(e, "--device '%s': unknown device (known: cpu, cuda)", name);
}

const char *device_name(Device d) { return d == DEVICE_CUDA ? "cuda" : "cpu"; }

int device_dtype_check(Device d, const char *dtype, Error *e) {
    if (strcmp(dtype, "f32") && strcmp(dtype, "bf16"))
        return err_set(e, "--dtype '%s': unknown dtype (known: f32, bf16)", dtype);
    if (d == DEVICE_CPU && strcmp(dtype, "f32"))
        return err_set(e, "--dtype %s: the CPU runtime computes in f32 only (bf16 is for --device cuda)", dtype);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// cblas_sgemm at C[M,N] = A[M,K] B[N,K]^T, GFLOP/s, median of reps.
static double sgemm_rate(int M, int N, int K, int reps) {
    float *a = xmalloc((size_t)M * K * sizeof(float)), *b = xmalloc((size_t)N * K * sizeof(float));
    float *c = xmalloc((size_t)M * N * sizeof(float));
    Rng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < (size_t)N * K; i++) b[i] = rng_uniform(&r) - 0.5f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N); // warm-up
    double t[32];
    if (reps > 32) reps = 32;
    for (int i = 0; i < reps; i++) {
        double t0 = time_now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
        t[i] = time_now_s() - t0;
    }
    free(a); free(b); free(c);
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    return 2.0 * M * N * K / t[reps / 2] * 1e-9;
}

#ifdef EARNEST_HAVE_CUDA
static int dtype_of(CudaDtype *dt, const char *s, Error *e) { return cuda_dtype_parse(dt, s, e); }
#endif

int device_model_open(DeviceModel *dm, Device d, const char *dtype, Model *m, Error *e) {
    memset(dm, 0, sizeof *dm);
    if (device_dtype_check(d, dtype, e)) return -1;
    dm->device = d;
    dm->dtype = dtype;
    dm->host = m;
    snprintf(dm->name, sizeof dm->name, "cpu");
#ifdef EARNEST_HAVE_CUDA
    if (d == DEVICE_CUDA) {
        if (m->config.method == METHOD_GIST)
            return err_set(e, "--device cuda: a gist model runs on the CPU runtime only (the GPU runtime has no "
                           "gist-only cache)");
        if (m->config.method == METHOD_COMPRESS500X)
            return err_set(e, "--device cuda: a compress500x model runs on the CPU runtime only (the GPU runtime has "
                           "no LoRA adapters and no compression-token-only cache)");
        if (m->config.method == METHOD_ANLLM)
            return err_set(e, "--device cuda: an anllm model runs on the CPU runtime only (the GPU runtime has no "
                           "prefill mask or anchor-only cache)");
        CudaDtype dt;
        CudaModel *cm = xcalloc(1, sizeof *cm);
        if (dtype_of(&dt, dtype, e) || cuda_model_upload(cm, m, dt, e)) {
            free(cm);
            return err_prefix(e, "--device cuda: ");
        }
        snprintf(dm->name, sizeof dm->name, "%s", cm->cx.name);
        dm->cuda = cm;
    }
#endif
    return 0;
}

int device_model_random(DeviceModel *dm, Device d, const char *dtype, Model *m, const ModelConfig *c, uint64_t seed,
                        float std, Error *e) {
    memset(dm, 0, sizeof *dm);
    if (device_dtype_check(d, dtype, e)) return -1;
    if (d == DEVICE_CPU) {
        model_init_random(m, c, seed, std);
        return device_model_open(dm, d, dtype, m, e);
    }
#ifdef EARNEST_HAVE_CUDA
    memset(m, 0, sizeof *m);
    m->config = *c;
    dm->device = d;
    dm->dtype = dtype;
    dm->host = m;
    CudaDtype dt;
    CudaModel *cm = xcalloc(1, sizeof *cm);
    if (dtype_of(&dt, dtype, e) || cuda_model_init_random(cm, c, dt, seed, std, e)) {
        free(cm);
        return err_prefix(e, "--device cuda: ");
    }
    snprintf(dm->name, sizeof dm->name, "%s", cm->cx.name);
    dm->cuda = cm;
    return 0;
#else
    return err_set(e, "--device cuda: this build has no CUDA runtime");
#endif
}

void device_model_close(DeviceModel *dm) {
#ifdef EARNEST_HAVE_CUDA
    if (dm->cuda) {
        cuda_model_free(dm->cuda);
        free(dm->cuda);
    }
#endif
    memset(dm, 0, sizeof *dm);
}

ModelConfig *device_model_config(DeviceModel *dm) {
#ifdef EARNEST_HAVE_CUDA
    if (dm->cuda) return &((CudaModel *)dm->cuda)->config;
#endif
    return &dm->host->config;
}

double device_gemm_rate(DeviceModel *dm, int M, int N, int K, int reps) {
#ifdef EARNEST_HAVE_CUDA
    if (dm->cuda) return cuda_gemm_rate(dm->cuda, M, N, K, reps);
#else
    (void)dm;
#endif
    return sgemm_rate(M, N, K, reps);
}

int device_forward_prefill(DeviceModel *dm, float *logits, const int *tokens, int T, const int *depth, AttnHook hook,
                           void *hook_ctx, Error *e) {
    const ModelConfig *c = device_model_config(dm);
    int *cap = xmalloc((size_t)c->n_layers * sizeof(int)), rc;
    plan_kv_capacity_of(cap, depth, T, c->n_layers);
#ifdef EARNEST_HAVE_CUDA
    if (dm->cuda) {
        CudaModel *cm = dm->cuda;
        CHECK(!hook, "device_forward_prefill: no attention hook on the GPU");
        cm->allow_long = dm->host->allow_long;
        CudaKVCache kv, *kvs[1] = {&kv};
        cuda_kvcache_init(&kv, c->n_layers, c->n_kv_heads, c->head_dim, cap, cm->dtype);
        size_t bytes = (size_t)T * (size_t)c->vocab_size * sizeof(float);
        float *dl = cuda_xmalloc(bytes);
        CudaForwardBatch fb = {1, &T, tokens, NULL, depth, kvs, LOGITS_ALL};
        CudaForwardScratch s = {0};
        rc = cuda_model_forward(dl, cm, &fb, &s, e);
        if (!rc) {
            CUDA_CHECK(cudaMemcpyAsync(logits, dl, bytes, cudaMemcpyDeviceToHost, cm->cx.stream));
            CUDA_CHECK(cudaStreamSynchronize(cm->cx.stream));
        }
        cuda_forward_scratch_free(&s);
        cuda_kvcache_free(&kv);
        cuda_xfree(dl);
        free(cap);
        return rc;
    }
#endif
    KVCache kv, *kvs[1] = {&kv};
    kvcache_init(&kv, c->n_layers, c->n_kv_heads, c->head_dim, cap);
    ForwardBatch fb = {.n_seqs = 1, .n_new = &T, .tokens = tokens, .depth = depth, .caches = kvs,
                       .logits_mode = LOGITS_ALL, .attn_hook = hook, .attn_hook_ctx = hook_ctx};
    ForwardScratch s = {0};
    rc = model_forward(logits, dm->host, &fb, &s, e);
    forward_scratch_free(&s);
    kvcache_free(&kv);
    free(cap);
    return rc;
}

int device_search_init(DeviceSearch *ds, DeviceModel *dm, const Trie *trie, int width, Error *e) {
    memset(ds, 0, sizeof *ds);
    ds->device = dm->device;
#ifdef EARNEST_HAVE_CUDA
    if (dm->cuda) {
        CudaBeamSearch *cb = xcalloc(1, sizeof *cb);
        ((CudaModel *)dm->cuda)->allow_long = dm->host->allow_long;
        if (cuda_beam_search_init(cb, dm->cuda, trie, width, e)) {
            free(cb);
            return -1;
        }
        ds->cuda = cb;
        return 0;
    }
#endif
    return beam_search_init(&ds->cpu, dm->host, trie, width, e);
}

int device_search_run(DeviceSearch *ds, BeamHyps *out, int n_users, const int *const *prompts,
                      const uint8_t *const *kinds, const int *prompt_len, Error *e) {
#ifdef EARNEST_HAVE_CUDA
    if (ds->cuda) {
        CudaBeamSearch *cb = ds->cuda;
        if (cuda_beam_search_run(out, cb, n_users, prompts, kinds, prompt_len, e)) return -1;
        ds->prefill_s = cb->prefill_s;
        ds->decode_s = cb->decode_s;
        ds->prefill_flops = cb->prefill_flops;
        ds->kv_bytes = cb->kv_bytes;
        ds->prompt_tokens = cb->prompt_tokens;
        ds->gen_tokens = cb->gen_tokens;
        return 0;
    }
#endif
    if (ds->spec) {
        SpecBeam *sb = ds->spec;
        if (specbeam_run(out, sb, n_users, prompts, kinds, prompt_len, e)) return -1;
        ds->prefill_s = sb->prefill_s;
        ds->decode_s = sb->decode_s;
        ds->prefill_flops = sb->prefill_flops;
        ds->kv_bytes = sb->kv_bytes;
        ds->prompt_tokens = sb->prompt_tokens;
        ds->gen_tokens = sb->gen_tokens;
        return 0;
    }
    BeamSearch *bs = &ds->cpu;
    if (beam_search_run(out, bs, n_users, prompts, kinds, prompt_len, e)) return -1;
    ds->prefill_s = bs->prefill_s;
    ds->decode_s = bs->decode_s;
    ds->prefill_flops = bs->prefill_flops;
    ds->kv_bytes = bs->kv_bytes;
    ds->prompt_tokens = bs->prompt_tokens;
    ds->gen_tokens = bs->gen_tokens;
    return 0;
}

void device_search_free(DeviceSearch *ds) {
#ifdef EARNEST_HAVE_CUDA
    if (ds->cuda) {
        cuda_beam_search_free(ds->cuda);
        free(ds->cuda);
    }
#endif
    if (ds->device == DEVICE_CPU) beam_search_free(&ds->cpu);
    if (ds->spec) {
        specbeam_free(ds->spec);
        free(ds->spec);
    }
    memset(ds, 0, sizeof *ds);
}

int device_search_set_draft(DeviceSearch *ds, DeviceModel *target, const Trie *trie, int width, const SpecOptions *o,
                            Error *e) {
    if (ds->device != DEVICE_CPU || target->device != DEVICE_CPU)
        return err_set(e, "--draft: speculative beam search runs on the CPU runtime only; use --device cpu");
    SpecBeam *sb = xcalloc(1, sizeof *sb);
    if (specbeam_init(sb, target->host, o->draft, trie, width, o->gamma, o->draft_beams, o->verify, o->seed, e)) {
        free(sb);
        return -1;
    }
    ds->spec = sb;
    return 0;
}

// Both vocab.txt files, when both exist, must be the same file content.
static int same_vocab_file(const char *draft_dir, const char *target_dir, Error *e) {
    char pd[4096], pt[4096], hd[65], ht[65];
    if (path_join(pd, sizeof pd, draft_dir, "vocab.txt") || path_join(pt, sizeof pt, target_dir, "vocab.txt"))
        return err_set(e, "--draft: path too long");
    if (access(pd, R_OK) || access(pt, R_OK)) return 0;
    if (sha256_file_hex(hd, pd, e) || sha256_file_hex(ht, pt, e)) return -1;
    if (strcmp(hd, ht))
        return err_set(e, "--draft %s: its vocabulary (%s) differs from the target's (%s); a draft must share the "
                       "target's vocabulary", draft_dir, pd, pt);
    return 0;
}

int spec_flags_check(const char *draft_dir, const char *target_dir, int target_vocab, int gamma, int draft_beams,
                     int max_beam, Device device, Error *e) {
    if (device != DEVICE_CPU)
        return err_set(e, "--draft: speculative beam search runs on the CPU runtime only; use --device cpu");
    if (gamma < 1) return err_set(e, "--gamma %d: must be >= 1 (levels drafted per round)", gamma);
    if (draft_beams < max_beam)
        return err_set(e, "--draft-beams %d: must be >= --beam %d (strict verification needs the target's top beams "
                       "among the drafted ones)", draft_beams, max_beam);
    char path[4096];
    ModelConfig c;
    if (path_join(path, sizeof path, draft_dir, "config.json")) return err_set(e, "--draft: path too long");
    if (config_load(&c, path, e)) return err_prefix(e, "--draft: ");
    if (c.vocab_size != target_vocab)
        return err_set(e, "--draft %s: vocab_size %d differs from the target's %d; a draft must share the target's "
                       "vocabulary", draft_dir, c.vocab_size, target_vocab);
    if (c.method != METHOD_FINETUNE)
        return err_set(e, "--draft %s: a %s model; a draft must be a full (finetune) model", draft_dir,
                       config_method_name(c.method));
    return target_dir ? same_vocab_file(draft_dir, target_dir, e) : 0;
}
