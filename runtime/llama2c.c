// llama2c.c: see llama2c.h.
#include "runtime/llama2c.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

// ---------------------------------------------------------------------------
// Header

static const char *HEADER_FIELDS[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                       "n_kv_heads", "vocab_size", "seq_len"};

// acc += a * b * c, or 0 on overflow (the sizes come from a file).
static int size_add_product(size_t *acc, size_t a, size_t b, size_t c) {
    size_t ab, abc;
    if (!size_mul_ok(a, b, &ab) || !size_mul_ok(ab, c, &abc) || *acc > SIZE_MAX - abc) return 0;
    *acc += abc;
    return 1;
}

// Floats in the file after the header, or 0 on overflow.
static size_t llama2c_n_floats(const Llama2cHeader *h) {
    size_t L = (size_t)h->n_layers, D = (size_t)h->dim, F = (size_t)h->hidden_dim;
    size_t V = (size_t)h->vocab_size, E = (size_t)(h->dim / h->n_heads);
    size_t KD = (size_t)h->n_kv_heads * E, n = 0;
    int ok = size_add_product(&n, V, D, 1)          // token_embedding
             && size_add_product(&n, L, D, 1)       // rms_att
             && size_add_product(&n, L, D, D)       // wq
             && size_add_product(&n, L, KD, D)      // wk
             && size_add_product(&n, L, KD, D)      // wv
             && size_add_product(&n, L, D, D)       // wo
             && size_add_product(&n, L, D, 1)       // rms_ffn
             && size_add_product(&n, L, F, D)       // w1
             && size_add_product(&n, L, D, F)       // w2
             && size_add_product(&n, L, F, D)       // w3
             && size_add_product(&n, D, 1, 1)       // rms_final
             && size_add_product(&n, (size_t)h->seq_len, E, 1) // freq_cis_real + freq_cis_imag (E/2 each)
             && (h->shared_classifier || size_add_product(&n, V, D, 1)); // wcls
    return ok ? n : 0;
}

// Reads the header from the file's first n bytes (n may be short of the 28
// bytes of the header) and checks it against the file's size.
static int header_parse(Llama2cHeader *h, const uint8_t *bytes, size_t n, size_t file_size, const char *path,
                        Error *e) {
    int32_t raw[7];
    size_t got = n / sizeof(int32_t) < 7 ? n / sizeof(int32_t) : 7;
    if (got != 7)
        return err_set(e, "%s: truncated header: missing field %s (the header is 7 int32)", path,
                       HEADER_FIELDS[got]);
    memcpy(raw, bytes, sizeof raw);
    for (int i = 0; i < 7; i++) {
        // vocab_size may be negative (unshared classifier); every field must be non-zero.
        if (raw[i] <= 0 && !(i == 5 && raw[i] < 0 && raw[i] != INT32_MIN))
            return err_set(e, "%s: header field %s = %d must be positive", path, HEADER_FIELDS[i], (int)raw[i]);
    }
    h->dim = raw[0];
    h->hidden_dim = raw[1];
    h->n_layers = raw[2];
    h->n_heads = raw[3];
    h->n_kv_heads = raw[4];
    h->shared_classifier = raw[5] > 0;
    h->vocab_size = raw[5] > 0 ? raw[5] : -raw[5];
    h->seq_len = raw[6];
    if (h->dim % h->n_heads)
        return err_set(e, "%s: header field dim = %d is not a multiple of n_heads = %d", path, h->dim, h->n_heads);
    if ((h->dim / h->n_heads) % 2)
        return err_set(e, "%s: header fields dim / n_heads = %d (the head size) must be even for RoPE", path,
                       h->dim / h->n_heads);
    if (h->n_kv_heads > h->n_heads || h->n_heads % h->n_kv_heads)
        return err_set(e, "%s: header field n_kv_heads = %d must divide n_heads = %d", path, h->n_kv_heads,
                       h->n_heads);

    size_t n_floats = llama2c_n_floats(h), expected;
    if (n_floats == 0 || !size_mul_ok(n_floats, sizeof(float), &expected) || expected > SIZE_MAX - 28)
        return err_set(e, "%s: header sizes overflow (dim=%d hidden_dim=%d n_layers=%d vocab_size=%d)", path,
                       h->dim, h->hidden_dim, h->n_layers, h->vocab_size);
    expected += 7 * sizeof(int32_t);
    if (file_size != expected)
        return err_set(e,
                       "%s: file size is %zu bytes but the header (dim=%d hidden_dim=%d n_layers=%d n_heads=%d "
                       "n_kv_heads=%d vocab_size=%d%s seq_len=%d) implies %zu bytes",
                       path, file_size, h->dim, h->hidden_dim, h->n_layers, h->n_heads, h->n_kv_heads,
                       h->vocab_size, h->shared_classifier ? "" : " (unshared classifier)", h->seq_len, expected);
    return 0;
}

// Opens path and finds its size; *f stays open on success.
static int open_sized(FILE **f, size_t *size, const char *path, Error *e) {
    *f = fopen(path, "rb");
    if (!*f) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(*f), &st) != 0 || !S_ISREG(st.st_mode)) {
        int err = errno;
        fclose(*f);
        return err_set(e, "%s: cannot stat, or not a regular file: %s", path, strerror(err));
    }
    *size = (size_t)st.st_size;
    return 0;
}

int llama2c_read_header(Llama2cHeader *h, const char *path, Error *e) {
    FILE *f;
    size_t size;
    if (open_sized(&f, &size, path, e)) return -1;
    uint8_t raw[28];
    size_t n = fread(raw, 1, sizeof raw, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) return err_set(e, "%s: read error", path);
    return header_parse(h, raw, n, size, path, e);
}

void llama2c_config(ModelConfig *c, const Llama2cHeader *h) {
    memset(c, 0, sizeof *c);
    c->arch = MODEL_ARCH_LLAMA;
    c->dim = h->dim;
    c->hidden_dim = h->hidden_dim;
    c->n_layers = h->n_layers;
    c->n_heads = h->n_heads;
    c->n_kv_heads = h->n_kv_heads;
    c->head_dim = h->dim / h->n_heads;
    c->vocab_size = h->vocab_size;
    c->max_seq_len = h->seq_len;
    c->rms_eps = 1e-5f;      // llama2.c's rmsnorm
    c->rope_theta = 10000.0f; // llama2.c's RoPE base
    c->tie_embeddings = h->shared_classifier;
    c->attn_bias = 0;
    c->method = METHOD_FINETUNE;
}

// ---------------------------------------------------------------------------
// Weights

void llama2c_permute_rope_rows(float *out, const float *in, int n_heads, int head_dim, int in_dim) {
    size_t E = (size_t)head_dim, half = E / 2, n = (size_t)in_dim;
    for (size_t h = 0; h < (size_t)n_heads; h++)
        for (size_t j = 0; j < 2; j++)
            for (size_t i = 0; i < half; i++)
                memcpy(out + (h * E + j * half + i) * n, in + (h * E + 2 * i + j) * n, n * sizeof(float));
}

// A read cursor over the file's bytes (the header already checked the size,
// so a short read is a bug, not a bad file).
typedef struct {
    const uint8_t *p;
    size_t pos, len;
} Cursor;

static void read_floats(float *dst, size_t n, Cursor *c) {
    CHECK(n <= (c->len - c->pos) / sizeof(float), "llama2c: reading past the checked file size");
    memcpy(dst, c->p + c->pos, n * sizeof(float)); // the file's floats need not be aligned
    c->pos += n * sizeof(float);
}

// Reads L stacked projections [rows, cols] in the interleaved RoPE layout and
// stores them permuted to the halves layout.
static void read_rope_rows(float *dst, const Llama2cHeader *h, int n_heads, Cursor *c) {
    int E = h->dim / h->n_heads;
    size_t rows = (size_t)n_heads * (size_t)E, per_layer = rows * (size_t)h->dim;
    float *tmp = xmalloc(per_layer * sizeof(float));
    for (int l = 0; l < h->n_layers; l++) {
        read_floats(tmp, per_layer, c);
        llama2c_permute_rope_rows(dst + (size_t)l * per_layer, tmp, n_heads, E, h->dim);
    }
    free(tmp);
}

int llama2c_parse(Model *m, const void *data, size_t len, const char *path, Error *e) {
    memset(m, 0, sizeof *m);
    Llama2cHeader h;
    if (header_parse(&h, data, len, len, path, e)) return -1;
    ModelConfig c;
    llama2c_config(&c, &h);
    if (config_validate(&c, path, e)) return -1;
    model_alloc(m, &c);
    ModelParams *p = &m->params;
    size_t L = (size_t)h.n_layers, D = (size_t)h.dim, F = (size_t)h.hidden_dim, V = (size_t)h.vocab_size;
    size_t KD = (size_t)h.n_kv_heads * (size_t)c.head_dim;
    Cursor cur = {data, 7 * sizeof(int32_t), len};
    read_floats(p->embed, V * D, &cur);          // token_embedding
    read_floats(p->attn_norm, L * D, &cur);      // rms_att
    read_rope_rows(p->wq, &h, h.n_heads, &cur);
    read_rope_rows(p->wk, &h, h.n_kv_heads, &cur);
    read_floats(p->wv, L * KD * D, &cur);
    read_floats(p->wo, L * D * D, &cur);
    read_floats(p->mlp_norm, L * D, &cur);       // rms_ffn
    read_floats(p->w_gate, L * F * D, &cur);     // w1
    read_floats(p->w_down, L * D * F, &cur);     // w2
    read_floats(p->w_up, L * F * D, &cur);       // w3
    read_floats(p->final_norm, D, &cur);         // rms_final
    cur.pos += (size_t)h.seq_len * (size_t)c.head_dim * sizeof(float); // freq_cis_real + freq_cis_imag
    if (!h.shared_classifier) read_floats(p->lm_head, V * D, &cur); // wcls
    CHECK(cur.pos == len, "llama2c: %zu bytes read of %zu checked", cur.pos, len);
    return 0;
}

int llama2c_load(Model *m, const char *path, Error *e) {
    memset(m, 0, sizeof *m);
    FILE *f;
    size_t size;
    if (open_sized(&f, &size, path, e)) return -1;
    if (size < 7 * sizeof(int32_t)) { // too short to map usefully; the parser names the missing field
        uint8_t raw[28];
        size_t n = fread(raw, 1, sizeof raw, f);
        fclose(f);
        return llama2c_parse(m, raw, n, path, e);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fileno(f), 0);
    int err = errno;
    fclose(f); // the mapping stays valid
    if (map == MAP_FAILED) return err_set(e, "%s: cannot mmap %zu bytes: %s", path, size, strerror(err));
    int rc = llama2c_parse(m, map, size, path, e);
    munmap(map, size);
    return rc;
}
