// test_llama2c.c: reading llama2.c .bin models (runtime/llama2c.c).
//
// - header validation on small files the test writes;
// - the RoPE row permutation: a tiny random llama2.c model is written, loaded,
//   and the runtime's logits (model_forward, HF rotate-half RoPE) are compared
//   with a plain-loop transcription of llama2.c's own forward (interleaved RoPE,
//   double precision) on the raw, unpermuted weights; a negative control shows
//   that skipping the permutation is caught;
// - the real model: stories260K, greedy decoding from "Once upon a time",
//   against the ids llama2.c's run.c generates.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/checkpoint.h"
#include "runtime/kvcache.h"
#include "runtime/llama2c.h"
#include "runtime/model.h"
#include "runtime/tokenizer.h"

static char tmp_dir[] = "/tmp/earnest_test_l2c_XXXXXX";
static char shared_dir[4096];

static int setup(void **state) {
    (void)state;
    const char *shared = getenv("EARNEST_SHARED");
    if (!shared) {
        fprintf(stderr, "EARNEST_SHARED is not set (the path of the shared models/datasets mirror)\n");
        return -1;
    }
    snprintf(shared_dir, sizeof shared_dir, "%s", shared);
    if (!mkdtemp(tmp_dir)) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return remove_tree(tmp_dir);
}

// ---------------------------------------------------------------------------
// A synthetic llama2.c model, kept in memory in the file's own layout.

typedef struct {
    int32_t header[7]; // as written (vocab negative when unshared)
    int dim, hidden, layers, heads, kv_heads, vocab, seq_len, shared;
    float *data; // every float after the header, in file order
    size_t n;
    // views into data (llama2.c names)
    float *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *freq, *wcls;
} L2cModel;

static void l2c_make(L2cModel *m, int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
                     int seq_len, int shared, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->dim = dim, m->hidden = hidden, m->layers = layers, m->heads = heads, m->kv_heads = kv_heads;
    m->vocab = vocab, m->seq_len = seq_len, m->shared = shared;
    int32_t h[7] = {dim, hidden, layers, heads, kv_heads, shared ? vocab : -vocab, seq_len};
    memcpy(m->header, h, sizeof h);
    size_t D = (size_t)dim, F = (size_t)hidden, L = (size_t)layers, V = (size_t)vocab;
    size_t E = D / (size_t)heads, KD = (size_t)kv_heads * E;
    size_t sizes[13] = {V * D, L * D, L * D * D, L * KD * D, L * KD * D, L * D * D, L * D,
                        L * F * D, L * D * F, L * F * D, D, (size_t)seq_len * E, shared ? 0 : V * D};
    float **views[13] = {&m->emb, &m->rms_att, &m->wq, &m->wk, &m->wv, &m->wo, &m->rms_ffn,
                         &m->w1, &m->w2, &m->w3, &m->rms_final, &m->freq, &m->wcls};
    m->n = 0;
    for (int i = 0; i < 13; i++) m->n += sizes[i];
    m->data = malloc(m->n * sizeof(float));
    assert_non_null(m->data);
    Rng rng;
    rng_seed(&rng, seed);
    size_t at = 0;
    for (int i = 0; i < 13; i++) {
        *views[i] = sizes[i] ? m->data + at : NULL;
        int is_norm = (i == 1 || i == 6 || i == 10);
        for (size_t j = 0; j < sizes[i]; j++) {
            float x = is_norm ? 1.0f + 0.2f * rng_normal(&rng) : 0.3f * rng_normal(&rng);
            if (i == 11) x = 1e6f; // freq_cis: must be skipped, so garbage would show
            m->data[at + j] = x;
        }
        at += sizes[i];
    }
    if (shared) m->wcls = m->emb;
}

static void l2c_write(const L2cModel *m, const char *path, size_t drop_floats, size_t extra_bytes) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(m->header, sizeof(int32_t), 7, f), 7);
    size_t n = m->n - drop_floats;
    assert_int_equal(fwrite(m->data, sizeof(float), n, f), n);
    for (size_t i = 0; i < extra_bytes; i++) assert_int_not_equal(fputc(0, f), EOF);
    assert_int_equal(fclose(f), 0);
}

static void l2c_free(L2cModel *m) { free(m->data); }

// ---------------------------------------------------------------------------
// llama2.c's forward for one token at position pos, transcribed as plain loops
// in double precision. kc, vc: [L, seq_len, KD] caches. RoPE rotates the
// interleaved pairs (2i, 2i+1) of each head by pos * 10000^(-2i/E).

static void l2c_rmsnorm(double *out, const double *x, const float *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * s);
}

// out[d] = W[d, n] x[n]
static void l2c_matmul(double *out, const double *x, const float *w, int n, int d) {
    for (int i = 0; i < d; i++) {
        double acc = 0;
        for (int j = 0; j < n; j++) acc += (double)w[(size_t)i * n + j] * x[j];
        out[i] = acc;
    }
}

static void l2c_forward(double *logits, const L2cModel *m, double *kc, double *vc, int token, int pos) {
    int D = m->dim, F = m->hidden, E = m->dim / m->heads, KD = m->kv_heads * E, kv_mul = m->heads / m->kv_heads;
    double *x = calloc((size_t)D, sizeof(double)), *xb = calloc((size_t)D, sizeof(double));
    double *xb2 = calloc((size_t)D, sizeof(double)), *q = calloc((size_t)D, sizeof(double));
    double *hb = calloc((size_t)F, sizeof(double)), *hb2 = calloc((size_t)F, sizeof(double));
    double *att = calloc((size_t)pos + 1, sizeof(double));
    assert_true(x && xb && xb2 && q && hb && hb2 && att);
    for (int i = 0; i < D; i++) x[i] = m->emb[(size_t)token * D + i];
    for (int l = 0; l < m->layers; l++) {
        l2c_rmsnorm(xb, x, m->rms_att + (size_t)l * D, D);
        double *k = kc + ((size_t)l * m->seq_len + pos) * KD, *v = vc + ((size_t)l * m->seq_len + pos) * KD;
        l2c_matmul(q, xb, m->wq + (size_t)l * D * D, D, D);
        l2c_matmul(k, xb, m->wk + (size_t)l * KD * D, D, KD);
        l2c_matmul(v, xb, m->wv + (size_t)l * KD * D, D, KD);
        for (int i = 0; i < D; i += 2) {
            double freq = pow(10000.0, -(double)(i % E) / E), c = cos(pos * freq), s = sin(pos * freq);
            double q0 = q[i], q1 = q[i + 1];
            q[i] = q0 * c - q1 * s;
            q[i + 1] = q0 * s + q1 * c;
            if (i < KD) {
                double k0 = k[i], k1 = k[i + 1];
                k[i] = k0 * c - k1 * s;
                k[i + 1] = k0 * s + k1 * c;
            }
        }
        for (int h = 0; h < m->heads; h++) {
            const double *qh = q + h * E;
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t <= pos; t++) {
                const double *kt = kc + ((size_t)l * m->seq_len + t) * KD + (h / kv_mul) * E;
                double sc = 0;
                for (int i = 0; i < E; i++) sc += qh[i] * kt[i];
                att[t] = sc / sqrt((double)E);
                if (att[t] > mx) mx = att[t];
            }
            for (int t = 0; t <= pos; t++) sum += (att[t] = exp(att[t] - mx));
            for (int i = 0; i < E; i++) xb2[h * E + i] = 0;
            for (int t = 0; t <= pos; t++) {
                const double *vt = vc + ((size_t)l * m->seq_len + t) * KD + (h / kv_mul) * E;
                for (int i = 0; i < E; i++) xb2[h * E + i] += att[t] / sum * vt[i];
            }
        }
        l2c_matmul(xb, xb2, m->wo + (size_t)l * D * D, D, D);
        for (int i = 0; i < D; i++) x[i] += xb[i];
        l2c_rmsnorm(xb, x, m->rms_ffn + (size_t)l * D, D);
        l2c_matmul(hb, xb, m->w1 + (size_t)l * F * D, D, F);
        l2c_matmul(hb2, xb, m->w3 + (size_t)l * F * D, D, F);
        for (int i = 0; i < F; i++) hb[i] = hb[i] / (1.0 + exp(-hb[i])) * hb2[i];
        l2c_matmul(xb, hb, m->w2 + (size_t)l * D * F, F, D);
        for (int i = 0; i < D; i++) x[i] += xb[i];
    }
    l2c_rmsnorm(xb, x, m->rms_final, D);
    l2c_matmul(logits, xb, m->wcls, D, m->vocab);
    free(x), free(xb), free(xb2), free(q), free(hb), free(hb2), free(att);
}

// max |a - b| / max |b|
static double l2c_rel_err(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= num)) num = d; // NaN propagates as a failure
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

// Runtime logits for T tokens in one prefill call: logits [T, V].
static void runtime_prefill(float *logits, Model *m, const int *tokens, int T) {
    int *cap = malloc((size_t)m->config.n_layers * sizeof(int));
    assert_non_null(cap);
    for (int l = 0; l < m->config.n_layers; l++) cap[l] = T;
    KVCache cache;
    kvcache_init(&cache, m->config.n_layers, m->config.n_kv_heads, m->config.head_dim, cap);
    KVCache *caches[1] = {&cache};
    int n_new[1] = {T};
    ForwardBatch fb = {.n_seqs = 1, .n_new = n_new, .tokens = tokens, .caches = caches,
                       .logits_mode = LOGITS_ALL};
    ForwardScratch scratch = {0};
    Error e = {{0}};
    int rc = model_forward(logits, m, &fb, &scratch, &e);
    if (rc) fprintf(stderr, "model_forward: %s\n", e.msg);
    assert_int_equal(rc, 0);
    forward_scratch_free(&scratch);
    kvcache_free(&cache);
    free(cap);
}

// ---------------------------------------------------------------------------
// Tests

static void test_permute_rows(void **state) {
    (void)state;
    // 2 heads of size 8, rows of width 2: row r holds (r, -r). The interleaved
    // pairs of a head (0,1) (2,3) (4,5) (6,7) become the halves pairs (0,4)
    // (1,5) (2,6) (3,7): out rows 0,2,4,6,1,3,5,7 | 8,10,12,14,9,11,13,15.
    // (Head size 8, not 4, so that the permutation differs from its inverse.)
    float in[32], out[32];
    for (int r = 0; r < 16; r++) in[2 * r] = (float)r, in[2 * r + 1] = (float)-r;
    llama2c_permute_rope_rows(out, in, 2, 8, 2);
    const int want[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
    for (int r = 0; r < 16; r++) {
        assert_true(out[2 * r] == (float)want[r]);
        assert_true(out[2 * r + 1] == (float)-want[r]);
    }
}

static void path_in_tmp(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmp_dir, name); }

// Loading fails with a message naming the file and holding `needle`.
static void expect_load_error(const char *path, const char *needle) {
    Model m;
    Error e = {{0}};
    assert_int_equal(llama2c_load(&m, path, &e), -1);
    if (!strstr(e.msg, path) || !strstr(e.msg, needle)) fprintf(stderr, "unexpected message: %s\n", e.msg);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, needle));
    assert_null(m.params_memory); // nothing left allocated
    Llama2cHeader h;
    Error e2 = {{0}};
    assert_int_equal(llama2c_read_header(&h, path, &e2), -1);
}

static void write_header_only(const char *path, const int32_t *h, size_t n_fields) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(h, sizeof(int32_t), n_fields, f), n_fields);
    assert_int_equal(fclose(f), 0);
}

static void test_header_errors(void **state) {
    (void)state;
    char path[4200];
    path_in_tmp(path, sizeof path, "nope.bin");
    expect_load_error(path, "cannot open");

    path_in_tmp(path, sizeof path, "bad.bin");
    int32_t good[7] = {16, 40, 2, 4, 2, 37, 24};
    write_header_only(path, good, 3);
    expect_load_error(path, "truncated header: missing field n_heads");

    struct {
        int field;
        int32_t value;
        const char *needle;
    } cases[] = {
        {0, 0, "dim = 0"},
        {1, -3, "hidden_dim = -3"},
        {2, 0, "n_layers"},
        {4, 0, "n_kv_heads"},
        {5, 0, "vocab_size = 0"},
        {6, 0, "seq_len"},
        {0, 18, "not a multiple of n_heads"},  // 18 / 4
        {0, 12, "must be even"},               // head size 3
        {4, 3, "n_kv_heads = 3 must divide"},  // 4 % 3
        {4, 8, "n_kv_heads = 8 must divide"},  // more kv heads than heads
        {0, 1 << 30, "overflow"},              // absurd sizes
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t h[7];
        memcpy(h, good, sizeof h);
        h[cases[c].field] = cases[c].value;
        if (c == sizeof cases / sizeof cases[0] - 1) h[1] = h[2] = h[5] = 1 << 30;
        write_header_only(path, h, 7);
        expect_load_error(path, cases[c].needle);
    }
    // A valid header whose file lacks everything after it.
    write_header_only(path, good, 7);
    expect_load_error(path, "file size is 28 bytes");

    // One float short, one byte too many, and the classifier missing from an
    // unshared model: all are size mismatches.
    L2cModel lm;
    l2c_make(&lm, 16, 40, 2, 4, 2, 37, 24, 1, 7);
    l2c_write(&lm, path, 1, 0);
    expect_load_error(path, "file size");
    l2c_write(&lm, path, 0, 1);
    expect_load_error(path, "file size");
    lm.header[5] = -37; // claims an unshared classifier that is not there
    l2c_write(&lm, path, 0, 0);
    expect_load_error(path, "unshared classifier");
    l2c_free(&lm);
}

// Loads a synthetic model and compares runtime logits with llama2.c's forward.
static void check_synthetic(int shared, int heads, int kv_heads, uint64_t seed) {
    L2cModel lm;
    const int T = 12;
    l2c_make(&lm, 32, 48, 2, heads, kv_heads, 41, 16, shared, seed);
    char path[4200];
    path_in_tmp(path, sizeof path, "synthetic.bin");
    l2c_write(&lm, path, 0, 0);

    Model m;
    Error e = {{0}};
    int rc = llama2c_load(&m, path, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(m.config.arch, MODEL_ARCH_LLAMA);
    assert_int_equal(m.config.dim, 32);
    assert_int_equal(m.config.hidden_dim, 48);
    assert_int_equal(m.config.n_heads, heads);
    assert_int_equal(m.config.n_kv_heads, kv_heads);
    assert_int_equal(m.config.head_dim, 32 / heads);
    assert_int_equal(m.config.vocab_size, 41);
    assert_int_equal(m.config.max_seq_len, 16);
    assert_int_equal(m.config.tie_embeddings, shared);
    assert_true(m.config.rms_eps == 1e-5f && m.config.rope_theta == 10000.0f);
    // Tensors that need no permutation arrive verbatim.
    assert_memory_equal(m.params.wv, lm.wv, (size_t)2 * kv_heads * (32 / heads) * 32 * sizeof(float));
    assert_memory_equal(m.params.w_gate, lm.w1, (size_t)2 * 48 * 32 * sizeof(float));
    assert_memory_equal(m.params.w_up, lm.w3, (size_t)2 * 48 * 32 * sizeof(float));
    assert_memory_equal(m.params.w_down, lm.w2, (size_t)2 * 48 * 32 * sizeof(float));
    assert_memory_equal(m.params.lm_head, lm.wcls, (size_t)41 * 32 * sizeof(float));

    int tokens[12];
    Rng rng;
    rng_seed(&rng, seed + 1);
    for (int i = 0; i < T; i++) tokens[i] = (int)(rng_u64(&rng) % 41);

    size_t KD = (size_t)kv_heads * (size_t)(32 / heads);
    double *kc = calloc((size_t)2 * 16 * KD, sizeof(double)), *vc = calloc((size_t)2 * 16 * KD, sizeof(double));
    double *want = malloc((size_t)T * 41 * sizeof(double));
    float *got = malloc((size_t)T * 41 * sizeof(float));
    assert_true(kc && vc && want && got);
    for (int t = 0; t < T; t++) l2c_forward(want + (size_t)t * 41, &lm, kc, vc, tokens[t], t);
    runtime_prefill(got, &m, tokens, T);
    double err = l2c_rel_err(got, want, (size_t)T * 41);
    printf("synthetic (shared %d, %d heads, %d kv): rel err %.3g\n", shared, heads, kv_heads, err);
    assert_true(err < 1e-4);

    // Negative control: the raw interleaved rows (no permutation) give other logits.
    memcpy(m.params.wq, lm.wq, (size_t)2 * 32 * 32 * sizeof(float));
    memcpy(m.params.wk, lm.wk, (size_t)2 * KD * 32 * sizeof(float));
    runtime_prefill(got, &m, tokens, T);
    double err_raw = l2c_rel_err(got, want, (size_t)T * 41);
    printf("  without the permutation: rel err %.3g\n", err_raw);
    assert_true(err_raw > 1e-2);

    free(kc), free(vc), free(want), free(got);
    model_free(&m);
    l2c_free(&lm);
}

static void test_synthetic_shared(void **state) {
    (void)state;
    check_synthetic(1, 4, 2, 11);
}

static void test_synthetic_unshared_mha(void **state) {
    (void)state;
    check_synthetic(0, 2, 2, 12);
}

// ---------------------------------------------------------------------------
// stories260K against llama2.c.
//
// Expected ids: karpathy/llama2.c run.c (commit 350e04f), built outside this
// repository with two debug prints added (the encoded prompt, each sampled id),
// run as `./run stories260K.bin -z tok512.bin -t 0 -n 64 -i "Once upon a time"`
// (-t 0: greedy argmax; -n 64: 64 positions in all, so 60 generated ids).
static const int STORIES_PROMPT[5] = {1, 403, 407, 261, 378};
static const int STORIES_GENERATED[60] = {
    432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
    411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426,
    338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13, 438, 310};

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i; // first maximum, as llama2.c's sample_argmax
    return best;
}

static void test_stories260k_greedy(void **state) {
    (void)state;
    char model_path[4200], tok_path[4200];
    snprintf(model_path, sizeof model_path, "%s/models/stories260K/stories260K.bin", shared_dir);
    snprintf(tok_path, sizeof tok_path, "%s/models/stories260K/tok512.bin", shared_dir);
    Model m;
    Tokenizer t;
    Error e = {{0}};
    int rc = llama2c_load(&m, model_path, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
    const ModelConfig *c = &m.config;
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->hidden_dim, 172);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->vocab_size, 512);
    assert_int_equal(c->max_seq_len, 512);
    assert_int_equal(c->tie_embeddings, 1);
    assert_int_equal(tokenizer_load(&t, tok_path, c->vocab_size, &e), 0);

    const char *prompt = "Once upon a time";
    int prompt_ids[32], n_prompt;
    assert_int_equal(tokenizer_encode(&t, prompt, 1, 0, prompt_ids, &n_prompt, &e), 0);
    assert_int_equal(n_prompt, 5);
    assert_memory_equal(prompt_ids, STORIES_PROMPT, sizeof STORIES_PROMPT);

    // One token at a time through the KV cache, as run.c does.
    const int steps = 64;
    int cap[5];
    for (int l = 0; l < 5; l++) cap[l] = steps;
    KVCache cache;
    kvcache_init(&cache, c->n_layers, c->n_kv_heads, c->head_dim, cap);
    KVCache *caches[1] = {&cache};
    ForwardScratch scratch = {0};
    float logits[512];
    int generated[64], n_gen = 0, token = prompt_ids[0];
    char text[1024];
    size_t text_len = 0;
    text[0] = '\0';
    for (int pos = 0; pos < steps; pos++) {
        int n_new[1] = {1};
        ForwardBatch fb = {.n_seqs = 1, .n_new = n_new, .tokens = &token, .caches = caches,
                           .logits_mode = LOGITS_LAST};
        rc = model_forward(logits, &m, &fb, &scratch, &e);
        if (rc) fprintf(stderr, "model_forward: %s\n", e.msg);
        assert_int_equal(rc, 0);
        int next = pos < n_prompt - 1 ? prompt_ids[pos + 1] : argmax(logits, c->vocab_size);
        if (pos >= n_prompt - 1) {
            generated[n_gen++] = next;
            const char *piece = tokenizer_decode(&t, token, next);
            assert_non_null(piece);
            size_t pl = strlen(piece);
            assert_true(text_len + pl < sizeof text);
            memcpy(text + text_len, piece, pl + 1);
            text_len += pl;
        }
        token = next;
    }
    printf("stories260K greedy: \"%s%s\"\n", prompt, text);
    assert_int_equal(n_gen, 60);
    for (int i = 0; i < n_gen; i++) {
        if (generated[i] != STORIES_GENERATED[i])
            fprintf(stderr, "generated id %d: got %d, llama2.c %d\n", i, generated[i], STORIES_GENERATED[i]);
        assert_int_equal(generated[i], STORIES_GENERATED[i]);
    }
    const char *expect = ", there was a little girl named Lily. She loved to play outside in the park.";
    assert_memory_equal(text, expect, strlen(expect));

    // The converted model survives a save/load round trip unchanged.
    char dir[4200];
    path_in_tmp(dir, sizeof dir, "stories260K");
    rc = model_save(&m, dir, &e);
    if (rc) fprintf(stderr, "model_save: %s\n", e.msg);
    assert_int_equal(rc, 0);
    Model back;
    rc = model_load(&back, dir, &e);
    if (rc) fprintf(stderr, "model_load: %s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(back.config.tie_embeddings, 1);
    assert_int_equal(back.config.n_kv_heads, 4);
    assert_int_equal(back.config.max_seq_len, 512);
    assert_true(back.config.rms_eps == 1e-5f && back.config.rope_theta == 10000.0f);
    assert_int_equal(back.n_params, m.n_params);
    assert_memory_equal(back.params_memory, m.params_memory, m.n_params * sizeof(float));
    model_free(&back);

    forward_scratch_free(&scratch);
    kvcache_free(&cache);
    tokenizer_free(&t);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permute_rows),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_synthetic_shared),
        cmocka_unit_test(test_synthetic_unshared_mha),
        cmocka_unit_test(test_stories260k_greedy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
