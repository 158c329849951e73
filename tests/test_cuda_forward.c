// test_cuda_forward.c: the GPU forward pass equals the CPU runtime's on random
// checkpoints (runtime/cuda/model_cuda.h vs runtime/model.h).
//
// Shapes: MHA (head size 16), GQA (32), Qwen2 biases with an untied head
// (64), and head size 128; plans: full and EARN (k = 1, registers); calls: a
// batched prefill of three sequences (5, 37 and 300 tokens: several query
// tiles, and a prompt longer than one parent chunk), three decode steps of
// one token each, and beams (child caches) sharing each prompt as a
// read-only parent for three more steps, the grouped parent-attention path.
// Every logits row is compared, NaN rows (tokens an EARN plan stops early)
// included. Tolerances: ||gpu - cpu|| / ||cpu|| <= 1e-4 in f32, 2e-2 in bf16
// (weights, KV cache and product inputs rounded to bf16).
//
// Without a usable GPU (or without the CUDA build) the test prints why and
// exits 77, which CTest reports as skipped.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/gpu_skip.h"

#include "runtime/model.h"
#include "runtime/plan.h"

#ifdef EARNEST_HAVE_CUDA
#include "runtime/cuda/model_cuda.h"

#define NS 3
static const int LENS[NS] = {5, 37, 300};
#define BEAMS 5

typedef struct {
    double num, den; // sums of squares of (gpu - cpu) and of cpu over finite rows
    int nan_mismatch;
} Diff;

static void diff_rows(Diff *d, const float *cpu, const float *gpu, size_t rows, size_t V) {
    for (size_t r = 0; r < rows; r++) {
        int cn = isnan(cpu[r * V]), gn = isnan(gpu[r * V]);
        if (cn || gn) {
            d->nan_mismatch += cn != gn;
            continue;
        }
        for (size_t i = 0; i < V; i++) {
            double x = (double)gpu[r * V + i] - cpu[r * V + i];
            d->num += x * x;
            d->den += (double)cpu[r * V + i] * cpu[r * V + i];
        }
    }
}

static void check_diff(const Diff *d, double tol, const char *what) {
    double rel = sqrt(d->num / d->den);
    printf("    %-40s rel %.3e (tol %.0e)\n", what, rel, tol);
    assert_int_equal(d->nan_mismatch, 0);
    assert_true(d->den > 0);
    assert_true(rel <= tol);
}

static ModelConfig shape(int variant, int earn) {
    ModelConfig c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    c.vocab_size = 97;
    c.n_layers = 3;
    c.max_seq_len = 4096;
    c.rms_eps = 1e-6f;
    c.rope_theta = 10000.0f;
    c.tie_embeddings = 1;
    switch (variant) {
    case 0: c.dim = 64; c.n_heads = 4; c.n_kv_heads = 4; c.hidden_dim = 96; break;   // MHA, E = 16
    case 1: c.dim = 128; c.n_heads = 4; c.n_kv_heads = 2; c.hidden_dim = 160; break; // GQA, E = 32
    case 2: c.dim = 128; c.n_heads = 2; c.n_kv_heads = 1; c.hidden_dim = 224;       // Qwen2, E = 64
        c.arch = MODEL_ARCH_QWEN2; c.attn_bias = 1; c.tie_embeddings = 0; c.rope_theta = 1e6f; break;
    default: c.dim = 256; c.n_heads = 2; c.n_kv_heads = 2; c.hidden_dim = 128; break; // E = 128
    }
    c.head_dim = c.dim / c.n_heads;
    c.method = earn ? METHOD_EARN : METHOD_FINETUNE;
    if (earn) {
        c.layer_split_k = 1;
        c.n_prefix_regs = 1;
        c.n_suffix_regs = 2;
    }
    return c;
}

// Prompt s: tokens and kinds (prefix register, history, suffix registers).
static void prompt(int *tok, uint8_t *kind, int s, int n, const ModelConfig *c, Rng *r) {
    for (int i = 0; i < n; i++) {
        tok[i] = (int)(rng_u64(r) % (uint64_t)c->vocab_size);
        kind[i] = i < c->n_prefix_regs ? TOKEN_KIND_PREFIX_REG
                  : i >= n - c->n_suffix_regs ? TOKEN_KIND_SUFFIX_REG : TOKEN_KIND_HISTORY;
    }
    (void)s;
}

typedef struct {
    KVCache cpu[NS], cpu_beam[NS * BEAMS];
    CudaKVCache gpu[NS], gpu_beam[NS * BEAMS];
} Caches;

// Runs the same batch on both runtimes and adds the logits' difference.
static void both(Diff *d, Model *m, CudaModel *cm, ForwardScratch *fs, CudaForwardScratch *cs, int n_seqs,
                 const int *n_new, const int *tokens, const int *depth, KVCache **kc, CudaKVCache **kg,
                 LogitsMode mode) {
    size_t rows = 0, V = (size_t)m->config.vocab_size;
    for (int b = 0; b < n_seqs; b++) rows += mode == LOGITS_LAST ? 1 : (size_t)n_new[b];
    float *lc = malloc(rows * V * sizeof(float)), *lg = malloc(rows * V * sizeof(float));
    float *dl = cuda_xmalloc(rows * V * sizeof(float));
    Error e;
    ForwardBatch fb = {.n_seqs = n_seqs, .n_new = n_new, .tokens = tokens, .depth = depth, .caches = kc,
                       .logits_mode = mode};
    CudaForwardBatch gb = {n_seqs, n_new, tokens, NULL, depth, kg, mode};
    assert_int_equal(model_forward(lc, m, &fb, fs, &e), 0);
    int rc = cuda_model_forward(dl, cm, &gb, cs, &e);
    if (rc) printf("cuda_model_forward: %s\n", e.msg);
    assert_int_equal(rc, 0);
    // The forward runs on the model's (non-blocking) stream: copy on it, then wait.
    CUDA_CHECK(cudaMemcpyAsync(lg, dl, rows * V * sizeof(float), cudaMemcpyDeviceToHost, cm->cx.stream));
    CUDA_CHECK(cudaStreamSynchronize(cm->cx.stream));
    diff_rows(d, lc, lg, rows, V);
    assert_true(fabs(fs->last_flops - cs->last_flops) <= 1e-9 * fs->last_flops); // same work counted
    free(lc); free(lg); cuda_xfree(dl);
}

static void run_case(int variant, int earn, CudaDtype dt) {
    ModelConfig c = shape(variant, earn);
    Model m;
    model_init_random(&m, &c, 42 + (uint64_t)variant, 0.08f);
    CudaModel cm;
    Error e;
    assert_int_equal(cuda_model_upload(&cm, &m, dt, &e), 0);
    ForwardScratch fs = {0};
    CudaForwardScratch cs = {0};
    Rng r;
    rng_seed(&r, 7 + (uint64_t)variant);
    const int L = c.n_layers, G = c.n_kv_heads, steps = 3;
    int T = 0;
    for (int s = 0; s < NS; s++) T += LENS[s];
    int *tokens = malloc((size_t)T * sizeof(int)), *depth = malloc((size_t)T * sizeof(int)), cap[8];
    uint8_t *kinds = malloc((size_t)T);
    Caches *k = calloc(1, sizeof *k);
    KVCache *kc[NS * BEAMS];
    CudaKVCache *kg[NS * BEAMS];
    for (int s = 0, at = 0; s < NS; at += LENS[s], s++) {
        prompt(tokens + at, kinds + at, s, LENS[s], &c, &r);
        plan_depth_for(depth + at, kinds + at, LENS[s], &c);
        for (int l = 0; l < L; l++) {
            cap[l] = steps;
            for (int i = 0; i < LENS[s]; i++) cap[l] += depth[at + i] > l;
        }
        kvcache_init(&k->cpu[s], L, G, c.head_dim, cap);
        cuda_kvcache_init(&k->gpu[s], L, G, c.head_dim, cap, dt);
        kc[s] = &k->cpu[s];
        kg[s] = &k->gpu[s];
    }
    double tol = dt == CUDA_F32 ? 1e-4 : 2e-2;
    char what[96];
    Diff d = {0};
    int lens[NS];
    memcpy(lens, LENS, sizeof lens);
    both(&d, &m, &cm, &fs, &cs, NS, lens, tokens, depth, kc, kg, LOGITS_ALL);
    snprintf(what, sizeof what, "prefill (%s, %s)", earn ? "earn" : "full", cuda_dtype_name(dt));
    check_diff(&d, tol, what);
    // Decode steps on the prompts' own caches (no parent).
    int ones[NS * BEAMS], step_tok[NS * BEAMS];
    for (int i = 0; i < NS * BEAMS; i++) ones[i] = 1;
    for (int st = 0; st < steps; st++) {
        for (int s = 0; s < NS; s++) step_tok[s] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
        Diff ds = {0};
        both(&ds, &m, &cm, &fs, &cs, NS, ones, step_tok, NULL, kc, kg, LOGITS_LAST);
        snprintf(what, sizeof what, "decode step %d (%s, %s)", st + 1, earn ? "earn" : "full", cuda_dtype_name(dt));
        check_diff(&ds, tol, what);
    }
    // Beams: children of every prompt, fed together (grouped parent attention).
    for (int l = 0; l < L; l++) cap[l] = steps;
    for (int s = 0; s < NS; s++)
        for (int j = 0; j < BEAMS; j++) {
            int i = s * BEAMS + j;
            kvcache_init_child(&k->cpu_beam[i], &k->cpu[s], cap);
            void *gk = cuda_xmalloc(cuda_kvcache_elems(L, G, c.head_dim, cap) * cuda_dtype_size(dt));
            void *gv = cuda_xmalloc(cuda_kvcache_elems(L, G, c.head_dim, cap) * cuda_dtype_size(dt));
            cuda_kvcache_init_view(&k->gpu_beam[i], &k->gpu[s], cap, gk, gv);
            kc[i] = &k->cpu_beam[i];
            kg[i] = &k->gpu_beam[i];
        }
    for (int st = 0; st < steps; st++) {
        for (int i = 0; i < NS * BEAMS; i++) step_tok[i] = (int)(rng_u64(&r) % (uint64_t)c.vocab_size);
        Diff ds = {0};
        both(&ds, &m, &cm, &fs, &cs, NS * BEAMS, ones, step_tok, NULL, kc, kg, LOGITS_LAST);
        snprintf(what, sizeof what, "beams step %d (%s, %s)", st + 1, earn ? "earn" : "full", cuda_dtype_name(dt));
        check_diff(&ds, tol, what);
    }
    for (int i = 0; i < NS * BEAMS; i++) {
        kvcache_free(&k->cpu_beam[i]);
        cuda_xfree(k->gpu_beam[i].k);
        cuda_xfree(k->gpu_beam[i].v);
        cuda_kvcache_free(&k->gpu_beam[i]);
    }
    for (int s = 0; s < NS; s++) {
        kvcache_free(&k->cpu[s]);
        cuda_kvcache_free(&k->gpu[s]);
    }
    free(k); free(tokens); free(depth); free(kinds);
    forward_scratch_free(&fs);
    cuda_forward_scratch_free(&cs);
    cuda_model_free(&cm);
    model_free(&m);
}

static const char *VARIANT_NAMES[4] = {"MHA E=16", "GQA E=32", "Qwen2 bias, untied, E=64", "MHA E=128"};

static void test_all(void **state) {
    (void)state;
    for (int v = 0; v < 4; v++)
        for (int earn = 0; earn < 2; earn++)
            for (int dt = 0; dt < 2; dt++) {
                printf("  %s, %s, %s\n", VARIANT_NAMES[v], earn ? "EARN k=1" : "full", dt ? "bf16" : "f32");
                run_case(v, earn, dt ? CUDA_BF16 : CUDA_F32);
            }
}

// Bad input is refused before any launch, with the CPU's messages.
static void test_bad_input(void **state) {
    (void)state;
    ModelConfig c = shape(1, 0);
    Model m;
    model_init_random(&m, &c, 1, 0.05f);
    CudaModel cm;
    Error e;
    assert_int_equal(cuda_model_upload(&cm, &m, CUDA_F32, &e), 0);
    int cap[3] = {4, 4, 4}, n = 5, tok[5] = {1, 2, 3, 4, 5};
    CudaKVCache kv, *kvs[1] = {&kv};
    cuda_kvcache_init(&kv, 3, c.n_kv_heads, c.head_dim, cap, CUDA_F32);
    CudaForwardScratch cs = {0};
    float *dl = cuda_xmalloc(5 * 97 * sizeof(float));
    CudaForwardBatch fb = {1, &n, tok, NULL, NULL, kvs, LOGITS_ALL};
    assert_int_equal(cuda_model_forward(dl, &cm, &fb, &cs, &e), -1); // 5 tokens, capacity 4
    assert_non_null(strstr(e.msg, "is full"));
    n = 2;
    tok[1] = 97;
    assert_int_equal(cuda_model_forward(dl, &cm, &fb, &cs, &e), -1);
    assert_non_null(strstr(e.msg, "outside the vocabulary"));
    kv.len[1] = 1; // heads of layer 0 disagree: a KV policy's cache
    tok[1] = 3;
    assert_int_equal(cuda_model_forward(dl, &cm, &fb, &cs, &e), -1);
    assert_non_null(strstr(e.msg, "different counts"));
    cuda_xfree(dl);
    cuda_kvcache_free(&kv);
    cuda_forward_scratch_free(&cs);
    cuda_model_free(&cm);
    model_free(&m);
    c.head_dim = 24; // 2 heads of 24: no kernel for it
    c.n_heads = 2; c.n_kv_heads = 2; c.dim = 48;
    model_init_random(&m, &c, 1, 0.05f);
    assert_int_equal(cuda_model_upload(&cm, &m, CUDA_F32, &e), -1);
    assert_non_null(strstr(e.msg, "head sizes"));
    model_free(&m);
}

int main(void) {
    if (!gpu_tests_available()) return 77;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
int main(void) { return gpu_tests_available() ? 1 : 77; }
#endif
