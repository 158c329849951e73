// attn_dump.c: HDF5 writer and reader of the attention dump (format in attn_dump.h).
//
// Every HDF5 call is checked. HDF5's own error printing is switched off: a
// failure becomes an Error naming the file and the object, and the caller
// decides what to print.
#include "analysis/attn_dump.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *KIND_NAMES[TOKEN_KIND_COUNT] = {
    "special", "prefix_reg", "instruction", "history", "suffix_reg", "target",
};

const char *attn_kind_name(int kind) {
    return kind >= 0 && kind < TOKEN_KIND_COUNT ? KIND_NAMES[kind] : "?";
}

static void hdf5_quiet(void) {
    // Failures are reported through Error; HDF5's stack dump would only add noise.
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

// ---------------------------------------------------------------------------
// Attributes

static hid_t str_type_new(void) {
    // Variable-length UTF-8: h5py reads it back as a Python str.
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static int attr_write_str(hid_t obj, const char *name, const char *value, const char *file,
                          Error *e) {
    hid_t type = str_type_new();
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = -1;
    int rc = -1;
    if (type < 0 || space < 0) {
        err_set(e, "%s: cannot make the string type for attribute '%s'", file, name);
        goto done;
    }
    attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0) {
        err_set(e, "%s: cannot create attribute '%s'", file, name);
        goto done;
    }
    if (H5Awrite(attr, type, &value) < 0) {
        err_set(e, "%s: cannot write attribute '%s'", file, name);
        goto done;
    }
    rc = 0;
done:
    if (attr >= 0 && H5Aclose(attr) < 0 && rc == 0) rc = err_set(e, "%s: cannot close attribute '%s'", file, name);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return rc;
}

static int attr_write_int(hid_t obj, const char *name, int value, const char *file, Error *e) {
    hid_t space = H5Screate(H5S_SCALAR);
    if (space < 0) return err_set(e, "%s: cannot make a scalar space for attribute '%s'", file, name);
    hid_t attr = H5Acreate2(obj, name, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(space);
    if (attr < 0) return err_set(e, "%s: cannot create attribute '%s'", file, name);
    int32_t v = value;
    int bad = H5Awrite(attr, H5T_NATIVE_INT32, &v) < 0;
    if (H5Aclose(attr) < 0) bad = 1;
    if (bad) return err_set(e, "%s: cannot write attribute '%s'", file, name);
    return 0;
}

// Reads a string attribute of obj (fixed or variable length) into out.
// `where` names the object in messages ("/" or a dataset path).
static int attr_read_str(char *out, size_t n, hid_t obj, const char *name, const char *file,
                         const char *where, Error *e) {
    htri_t exists = H5Aexists(obj, name);
    if (exists < 0) return err_set(e, "%s: %s: cannot look up attribute '%s'", file, where, name);
    if (!exists) return err_set(e, "%s: %s: missing attribute '%s'", file, where, name);
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0) return err_set(e, "%s: %s: cannot open attribute '%s'", file, where, name);
    hid_t ftype = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    hid_t mtype = -1;
    int rc = -1;
    if (ftype < 0 || space < 0) {
        err_set(e, "%s: %s: cannot read the type of attribute '%s'", file, where, name);
        goto done;
    }
    if (H5Tget_class(ftype) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1) {
        err_set(e, "%s: %s: attribute '%s' is not a single string", file, where, name);
        goto done;
    }
    htri_t vlen = H5Tis_variable_str(ftype);
    if (vlen < 0) {
        err_set(e, "%s: %s: cannot read the type of attribute '%s'", file, where, name);
        goto done;
    }
    if (vlen) {
        // Read in the file's character set (h5py writes UTF-8 by default, ASCII
        // when asked): HDF5 does not convert between the two.
        H5T_cset_t cset = H5Tget_cset(ftype);
        mtype = str_type_new();
        char *s = NULL;
        if (mtype < 0 || cset < 0 || H5Tset_cset(mtype, cset) < 0 || H5Aread(attr, mtype, &s) < 0) {
            err_set(e, "%s: %s: cannot read attribute '%s'", file, where, name);
            goto done;
        }
        snprintf(out, n, "%s", s ? s : "");
        H5free_memory(s);
    } else {
        size_t size = H5Tget_size(ftype);
        if (size == 0 || size >= 65536) {
            err_set(e, "%s: %s: attribute '%s' has an unusable string size %zu", file, where, name, size);
            goto done;
        }
        mtype = H5Tcopy(H5T_C_S1);
        char *buf = xcalloc(size + 1, 1);
        if (mtype < 0 || H5Tset_size(mtype, size + 1) < 0 || H5Aread(attr, mtype, buf) < 0) {
            free(buf);
            err_set(e, "%s: %s: cannot read attribute '%s'", file, where, name);
            goto done;
        }
        snprintf(out, n, "%s", buf);
        free(buf);
    }
    rc = 0;
done:
    if (mtype >= 0) H5Tclose(mtype);
    if (space >= 0) H5Sclose(space);
    if (ftype >= 0) H5Tclose(ftype);
    H5Aclose(attr);
    return rc;
}

static int attr_read_int(int *out, hid_t obj, const char *name, const char *file, Error *e) {
    htri_t exists = H5Aexists(obj, name);
    if (exists < 0) return err_set(e, "%s: /: cannot look up attribute '%s'", file, name);
    if (!exists) return err_set(e, "%s: /: missing attribute '%s'", file, name);
    hid_t attr = H5Aopen(obj, name, H5P_DEFAULT);
    if (attr < 0) return err_set(e, "%s: /: cannot open attribute '%s'", file, name);
    hid_t ftype = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    int rc = -1;
    int64_t v = 0;
    if (ftype < 0 || space < 0) {
        err_set(e, "%s: /: cannot read the type of attribute '%s'", file, name);
    } else if (H5Tget_class(ftype) != H5T_INTEGER || H5Sget_simple_extent_npoints(space) != 1) {
        err_set(e, "%s: /: attribute '%s' is not a single integer", file, name);
    } else if (H5Aread(attr, H5T_NATIVE_INT64, &v) < 0) {
        err_set(e, "%s: /: cannot read attribute '%s'", file, name);
    } else if (v < -1000000000 || v > 1000000000) {
        err_set(e, "%s: /: attribute '%s' = %lld is out of range", file, name, (long long)v);
    } else {
        *out = (int)v;
        rc = 0;
    }
    if (space >= 0) H5Sclose(space);
    if (ftype >= 0) H5Tclose(ftype);
    H5Aclose(attr);
    return rc;
}

// Whether obj has attribute `name`: 1 yes, 0 no, -1 (error set) cannot tell.
static int attr_present(hid_t obj, const char *name, const char *file, Error *e) {
    htri_t exists = H5Aexists(obj, name);
    if (exists < 0) return err_set(e, "%s: /: cannot look up attribute '%s'", file, name);
    return exists > 0;
}

// An optional integer attribute at the root: *out = dflt when absent; when
// present it must be >= 1.
static int attr_read_int_opt(int *out, hid_t obj, const char *name, int dflt, const char *file, Error *e) {
    int has = attr_present(obj, name, file, e);
    if (has < 0) return -1;
    if (!has) {
        *out = dflt;
        return 0;
    }
    if (attr_read_int(out, obj, name, file, e)) return -1;
    if (*out < 1) return err_set(e, "%s: /: attribute '%s' = %d must be >= 1", file, name, *out);
    return 0;
}

// Checks the model shape; `file` names the source in messages. dim and
// vocab_size may be 0 (not stated, as in a dump written by another tool) when
// `need_model` is 0; the writer always states them.
static int info_validate(const AttnDumpInfo *in, int need_model, const char *file, Error *e) {
    if (in->n_layers < 1 || in->n_layers > ATTN_DUMP_MAX_LAYERS)
        return err_set(e, "%s: n_layers = %d must be in 1..%d", file, in->n_layers, ATTN_DUMP_MAX_LAYERS);
    if (in->n_heads < 1 || in->n_heads > ATTN_DUMP_MAX_HEADS)
        return err_set(e, "%s: n_heads = %d must be in 1..%d", file, in->n_heads, ATTN_DUMP_MAX_HEADS);
    if ((long)in->n_layers * in->n_heads > ATTN_DUMP_MAX_LAYER_HEADS)
        return err_set(e, "%s: n_layers x n_heads = %d x %d exceeds %d (layer, head) pairs", file, in->n_layers,
                       in->n_heads, ATTN_DUMP_MAX_LAYER_HEADS);
    if (in->n_kv_heads < 1 || in->n_heads % in->n_kv_heads != 0)
        return err_set(e, "%s: n_kv_heads = %d must be >= 1 and divide n_heads = %d", file,
                       in->n_kv_heads, in->n_heads);
    if (in->dim < (need_model ? 1 : 0)) return err_set(e, "%s: dim = %d must be >= 1", file, in->dim);
    if (in->vocab_size < (need_model ? 1 : 0))
        return err_set(e, "%s: vocab_size = %d must be >= 1", file, in->vocab_size);
    if (in->layer_split_k < 0 || in->layer_split_k > in->n_layers)
        return err_set(e, "%s: layer_split_k = %d must be in 0..n_layers (%d)", file,
                       in->layer_split_k, in->n_layers);
    if (in->n_prefix_regs < 0 || in->n_suffix_regs < 0)
        return err_set(e, "%s: register counts (%d, %d) must be >= 0", file, in->n_prefix_regs,
                       in->n_suffix_regs);
    if (in->method[0] == '\0') return err_set(e, "%s: method is empty", file);
    return 0;
}

// ---------------------------------------------------------------------------
// Writer

static void writer_free_sample(AttnDumpWriter *w) {
    free(w->tokens);
    free(w->positions);
    free(w->kinds);
    free(w->attn);
    free(w->row_seen);
    free(w->key_seen);
    w->tokens = w->positions = NULL;
    w->kinds = w->row_seen = w->key_seen = NULL;
    w->attn = NULL;
    w->in_sample = 0;
    w->T = 0;
}

int attn_dump_create(AttnDumpWriter *w, const char *path, const AttnDumpInfo *info, Error *e) {
    memset(w, 0, sizeof *w);
    w->file = w->samples = -1;
    hdf5_quiet();
    if (strlen(path) >= sizeof w->path) return err_set(e, "%s: path too long", path);
    if (strnlen(info->method, sizeof info->method) >= sizeof info->method)
        return err_set(e, "%s: method name too long", path);
    if (info_validate(info, 1, path, e)) return -1;
    snprintf(w->path, sizeof w->path, "%s", path);
    atomic_tmp_path(w->tmp, sizeof w->tmp, path);
    w->info = *info;
    atomic_init(&w->bad_put, 0);

    if (make_parent_dirs(path, e)) return -1;
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) return err_set(e, "%s: cannot create HDF5 file %s: %s", path, w->tmp, strerror(errno));
    const AttnDumpInfo *in = &w->info;
    if (attr_write_str(w->file, "format", ATTN_DUMP_FORMAT, path, e) ||
        attr_write_int(w->file, "version", ATTN_DUMP_VERSION, path, e) ||
        attr_write_int(w->file, "n_layers", in->n_layers, path, e) ||
        attr_write_int(w->file, "n_heads", in->n_heads, path, e) ||
        attr_write_int(w->file, "n_kv_heads", in->n_kv_heads, path, e) ||
        attr_write_int(w->file, "dim", in->dim, path, e) ||
        attr_write_int(w->file, "vocab_size", in->vocab_size, path, e) ||
        attr_write_str(w->file, "method", in->method, path, e) ||
        attr_write_int(w->file, "layer_split_k", in->layer_split_k, path, e) ||
        attr_write_int(w->file, "n_prefix_regs", in->n_prefix_regs, path, e) ||
        attr_write_int(w->file, "n_suffix_regs", in->n_suffix_regs, path, e)) {
        attn_dump_abort(w);
        return -1;
    }
    w->samples = H5Gcreate2(w->file, "samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (w->samples < 0) {
        attn_dump_abort(w);
        return err_set(e, "%s: cannot create group /samples", path);
    }
    return 0;
}

int attn_dump_set_attr(AttnDumpWriter *w, const char *name, const char *value, Error *e) {
    htri_t exists = H5Aexists(w->file, name);
    if (exists < 0) return err_set(e, "%s: cannot look up attribute '%s'", w->path, name);
    if (exists) return err_set(e, "%s: attribute '%s' is already set", w->path, name);
    return attr_write_str(w->file, name, value, w->path, e);
}

int attn_dump_sample_begin(AttnDumpWriter *w, int T, const int32_t *tokens,
                           const int32_t *positions, const uint8_t *kinds, Error *e) {
    if (w->in_sample) return err_set(e, "%s: sample_begin while sample %d is open", w->path, w->n_samples);
    if (w->n_samples >= ATTN_DUMP_MAX_SAMPLES)
        return err_set(e, "%s: too many samples (at most %d)", w->path, ATTN_DUMP_MAX_SAMPLES);
    if (T < 1 || T > ATTN_DUMP_MAX_T)
        return err_set(e, "%s: sample %d: T = %d must be in 1..%d", w->path, w->n_samples, T, ATTN_DUMP_MAX_T);
    for (int t = 0; t < T; t++)
        if (kinds[t] >= TOKEN_KIND_COUNT)
            return err_set(e, "%s: sample %d: kinds[%d] = %d is not a token kind (0..%d)", w->path,
                           w->n_samples, t, kinds[t], TOKEN_KIND_COUNT - 1);
    size_t L = (size_t)w->info.n_layers, H = (size_t)w->info.n_heads, n = (size_t)T;
    size_t n_attn;
    if (!size_mul_ok(L * H, n * n, &n_attn) || !size_mul_ok(n_attn, sizeof(float), &(size_t){0}))
        return err_set(e, "%s: sample %d: attention buffer size overflows", w->path, w->n_samples);
    w->T = T;
    w->tokens = xmalloc(n * sizeof(int32_t));
    w->positions = xmalloc(n * sizeof(int32_t));
    w->kinds = xmalloc(n);
    memcpy(w->tokens, tokens, n * sizeof(int32_t));
    for (size_t t = 0; t < n; t++) w->positions[t] = positions ? positions[t] : (int32_t)t;
    memcpy(w->kinds, kinds, n);
    w->attn = xcalloc(n_attn, sizeof(float));
    w->row_seen = xcalloc(L * H * n, 1);
    w->key_seen = xcalloc(L * H * n, 1);
    atomic_store(&w->bad_put, 0);
    w->bad_msg[0] = '\0';
    w->in_sample = 1;
    return 0;
}

// Remembers the first bad put; later ones keep the first message.
__attribute__((format(printf, 2, 3)))
static void writer_bad_put(AttnDumpWriter *w, const char *fmt, ...) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&w->bad_put, &expected, 1)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->bad_msg, sizeof w->bad_msg, fmt, ap);
        va_end(ap);
    }
}

void attn_dump_sample_put(AttnDumpWriter *w, int layer, int head, int n_q, const int32_t *q_tok,
                          int n_k, const int32_t *k_tok, const float *probs) {
    if (!w->in_sample) {
        writer_bad_put(w, "attention put outside a sample (layer %d, head %d)", layer, head);
        return;
    }
    int L = w->info.n_layers, H = w->info.n_heads, T = w->T;
    if (layer < 0 || layer >= L || head < 0 || head >= H) {
        writer_bad_put(w, "layer %d / head %d out of range (n_layers %d, n_heads %d)", layer, head, L, H);
        return;
    }
    if (n_q < 0 || n_k < 0 || n_q > T || n_k > T) {
        writer_bad_put(w, "n_q = %d, n_k = %d exceed T = %d", n_q, n_k, T);
        return;
    }
    for (int j = 0; j < n_k; j++)
        if (k_tok[j] < 0 || k_tok[j] >= T) {
            writer_bad_put(w, "layer %d: key index %d is outside the sample (T = %d)", layer, k_tok[j], T);
            return;
        }
    size_t lh = (size_t)layer * (size_t)H + (size_t)head;
    float *a = w->attn + lh * (size_t)T * (size_t)T; // [T,T] of this (layer, head)
    uint8_t *rows = w->row_seen + lh * (size_t)T;
    uint8_t *keys = w->key_seen + lh * (size_t)T;
    for (int j = 0; j < n_k; j++) keys[k_tok[j]] = 1;
    for (int i = 0; i < n_q; i++) {
        int q = q_tok[i];
        if (q < 0 || q >= T) {
            writer_bad_put(w, "layer %d: query index %d is outside the sample (T = %d)", layer, q, T);
            return;
        }
        rows[q] = 1;
        float *dst = a + (size_t)q * (size_t)T;
        const float *src = probs + (size_t)i * (size_t)n_k;
        for (int j = 0; j < n_k; j++) dst[k_tok[j]] = src[j];
    }
}

void attn_dump_hook(void *ctx, int layer, int seq, int head, int n_q, const int32_t *q_tok,
                    int n_k, const int32_t *k_tok, const float *probs) {
    AttnDumpWriter *w = ctx;
    if (seq != 0) {
        writer_bad_put(w, "attention hook got sequence %d (layer %d, head %d); the dump takes one sequence per forward call",
                       seq, layer, head);
        return;
    }
    attn_dump_sample_put(w, layer, head, n_q, q_tok, n_k, k_tok, probs);
}

// Creates dataset `name` in loc and writes all of `data`.
static int dataset_write(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, int rank,
                         const hsize_t *dims, hid_t dcpl, const void *data, const char *file,
                         const char *group, Error *e) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    if (space < 0) return err_set(e, "%s: %s/%s: cannot make the dataspace", file, group, name);
    hid_t ds = H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Sclose(space);
    if (ds < 0) return err_set(e, "%s: %s/%s: cannot create the dataset", file, group, name);
    int bad = H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0;
    if (H5Dclose(ds) < 0) bad = 1;
    if (bad) return err_set(e, "%s: %s/%s: cannot write the dataset", file, group, name);
    return 0;
}

int attn_dump_sample_end(AttnDumpWriter *w, Error *e) {
    if (!w->in_sample) return err_set(e, "%s: sample_end without sample_begin", w->path);
    if (atomic_load(&w->bad_put)) {
        err_set(e, "%s: sample %d: %s", w->path, w->n_samples, w->bad_msg);
        writer_free_sample(w);
        return -1;
    }
    size_t L = (size_t)w->info.n_layers, H = (size_t)w->info.n_heads, T = (size_t)w->T;
    // A layer computed a query (kept a key) if any of its heads did.
    uint8_t *row_mask = xcalloc(L * T, 1);
    uint8_t *key_mask = xcalloc(L * T, 1);
    for (size_t l = 0; l < L; l++)
        for (size_t h = 0; h < H; h++)
            for (size_t t = 0; t < T; t++) {
                row_mask[l * T + t] |= w->row_seen[(l * H + h) * T + t];
                key_mask[l * T + t] |= w->key_seen[(l * H + h) * T + t];
            }

    char name[16], group[32];
    snprintf(name, sizeof name, "%06d", w->n_samples);
    snprintf(group, sizeof group, "/samples/%s", name);
    int rc = -1;
    hid_t dcpl = -1;
    hid_t g = H5Gcreate2(w->samples, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        err_set(e, "%s: cannot create group %s", w->path, group);
        goto done;
    }
    hsize_t d1[1] = {T};
    hsize_t d2[2] = {L, T};
    hsize_t d4[4] = {L, H, T, T};
    hsize_t chunk[4] = {1, 1, T, T}; // one chunk per (layer, head): a reader of one head inflates one chunk
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0 || H5Pset_chunk(dcpl, 4, chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
        H5Pset_deflate(dcpl, 4) < 0) {
        err_set(e, "%s: %s/attn: cannot set chunking and compression", w->path, group);
        goto done;
    }
    if (dataset_write(g, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, d1, H5P_DEFAULT, w->tokens, w->path, group, e) ||
        dataset_write(g, "positions", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, d1, H5P_DEFAULT, w->positions, w->path, group, e) ||
        dataset_write(g, "kinds", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, d1, H5P_DEFAULT, w->kinds, w->path, group, e) ||
        dataset_write(g, "attn", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d4, dcpl, w->attn, w->path, group, e) ||
        dataset_write(g, "row_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, d2, H5P_DEFAULT, row_mask, w->path, group, e) ||
        dataset_write(g, "key_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, d2, H5P_DEFAULT, key_mask, w->path, group, e))
        goto done;
    rc = 0;
done:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (g >= 0 && H5Gclose(g) < 0 && rc == 0) rc = err_set(e, "%s: cannot close group %s", w->path, group);
    free(row_mask);
    free(key_mask);
    writer_free_sample(w);
    if (rc == 0) w->n_samples++;
    return rc;
}

int attn_dump_close(AttnDumpWriter *w, Error *e) {
    if (w->in_sample) {
        err_set(e, "%s: closed with sample %d begun but not ended", w->path, w->n_samples);
        attn_dump_abort(w);
        return -1;
    }
    if (attr_write_int(w->file, "n_samples", w->n_samples, w->path, e)) {
        attn_dump_abort(w);
        return -1;
    }
    int bad = H5Gclose(w->samples) < 0;
    w->samples = -1;
    if (H5Fclose(w->file) < 0) bad = 1;
    w->file = -1;
    if (bad) {
        remove(w->tmp);
        return err_set(e, "%s: cannot close HDF5 file %s", w->path, w->tmp);
    }
    return rename_into_place(w->tmp, w->path, e);
}

void attn_dump_abort(AttnDumpWriter *w) {
    writer_free_sample(w);
    if (w->samples >= 0) H5Gclose(w->samples);
    if (w->file >= 0) H5Fclose(w->file);
    w->samples = w->file = -1;
    if (w->tmp[0]) remove(w->tmp);
}

// ---------------------------------------------------------------------------
// Reader

typedef struct {
    AttnDumpReader *r;
    Error *e;
    int failed;
} ListCtx;

static herr_t list_sample(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    ListCtx *c = data;
    AttnDumpReader *r = c->r;
    size_t len = strlen(name);
    int digits = len == 6;
    for (size_t i = 0; digits && i < len; i++) digits = name[i] >= '0' && name[i] <= '9';
    if (!digits) {
        err_set(c->e, "%s: /samples/%s: sample names must be six digits (000000, 000001, ...)", r->path, name);
        c->failed = 1;
        return 1;
    }
    H5O_info_t oinfo;
    if (H5Oget_info_by_name(g, name, &oinfo, H5P_DEFAULT) < 0 || oinfo.type != H5O_TYPE_GROUP) {
        err_set(c->e, "%s: /samples/%s: is not a group", r->path, name);
        c->failed = 1;
        return 1;
    }
    r->names = xrealloc(r->names, (size_t)(r->n_samples + 1) * sizeof *r->names);
    snprintf(r->names[r->n_samples], sizeof r->names[0], "%s", name);
    r->n_samples++;
    return 0;
}

// The root attributes after format and version: the minimal schema's
// (n_layers, n_heads, layer_split_k, n_prefix_regs, n_suffix_regs) are
// required, the ones earnest adds optional (attn_dump.h).
static int info_read(AttnDumpInfo *in, hid_t file, const char *path, Error *e) {
    if (attr_read_int(&in->n_layers, file, "n_layers", path, e) ||
        attr_read_int(&in->n_heads, file, "n_heads", path, e) ||
        attr_read_int(&in->layer_split_k, file, "layer_split_k", path, e) ||
        attr_read_int(&in->n_prefix_regs, file, "n_prefix_regs", path, e) ||
        attr_read_int(&in->n_suffix_regs, file, "n_suffix_regs", path, e))
        return -1;
    if (attr_read_int_opt(&in->n_kv_heads, file, "n_kv_heads", in->n_heads, path, e) ||
        attr_read_int_opt(&in->dim, file, "dim", 0, path, e) ||
        attr_read_int_opt(&in->vocab_size, file, "vocab_size", 0, path, e))
        return -1;
    int has_method = attr_present(file, "method", path, e);
    if (has_method < 0) return -1;
    if (has_method) {
        if (attr_read_str(in->method, sizeof in->method, file, "method", path, "/", e)) return -1;
    } else {
        snprintf(in->method, sizeof in->method, "unknown");
    }
    if (info_validate(in, 0, path, e)) {
        err_prefix(e, "root attributes: ");
        return -1;
    }
    return 0;
}

// Validates the open file r->file: root attributes, /samples and its names.
static int reader_validate(AttnDumpReader *r, Error *e) {
    const char *path = r->path;
    char format[128];
    htri_t has_format = H5Aexists(r->file, "format");
    if (has_format <= 0) {
        err_set(e, "%s: not an earnest attention dump (no 'format' attribute at /)", path);
        goto fail;
    }
    if (attr_read_str(format, sizeof format, r->file, "format", path, "/", e)) goto fail;
    if (strcmp(format, ATTN_DUMP_FORMAT) != 0) {
        err_set(e, "%s: not an earnest attention dump (format = '%s', expected '%s')", path, format,
                ATTN_DUMP_FORMAT);
        goto fail;
    }
    int version;
    if (attr_read_int(&version, r->file, "version", path, e)) goto fail;
    if (version != ATTN_DUMP_VERSION) {
        err_set(e, "%s: /: attention dump version %d is not supported (this build reads version %d)",
                path, version, ATTN_DUMP_VERSION);
        goto fail;
    }
    if (info_read(&r->info, r->file, path, e)) goto fail;

    htri_t has_samples = H5Lexists(r->file, "samples", H5P_DEFAULT);
    if (has_samples <= 0) {
        err_set(e, "%s: missing group /samples", path);
        goto fail;
    }
    H5O_info_t oinfo;
    if (H5Oget_info_by_name(r->file, "samples", &oinfo, H5P_DEFAULT) < 0 || oinfo.type != H5O_TYPE_GROUP) {
        err_set(e, "%s: /samples is not a group", path);
        goto fail;
    }
    hid_t g = H5Gopen2(r->file, "samples", H5P_DEFAULT);
    if (g < 0) {
        err_set(e, "%s: cannot open group /samples", path);
        goto fail;
    }
    ListCtx c = {r, e, 0};
    hsize_t idx = 0;
    herr_t it = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, list_sample, &c);
    H5Gclose(g);
    if (c.failed) goto fail;
    if (it < 0) {
        err_set(e, "%s: cannot list /samples", path);
        goto fail;
    }
    if (H5Aexists(r->file, "n_samples") > 0) {
        int n;
        if (attr_read_int(&n, r->file, "n_samples", path, e)) goto fail;
        if (n != r->n_samples) {
            err_set(e, "%s: /: n_samples = %d but /samples holds %d groups", path, n, r->n_samples);
            goto fail;
        }
    }
    return 0;
fail:
    attn_dump_reader_close(r);
    return -1;
}

int attn_dump_open(AttnDumpReader *r, const char *path, Error *e) {
    memset(r, 0, sizeof *r);
    r->file = -1;
    hdf5_quiet();
    if (strlen(path) >= sizeof r->path) return err_set(e, "%s: path too long", path);
    snprintf(r->path, sizeof r->path, "%s", path);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    fclose(f);
    if (H5Fis_hdf5(path) <= 0) return err_set(e, "%s: not an HDF5 file", path);
    r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file < 0) return err_set(e, "%s: cannot open as HDF5", path);
    return reader_validate(r, e);
}

int attn_dump_open_image(AttnDumpReader *r, const void *image, size_t len, const char *name, Error *e) {
    memset(r, 0, sizeof *r);
    r->file = -1;
    hdf5_quiet();
    snprintf(r->path, sizeof r->path, "%s", name);
    // The core driver reads the file from memory; HDF5 copies the image, so it
    // need not outlive the reader.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 16, 0) < 0 || H5Pset_file_image(fapl, (void *)image, len) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return err_set(e, "%s: cannot set up an in-memory HDF5 file", name);
    }
    r->file = H5Fopen(name, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (r->file < 0) return err_set(e, "%s: cannot open as HDF5", name);
    return reader_validate(r, e);
}

void attn_dump_reader_close(AttnDumpReader *r) {
    if (r->file >= 0) H5Fclose(r->file);
    r->file = -1;
    free(r->names);
    r->names = NULL;
    r->n_samples = 0;
}

// Reads dataset `name` of group g, checking its type class and shape.
// want[d] < 0 takes the file's size (and returns it in want).
static int dataset_read(void *out, size_t out_capacity, hid_t g, const char *name, H5T_class_t cls,
                        hid_t mem_type, int rank, long *want, const char *file, const char *group,
                        Error *e) {
    htri_t exists = H5Lexists(g, name, H5P_DEFAULT);
    if (exists <= 0) return err_set(e, "%s: %s: missing dataset '%s'", file, group, name);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) return err_set(e, "%s: %s/%s: cannot open the dataset", file, group, name);
    hid_t type = H5Dget_type(ds);
    hid_t space = H5Dget_space(ds);
    int rc = -1;
    hsize_t dims[8];
    int frank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (type < 0 || space < 0 || frank < 0) {
        err_set(e, "%s: %s/%s: cannot read type and shape", file, group, name);
        goto done;
    }
    if (H5Tget_class(type) != cls) {
        err_set(e, "%s: %s/%s: has the wrong element type (expected %s)", file, group, name,
                cls == H5T_FLOAT ? "float" : "integer");
        goto done;
    }
    if (frank != rank) {
        err_set(e, "%s: %s/%s: has %d dimensions, expected %d", file, group, name, frank, rank);
        goto done;
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    for (int d = 0; d < rank; d++) {
        if (want[d] < 0) {
            if (dims[d] > (hsize_t)ATTN_DUMP_MAX_T || dims[d] == 0) {
                err_set(e, "%s: %s/%s: length %llu is outside 1..%d", file, group, name,
                        (unsigned long long)dims[d], ATTN_DUMP_MAX_T);
                goto done;
            }
            want[d] = (long)dims[d];
        } else if (dims[d] != (hsize_t)want[d]) {
            char got[128] = "", exp[128] = "";
            for (int k = 0; k < rank; k++) {
                size_t lg = strlen(got), le = strlen(exp);
                snprintf(got + lg, sizeof got - lg, "%s%llu", k ? "," : "", (unsigned long long)dims[k]);
                snprintf(exp + le, sizeof exp - le, "%s%ld", k ? "," : "", want[k] < 0 ? (long)dims[k] : want[k]);
            }
            err_set(e, "%s: %s/%s: shape [%s] disagrees with the expected [%s] "
                    "(root attributes n_layers, n_heads and the sample's token count T)",
                    file, group, name, got, exp);
            goto done;
        }
    }
    if (out) {
        size_t n = 1;
        for (int d = 0; d < rank; d++) n *= (size_t)want[d];
        if (n * H5Tget_size(mem_type) > out_capacity) {
            err_set(e, "%s: %s/%s: larger than the buffer", file, group, name);
            goto done;
        }
        if (H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
            err_set(e, "%s: %s/%s: cannot read the data", file, group, name);
            goto done;
        }
    }
    rc = 0;
done:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Dclose(ds);
    return rc;
}

// An optional per-layer mask [L,T] (row_mask, key_mask): absent means every
// row / key present (all 1), so the causal rule alone decides what a row sees.
static int mask_read(uint8_t *out, hid_t g, const char *name, long *want, const char *file, const char *group,
                     Error *e) {
    size_t n = (size_t)want[0] * (size_t)want[1];
    htri_t exists = H5Lexists(g, name, H5P_DEFAULT);
    if (exists < 0) return err_set(e, "%s: %s: cannot look up dataset '%s'", file, group, name);
    if (!exists) {
        memset(out, 1, n);
        return 0;
    }
    return dataset_read(out, n, g, name, H5T_INTEGER, H5T_NATIVE_UINT8, 2, want, file, group, e);
}

int attn_dump_read_sample(AttnSample *out, AttnDumpReader *r, int i, Error *e) {
    memset(out, 0, sizeof *out);
    if (i < 0 || i >= r->n_samples)
        return err_set(e, "%s: sample %d out of range (the dump holds %d)", r->path, i, r->n_samples);
    char group[32];
    snprintf(group, sizeof group, "/samples/%s", r->names[i]);
    hid_t g = H5Gopen2(r->file, group, H5P_DEFAULT);
    if (g < 0) return err_set(e, "%s: cannot open group %s", r->path, group);
    long L = r->info.n_layers, H = r->info.n_heads;
    long want1[1] = {-1};
    int rc = -1;
    // tokens fixes T; everything else must agree with it.
    if (dataset_read(NULL, 0, g, "tokens", H5T_INTEGER, H5T_NATIVE_INT32, 1, want1, r->path, group, e)) goto done;
    long T = want1[0];
    size_t n = (size_t)T;
    out->index = i;
    out->T = (int)T;
    out->tokens = xmalloc(n * sizeof(int32_t));
    out->positions = xmalloc(n * sizeof(int32_t));
    out->kinds = xmalloc(n);
    out->row_mask = xmalloc((size_t)L * n);
    out->key_mask = xmalloc((size_t)L * n);
    long w1[1] = {T}, w2[2] = {L, T}, w4[4] = {L, H, T, T};
    if (dataset_read(out->tokens, n * 4, g, "tokens", H5T_INTEGER, H5T_NATIVE_INT32, 1, w1, r->path, group, e) ||
        dataset_read(out->positions, n * 4, g, "positions", H5T_INTEGER, H5T_NATIVE_INT32, 1, w1, r->path, group, e) ||
        dataset_read(out->kinds, n, g, "kinds", H5T_INTEGER, H5T_NATIVE_UINT8, 1, w1, r->path, group, e) ||
        mask_read(out->row_mask, g, "row_mask", w2, r->path, group, e) ||
        mask_read(out->key_mask, g, "key_mask", w2, r->path, group, e) ||
        dataset_read(NULL, 0, g, "attn", H5T_FLOAT, H5T_NATIVE_FLOAT, 4, w4, r->path, group, e))
        goto done;
    for (size_t t = 0; t < n; t++)
        if (out->kinds[t] >= TOKEN_KIND_COUNT) {
            err_set(e, "%s: %s/kinds[%zu] = %d is not a token kind (0..%d)", r->path, group, t,
                    out->kinds[t], TOKEN_KIND_COUNT - 1);
            goto done;
        }
    rc = 0;
done:
    H5Gclose(g);
    if (rc) attn_sample_free(out);
    return rc;
}

void attn_sample_free(AttnSample *s) {
    free(s->tokens);
    free(s->positions);
    free(s->kinds);
    free(s->row_mask);
    free(s->key_mask);
    memset(s, 0, sizeof *s);
}

int attn_dump_read_head(float *out, AttnDumpReader *r, const AttnSample *s, int layer, int head,
                        Error *e) {
    if (layer < 0 || layer >= r->info.n_layers || head < 0 || head >= r->info.n_heads)
        return err_set(e, "%s: layer %d / head %d out of range (n_layers %d, n_heads %d)", r->path,
                       layer, head, r->info.n_layers, r->info.n_heads);
    char name[48];
    snprintf(name, sizeof name, "/samples/%s/attn", r->names[s->index]);
    hid_t ds = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (ds < 0) return err_set(e, "%s: cannot open %s", r->path, name);
    hid_t fspace = H5Dget_space(ds);
    hsize_t T = (hsize_t)s->T;
    hsize_t start[4] = {(hsize_t)layer, (hsize_t)head, 0, 0};
    hsize_t count[4] = {1, 1, T, T};
    hsize_t mdims[2] = {T, T};
    hid_t mspace = H5Screate_simple(2, mdims, NULL);
    int rc = 0;
    if (fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, out) < 0)
        rc = err_set(e, "%s: %s: cannot read layer %d head %d", r->path, name, layer, head);
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    H5Dclose(ds);
    return rc;
}
