// fuzz_attn_dump.c: libFuzzer harness for the attention-dump reader
// (analysis/attn_dump.c: attn_dump_open_image, attn_dump_read_sample,
// attn_dump_read_head) and the metrics that read it (attn_acc_add_sample,
// which refuses rows that are not probability distributions).
//
// The input does not become an HDF5 file byte for byte: HDF5's own format
// parser (libhdf5, not instrumented, not ours to fix) would reject almost every
// mutation before our code runs. Instead the bytes drive a generator that
// writes a structurally valid HDF5 file in memory (the core driver) with the
// HDF5 API, choosing for every root attribute and every sample dataset whether
// it is right, missing, of another type or class, of another shape, and what
// values it holds (token kinds, masks, attention rows: softmax over the keys
// each row sees, perturbed, or raw bytes). The file image then goes through
// the reader exactly as `earnest analyze` reads a dump.
//
// Oracle: when every choice is one the documented schema allows (attn_dump.h:
// the minimal schema, optional attributes, any integer / float type, masks
// present or not) and every computed row is a softmax, reading and analysing
// must succeed and every aggregated metric be finite; when the only defect is
// one computed row scaled off 1, or one of its visible entries made NaN, inf or
// negative, the analysis must fail. Otherwise it may do either, but must not
// crash, leak or hit undefined behaviour. Shapes stay small (L, H <= 3,
// T <= 6), so memory per input is bounded.
// Build and run: tests/run_fuzz.sh.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "analysis/attn_dump.h"
#include "analysis/attn_metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *p;
    size_t n, pos;
    int expect;   // 1: must analyse, -1: must be refused, 0: either
    int perturbed; // a row was made invalid (expect -1 if nothing else is off)
} Gen;

static unsigned u8(Gen *g) { return g->pos < g->n ? g->p[g->pos++] : 0; }
static void off_schema(Gen *g) { g->expect = 0; }

// ---- attributes ---------------------------------------------------------------

static void attr_int(Gen *g, hid_t loc, const char *name, hid_t ftype, long long v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, H5T_NATIVE_LLONG, &v) < 0) off_schema(g);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
}

static void attr_float(Gen *g, hid_t loc, const char *name, double v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, H5T_NATIVE_DOUBLE, &v) < 0) off_schema(g);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
}

// mode 0: variable-length UTF-8, 1: variable-length ASCII, 2: fixed length.
static void attr_str(Gen *g, hid_t loc, const char *name, const char *v, int mode) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (mode < 2) {
        H5Tset_size(t, H5T_VARIABLE);
        if (mode == 0) H5Tset_cset(t, H5T_CSET_UTF8);
    } else {
        H5Tset_size(t, strlen(v) ? strlen(v) : 1);
    }
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    const void *buf = mode < 2 ? (const void *)&v : (const void *)v;
    if (a < 0 || H5Awrite(a, t, buf) < 0) off_schema(g);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

// An integer attribute whose right value is `good`: written right (as int32 or
// int8), or missing (allowed when optional), or wrong (a value from the table,
// a float, a string).
static void attr_pick(Gen *g, hid_t loc, const char *name, long long good, int optional) {
    static const long long WEIRD[8] = {0, -1, 2, 7, 1025, 1 << 20, 2000000000LL, 1LL << 40};
    unsigned b = u8(g);
    switch (b & 7) {
    case 0: case 1: case 2: attr_int(g, loc, name, H5T_STD_I32LE, good); break;
    case 3: attr_int(g, loc, name, H5T_STD_I8LE, good); break;
    case 4: if (!optional) off_schema(g); break;
    case 5: attr_int(g, loc, name, H5T_STD_I64LE, WEIRD[(b >> 3) & 7]); if (WEIRD[(b >> 3) & 7] != good) off_schema(g); break;
    case 6: attr_float(g, loc, name, (double)good); off_schema(g); break;
    default: attr_str(g, loc, name, "1", 0); off_schema(g); break;
    }
}

static void root_attrs(Gen *g, hid_t f, int L, int H, int n_samples) {
    unsigned fm = u8(g) % 6;
    if (fm < 3) attr_str(g, f, "format", ATTN_DUMP_FORMAT, (int)fm);
    else if (fm == 3) off_schema(g);                               // missing
    else if (fm == 4) attr_str(g, f, "format", "earnest-attx", 0), off_schema(g);
    else attr_int(g, f, "format", H5T_STD_I32LE, 1), off_schema(g);
    attr_pick(g, f, "version", ATTN_DUMP_VERSION, 0);
    attr_pick(g, f, "n_layers", L, 0);
    attr_pick(g, f, "n_heads", H, 0);
    attr_pick(g, f, "layer_split_k", u8(g) % (unsigned)(L + 1), 0);
    attr_pick(g, f, "n_prefix_regs", u8(g) % 3, 0);
    attr_pick(g, f, "n_suffix_regs", u8(g) % 3, 0);
    attr_pick(g, f, "n_kv_heads", H, 1);
    attr_pick(g, f, "dim", 16, 1);
    attr_pick(g, f, "vocab_size", 100, 1);
    attr_pick(g, f, "n_samples", n_samples, 1);
    unsigned mm = u8(g) % 4;
    if (mm == 1) attr_str(g, f, "method", "earn", 2);
    else if (mm == 2) attr_str(g, f, "method", "", 0), off_schema(g); // an empty method is refused
    else if (mm == 3) attr_int(g, f, "method", H5T_STD_I32LE, 3), off_schema(g);
}

// ---- sample datasets ----------------------------------------------------------

// Creates dataset `name` with the given file type and shape and writes buf
// (unless buf is NULL: chunks left unwritten read back as the fill value 0).
static void write_ds(Gen *g, hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                     const hsize_t *dims, const void *buf, int chunked) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked) {
        hsize_t chunk[4];
        for (int d = 0; d < rank; d++) chunk[d] = rank == 4 && d < 2 ? 1 : dims[d];
        H5Pset_chunk(dcpl, rank, chunk);
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t ds = H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (ds < 0 || (buf && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)) off_schema(g);
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

// A [T] integer array (tokens, positions, kinds) in one of its right or wrong forms.
static void write_vec(Gen *g, hid_t loc, const char *name, const int32_t *v, int T, hid_t good_type) {
    unsigned m = u8(g) % 8;
    hsize_t dims[2] = {(hsize_t)T, 0};
    int32_t big[8] = {0};
    memcpy(big, v, (size_t)T * sizeof *v);
    if (m < 4) write_ds(g, loc, name, good_type, H5T_NATIVE_INT32, 1, dims, v, 0);
    else if (m == 4) write_ds(g, loc, name, H5T_STD_I64LE, H5T_NATIVE_INT32, 1, dims, v, 1);
    else if (m == 5) off_schema(g); // missing
    else if (m == 6) {
        hsize_t d2[2] = {1, (hsize_t)T}, d1[1] = {(hsize_t)T + 1};
        if (u8(g) & 1) write_ds(g, loc, name, good_type, H5T_NATIVE_INT32, 2, d2, v, 0);
        else write_ds(g, loc, name, good_type, H5T_NATIVE_INT32, 1, d1, big, 0);
        off_schema(g);
    } else {
        write_ds(g, loc, name, H5T_IEEE_F32LE, H5T_NATIVE_INT32, 1, dims, v, 0);
        off_schema(g);
    }
}

// row_mask / key_mask [L,T]: absent (all 1 for the reader), present with
// values from the input, or wrong. *out gets what the reader will use.
static void write_mask(Gen *g, hid_t loc, const char *name, uint8_t *out, int L, int T) {
    unsigned m = u8(g) % 6;
    size_t n = (size_t)L * (size_t)T;
    memset(out, 1, n);
    if (m < 2) return;
    for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(u8(g) % 3 == 0 ? 0 : 1 + (m == 3) * (i & 1));
    hsize_t dims[2] = {(hsize_t)L, (hsize_t)T};
    if (m < 4) {
        write_ds(g, loc, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dims, out, 0);
        return;
    }
    off_schema(g);
    uint8_t wide[3 * 7] = {0};
    if (m == 4) {
        dims[1] = (hsize_t)T + 1;
        write_ds(g, loc, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, dims, wide, 0);
    } else {
        write_ds(g, loc, name, H5T_IEEE_F32LE, H5T_NATIVE_UINT8, 2, dims, out, 0);
    }
}

// Makes one computed row with a visible key invalid: an entry NaN, inf or
// negative, or the row scaled off 1 (by 1% either way, ten times the tolerance).
static void perturb(Gen *g, float *A, const uint8_t *rm, const uint8_t *km, int L, int H, int T) {
    int cand = 0, target = (int)u8(g);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (cand == 0) return;
            target %= cand;
            cand = 0;
        }
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++)
                for (int q = 0; q < T; q++) {
                    int vis[8], nv = 0;
                    for (int k = 0; k <= q; k++)
                        if (km[l * T + k]) vis[nv++] = k;
                    if (!rm[l * T + q] || nv == 0 || (pass == 1 && cand != target) || pass == 0) {
                        cand += rm[l * T + q] && nv > 0;
                        continue;
                    }
                    float *row = A + (((size_t)l * H + h) * T + q) * T;
                    int k = vis[u8(g) % (unsigned)nv];
                    unsigned how = u8(g) % 5;
                    if (how == 0) row[k] = NAN;
                    else if (how == 1) row[k] = INFINITY;
                    else if (how == 2) row[k] = -0.25f;
                    else
                        for (int j = 0; j < nv; j++) row[vis[j]] *= how == 3 ? 1.01f : 0.99f;
                    g->perturbed = 1;
                    return;
                }
    }
}

// The attention of one sample, A [L,H,T,T]: every computed row a softmax over
// the keys it sees (logits from the input), what no row sees 0 or NaN (the
// reader must not look there); perturbed; or raw input bytes.
static void attn_values(Gen *g, float *A, const uint8_t *rm, const uint8_t *km, int L, int H, int T) {
    size_t n = (size_t)L * (size_t)H * (size_t)T * (size_t)T;
    unsigned vm = u8(g) % 8;
    if (vm >= 6) {
        for (size_t i = 0; i < n; i++) {
            uint32_t b = u8(g) | u8(g) << 8 | u8(g) << 16 | (uint32_t)u8(g) << 24;
            memcpy(&A[i], &b, sizeof b);
        }
        off_schema(g);
        return;
    }
    for (size_t i = 0; i < n; i++) A[i] = vm == 1 ? NAN : 0.0f;
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++)
            for (int q = 0; q < T; q++) {
                if (!rm[l * T + q]) continue;
                float *row = A + (((size_t)l * H + h) * T + q) * T;
                double x[8], mx = -1e300, s = 0;
                for (int k = 0; k <= q; k++)
                    if (km[l * T + k]) {
                        x[k] = (int8_t)u8(g) / 16.0;
                        if (x[k] > mx) mx = x[k];
                    }
                for (int k = 0; k <= q; k++)
                    if (km[l * T + k]) s += (x[k] = exp(x[k] - mx));
                for (int k = 0; k <= q; k++)
                    if (km[l * T + k]) row[k] = (float)(x[k] / s);
            }
    if (vm == 5) perturb(g, A, rm, km, L, H, T);
}

static void write_attn(Gen *g, hid_t sg, const float *A, int L, int H, int T) {
    unsigned am = u8(g) % 8;
    hsize_t d4[4] = {(hsize_t)L, (hsize_t)H, (hsize_t)T, (hsize_t)T};
    if (am < 3) write_ds(g, sg, "attn", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d4, A, 1);
    else if (am == 3) write_ds(g, sg, "attn", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d4, A, 0);
    else if (am == 4) write_ds(g, sg, "attn", u8(g) & 1 ? H5T_IEEE_F64LE : H5T_IEEE_F32BE, H5T_NATIVE_FLOAT, 4, d4, A, 0);
    else if (am == 5) off_schema(g); // missing
    else if (am == 6) {
        d4[u8(g) % 4] += 1;
        float *big = calloc((size_t)(L + 1) * (H + 1) * (T + 1) * (T + 1), sizeof(float));
        write_ds(g, sg, "attn", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d4, big, 0);
        free(big);
        off_schema(g);
    } else {
        write_ds(g, sg, "attn", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, d4, NULL, 1); // chunks never written
        off_schema(g);
    }
}

static void write_sample(Gen *g, hid_t samples, int i, int L, int H) {
    static const char *WEIRD[4] = {"abc", "1234567", "00001", "00000a"};
    char name[16];
    unsigned nm = u8(g) % 8;
    if (nm < 6) snprintf(name, sizeof name, "%06d", i);
    else if (nm == 6) snprintf(name, sizeof name, "%06d", i + 10); // gaps are allowed
    else snprintf(name, sizeof name, "%s", WEIRD[u8(g) % 4]), off_schema(g);
    hid_t sg = H5Gcreate2(samples, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (sg < 0) {
        off_schema(g);
        return;
    }
    int T = 1 + (int)(u8(g) % 6);
    int32_t tok[6], pos[6], kinds[6];
    for (int t = 0; t < T; t++) {
        tok[t] = (int32_t)u8(g);
        pos[t] = t;
        kinds[t] = (int32_t)(u8(g) % 7);
        if (kinds[t] >= TOKEN_KIND_COUNT) off_schema(g);
    }
    write_vec(g, sg, "tokens", tok, T, H5T_STD_I32LE);
    write_vec(g, sg, "positions", pos, T, H5T_STD_I32LE);
    write_vec(g, sg, "kinds", kinds, T, H5T_STD_U8LE);
    uint8_t rm[3 * 6], km[3 * 6];
    write_mask(g, sg, "row_mask", rm, L, T);
    write_mask(g, sg, "key_mask", km, L, T);
    float A[3 * 3 * 6 * 6];
    attn_values(g, A, rm, km, L, H, T);
    write_attn(g, sg, A, L, H, T);
    H5Gclose(sg);
}

// Builds the file in memory and returns its image (malloc'ed; NULL when HDF5
// could not make one).
static void *build(Gen *g, size_t *len) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 12, 0);
    hid_t f = H5Fcreate("fuzz_gen.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) return NULL;
    int L = 1 + (int)(u8(g) % 3), H = 1 + (int)(u8(g) % 3), n = (int)(u8(g) % 4);
    root_attrs(g, f, L, H, n);
    unsigned sm = u8(g) % 8;
    if (sm == 7) {
        off_schema(g); // no /samples
    } else if (sm == 6) {
        hsize_t d[1] = {1};
        int32_t one = 1;
        write_ds(g, f, "samples", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, d, &one, 0);
        off_schema(g);
    } else {
        hid_t s = H5Gcreate2(f, "samples", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        for (int i = 0; i < n && s >= 0; i++) write_sample(g, s, i, L, H);
        if (s >= 0) H5Gclose(s);
        else off_schema(g);
    }
    void *img = NULL;
    ssize_t sz = H5Fflush(f, H5F_SCOPE_GLOBAL) < 0 ? -1 : H5Fget_file_image(f, NULL, 0);
    if (sz > 0 && (img = malloc((size_t)sz)) && H5Fget_file_image(f, img, (size_t)sz) != sz) {
        free(img);
        img = NULL;
    }
    H5Fclose(f);
    *len = sz > 0 ? (size_t)sz : 0;
    return img;
}

// What `earnest analyze` does with a dump, on the image; 0 when it analyses.
static int analyse(const void *img, size_t len, Error *e) {
    AttnDumpReader r;
    if (attn_dump_open_image(&r, img, len, "fuzz.h5", e)) return -1;
    AttnMetricOpts o;
    attn_metric_opts_default(&o);
    AttnMetricsAcc acc;
    attn_acc_init(&acc, r.info.n_layers, r.info.n_heads);
    int rc = 0;
    for (int i = 0; i < r.n_samples && rc == 0; i++) {
        AttnSample s;
        rc = attn_dump_read_sample(&s, &r, i, e);
        if (rc == 0) {
            float A[1];
            if (attn_dump_read_head(A, &r, &s, r.info.n_layers, 0, e) == 0) abort(); // out of range
            rc = attn_acc_add_sample(&acc, &r, &s, &o, e);
            attn_sample_free(&s);
        }
    }
    // A dump that passed the row check gives finite metrics everywhere.
    for (int l = ATTN_LAYER_LATE; rc == 0 && l < acc.n_layers; l++)
        for (int h = ATTN_HEAD_MEAN; h < acc.n_heads; h++)
            for (int rows = 0; rows < ATTN_ROWS_COUNT; rows++)
                for (int m = 0; m < ATTN_METRIC_COUNT; m++) {
                    double v;
                    if (attn_acc_value(&acc, l, h, rows, m, &v) && !isfinite(v)) abort();
                }
    attn_acc_free(&acc);
    attn_dump_reader_close(&r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    Gen g = {data, size, 0, 1, 0};
    size_t len;
    void *img = build(&g, &len);
    if (!img) return 0;
    Error e = {{0}};
    int rc = analyse(img, len, &e);
    free(img);
    int expect = g.expect == 1 && g.perturbed ? -1 : g.expect;
    if (getenv("FUZZ_ATTN_VERBOSE")) // to see what an input makes: FUZZ_ATTN_VERBOSE=1 ./fuzz_attn_dump FILE
        fprintf(stderr, "image %zu bytes, expect %d, analysis rc %d %s\n", len, expect, rc, rc ? e.msg : "");
    if ((expect == 1 && rc != 0) || (expect == -1 && rc == 0)) {
        fprintf(stderr, "fuzz_attn_dump: a %s dump was %s: %s\n", expect == 1 ? "valid" : "perturbed",
                rc ? "refused" : "accepted", rc ? e.msg : "");
        abort();
    }
    return 0;
}
