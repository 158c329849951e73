// test_attn_dump.c: the attention dump's writer and reader: round trip through
// the AttnHook-shaped API (prefill blocks and one-row decode blocks, EARN-style
// layers), atomic creation, bad writer calls, every kind of bad file, and the
// file as h5py sees it (names, shapes, dtypes, attributes, chunking, filters).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "analysis/attn_dump.h"

static char g_dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/earnest_attn_dump_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return remove_tree(g_dir);
}

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_dir, name); }

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

#define L_ 3
#define H_ 2
#define K_ 1 // EARN split: layer 0 sees everything, layers 1..2 only registers and targets

static const AttnDumpInfo INFO = {
    .n_layers = L_, .n_heads = H_, .n_kv_heads = 1, .dim = 16, .vocab_size = 100,
    .method = "earn", .layer_split_k = K_, .n_prefix_regs = 1, .n_suffix_regs = 1,
};

// The reference attention of sample s: a deterministic value for every
// (layer, head, q, k) the layer computes and can see, 0 elsewhere.
static float ref_value(int s, int l, int h, int q, int k) {
    return (float)(1000 * s + 100 * l + 10 * h + q) + 0.001f * (float)k + 0.5f;
}

// Sample s: T tokens, kinds [prefix, history..., suffix, target, target].
// Layers >= K_ keep and compute only non-history tokens (EARN plan).
static int sample_T(int s) { return s == 0 ? 7 : 5; }
static uint8_t sample_kind(int T, int t) {
    return t == 0 ? 1 : t == T - 3 ? 4 : t >= T - 2 ? 5 : 3;
}
static int kept(int l, int kind) { return l < K_ || kind != 3; }

// Feeds sample s as the runtime would: layer 0 and the first layer >= K_ as
// one prefill block (all computed queries x all kept keys), the last layer as
// a prefill of the prompt followed by one-row decode calls for the targets.
static void feed_sample(AttnDumpWriter *w, int s) {
    int T = sample_T(s);
    int32_t tok[16], pos[16], q_tok[16], k_tok[16];
    uint8_t kinds[16];
    for (int t = 0; t < T; t++) tok[t] = 10 + t + s, pos[t] = 2 * t, kinds[t] = sample_kind(T, t);
    Error e;
    if (attn_dump_sample_begin(w, T, tok, pos, kinds, &e)) fail_msg("%s", e.msg);
    float probs[256];
    for (int l = 0; l < L_; l++)
        for (int h = 0; h < H_; h++) {
            int nk = 0;
            for (int t = 0; t < T; t++)
                if (kept(l, kinds[t])) k_tok[nk++] = t;
            if (l < L_ - 1) {
                int nq = 0;
                for (int t = 0; t < T; t++)
                    if (kept(l, kinds[t])) q_tok[nq++] = t;
                for (int i = 0; i < nq; i++)
                    for (int j = 0; j < nk; j++)
                        probs[i * nk + j] = k_tok[j] <= q_tok[i] ? ref_value(s, l, h, q_tok[i], k_tok[j]) : 0;
                attn_dump_sample_put(w, l, h, nq, q_tok, nk, k_tok, probs);
            } else {
                // prompt part (kinds != target), then one query per target over the keys so far
                int nq = 0, nkp = 0;
                for (int t = 0; t < T; t++)
                    if (kept(l, kinds[t]) && kinds[t] != 5) q_tok[nq++] = t;
                for (int j = 0; j < nk; j++)
                    if (kinds[k_tok[j]] != 5) nkp++;
                for (int i = 0; i < nq; i++)
                    for (int j = 0; j < nkp; j++)
                        probs[i * nkp + j] = k_tok[j] <= q_tok[i] ? ref_value(s, l, h, q_tok[i], k_tok[j]) : 0;
                attn_dump_hook(w, l, 0, h, nq, q_tok, nkp, k_tok, probs);
                for (int j = nkp; j < nk; j++) {
                    int32_t q = k_tok[j];
                    for (int jj = 0; jj <= j; jj++) probs[jj] = ref_value(s, l, h, q, k_tok[jj]);
                    attn_dump_hook(w, l, 0, h, 1, &q, j + 1, k_tok, probs);
                }
            }
        }
    if (attn_dump_sample_end(w, &e)) fail_msg("%s", e.msg);
}

static void write_good(const char *path) {
    AttnDumpWriter w;
    Error e;
    if (attn_dump_create(&w, path, &INFO, &e)) fail_msg("%s", e.msg);
    if (attn_dump_set_attr(&w, "model", "models/earn-tiny", &e)) fail_msg("%s", e.msg);
    if (attn_dump_set_attr(&w, "split", "test", &e)) fail_msg("%s", e.msg);
    assert_int_equal(attn_dump_set_attr(&w, "split", "again", &e), -1); // no silent overwrite
    assert_non_null(strstr(e.msg, "already set"));
    feed_sample(&w, 0);
    feed_sample(&w, 1);
    assert_false(exists(path)); // nothing at the final path before close
    if (attn_dump_close(&w, &e)) fail_msg("%s", e.msg);
    assert_true(exists(path));
    assert_false(exists(w.tmp));
}

static void test_round_trip(void **state) {
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "good.h5");
    write_good(path);

    AttnDumpReader r;
    Error e;
    if (attn_dump_open(&r, path, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.n_samples, 2);
    assert_int_equal(r.info.n_layers, L_);
    assert_int_equal(r.info.n_heads, H_);
    assert_int_equal(r.info.n_kv_heads, 1);
    assert_int_equal(r.info.dim, 16);
    assert_int_equal(r.info.vocab_size, 100);
    assert_string_equal(r.info.method, "earn");
    assert_int_equal(r.info.layer_split_k, K_);
    assert_int_equal(r.info.n_prefix_regs, 1);
    assert_int_equal(r.info.n_suffix_regs, 1);
    assert_string_equal(r.names[1], "000001");
    for (int s = 0; s < 2; s++) {
        AttnSample smp;
        if (attn_dump_read_sample(&smp, &r, s, &e)) fail_msg("%s", e.msg);
        int T = sample_T(s);
        assert_int_equal(smp.T, T);
        float A[64];
        for (int t = 0; t < T; t++) {
            assert_int_equal(smp.tokens[t], 10 + t + s);
            assert_int_equal(smp.positions[t], 2 * t);
            assert_int_equal(smp.kinds[t], sample_kind(T, t));
        }
        for (int l = 0; l < L_; l++) {
            for (int t = 0; t < T; t++) {
                assert_int_equal(smp.row_mask[l * T + t], kept(l, smp.kinds[t]));
                assert_int_equal(smp.key_mask[l * T + t], kept(l, smp.kinds[t]));
            }
            for (int h = 0; h < H_; h++) {
                if (attn_dump_read_head(A, &r, &smp, l, h, &e)) fail_msg("%s", e.msg);
                for (int q = 0; q < T; q++)
                    for (int k = 0; k < T; k++) {
                        int seen = kept(l, smp.kinds[q]) && kept(l, smp.kinds[k]) && k <= q;
                        float want = seen ? ref_value(s, l, h, q, k) : 0.0f;
                        if (A[q * T + k] != want)
                            fail_msg("sample %d layer %d head %d [%d,%d]: %g != %g", s, l, h, q, k,
                                     A[q * T + k], want);
                    }
            }
        }
        assert_int_equal(attn_dump_read_head(A, &r, &smp, L_, 0, &e), -1);
        assert_non_null(strstr(e.msg, "out of range"));
        attn_sample_free(&smp);
    }
    AttnSample smp;
    assert_int_equal(attn_dump_read_sample(&smp, &r, 2, &e), -1);
    attn_dump_reader_close(&r);
}

static void test_abort_leaves_nothing(void **state) {
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "aborted.h5");
    AttnDumpWriter w;
    Error e;
    assert_int_equal(attn_dump_create(&w, path, &INFO, &e), 0);
    feed_sample(&w, 0);
    assert_true(exists(w.tmp));
    attn_dump_abort(&w);
    assert_false(exists(w.tmp));
    assert_false(exists(path));

    // closing with a sample still open is an error and leaves nothing
    assert_int_equal(attn_dump_create(&w, path, &INFO, &e), 0);
    int32_t tok[2] = {1, 2};
    uint8_t kinds[2] = {3, 4};
    assert_int_equal(attn_dump_sample_begin(&w, 2, tok, NULL, kinds, &e), 0);
    assert_int_equal(attn_dump_close(&w, &e), -1);
    assert_non_null(strstr(e.msg, "not ended"));
    assert_false(exists(path));
    assert_false(exists(w.tmp));
}

static void test_bad_writer_calls(void **state) {
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "badcalls.h5");
    AttnDumpWriter w;
    Error e;
    AttnDumpInfo bad = INFO;
    bad.layer_split_k = 9;
    assert_int_equal(attn_dump_create(&w, path, &bad, &e), -1);
    assert_non_null(strstr(e.msg, "layer_split_k"));
    bad = INFO;
    bad.n_kv_heads = 3; // does not divide n_heads = 2
    assert_int_equal(attn_dump_create(&w, path, &bad, &e), -1);
    assert_non_null(strstr(e.msg, "n_kv_heads"));

    assert_int_equal(attn_dump_create(&w, path, &INFO, &e), 0);
    int32_t tok[3] = {1, 2, 3}, idx[3] = {0, 1, 2}, far[1] = {3};
    uint8_t kinds[3] = {3, 3, 4}, badkinds[3] = {3, 9, 4};
    float p[9] = {0};
    assert_int_equal(attn_dump_sample_begin(&w, 3, tok, NULL, badkinds, &e), -1);
    assert_non_null(strstr(e.msg, "kinds[1]"));
    assert_int_equal(attn_dump_sample_begin(&w, 0, tok, NULL, kinds, &e), -1);
    assert_non_null(strstr(e.msg, "T = 0"));

    // layer out of range
    assert_int_equal(attn_dump_sample_begin(&w, 3, tok, NULL, kinds, &e), 0);
    assert_int_equal(attn_dump_sample_begin(&w, 3, tok, NULL, kinds, &e), -1); // nested
    attn_dump_sample_put(&w, L_, 0, 3, idx, 3, idx, p);
    assert_int_equal(attn_dump_sample_end(&w, &e), -1);
    assert_non_null(strstr(e.msg, "layer 3"));
    // key index beyond T
    assert_int_equal(attn_dump_sample_begin(&w, 3, tok, NULL, kinds, &e), 0);
    attn_dump_sample_put(&w, 0, 0, 1, idx, 1, far, p);
    assert_int_equal(attn_dump_sample_end(&w, &e), -1);
    assert_non_null(strstr(e.msg, "key index 3"));
    // query index beyond T
    assert_int_equal(attn_dump_sample_begin(&w, 3, tok, NULL, kinds, &e), 0);
    attn_dump_sample_put(&w, 0, 0, 1, far, 1, idx, p);
    assert_int_equal(attn_dump_sample_end(&w, &e), -1);
    assert_non_null(strstr(e.msg, "query index 3"));
    // the hook takes one sequence
    assert_int_equal(attn_dump_sample_begin(&w, 3, tok, NULL, kinds, &e), 0);
    attn_dump_hook(&w, 0, 1, 0, 3, idx, 3, idx, p);
    assert_int_equal(attn_dump_sample_end(&w, &e), -1);
    assert_non_null(strstr(e.msg, "sequence 1"));
    // failed samples are not counted: a good one is still /samples/000000.
    // Layer 0 computes only query 2 over keys 0..2 (a decode step), layer 1
    // computes queries 1, 2 over keys 1, 2: row_mask and key_mask differ.
    assert_int_equal(attn_dump_sample_begin(&w, 3, tok, NULL, kinds, &e), 0);
    attn_dump_sample_put(&w, 0, 1, 1, idx + 2, 3, idx, p);
    attn_dump_sample_put(&w, 1, 0, 2, idx + 1, 2, idx + 1, p);
    assert_int_equal(attn_dump_sample_end(&w, &e), 0);
    assert_int_equal(attn_dump_close(&w, &e), 0);
    AttnDumpReader r;
    if (attn_dump_open(&r, path, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.n_samples, 1);
    assert_string_equal(r.names[0], "000000");
    AttnSample smp;
    if (attn_dump_read_sample(&smp, &r, 0, &e)) fail_msg("%s", e.msg);
    const uint8_t want_rows[L_ * 3] = {0, 0, 1, 0, 1, 1, 0, 0, 0};
    const uint8_t want_keys[L_ * 3] = {1, 1, 1, 0, 1, 1, 0, 0, 0};
    assert_memory_equal(smp.row_mask, want_rows, sizeof want_rows);
    assert_memory_equal(smp.key_mask, want_keys, sizeof want_keys);
    attn_sample_free(&smp);
    attn_dump_reader_close(&r);
}

// ---- bad files: each made by editing a good dump with the HDF5 API -----------

static void expect_open_error(const char *path, const char *want1, const char *want2) {
    AttnDumpReader r;
    Error e;
    if (attn_dump_open(&r, path, &e) == 0) fail_msg("%s: opened, expected an error with '%s'", path, want1);
    if (!strstr(e.msg, path) || !strstr(e.msg, want1) || (want2 && !strstr(e.msg, want2)))
        fail_msg("message '%s' should name %s and contain '%s'%s%s", e.msg, path, want1,
                 want2 ? " and " : "", want2 ? want2 : "");
}

// Opens a good sample 0 and expects read_sample to fail naming the object.
static void expect_sample_error(const char *path, const char *want1, const char *want2) {
    AttnDumpReader r;
    Error e;
    if (attn_dump_open(&r, path, &e)) fail_msg("%s", e.msg);
    AttnSample s;
    int rc = attn_dump_read_sample(&s, &r, 0, &e);
    attn_dump_reader_close(&r);
    if (rc == 0) fail_msg("%s: sample 0 read, expected an error with '%s'", path, want1);
    if (!strstr(e.msg, path) || !strstr(e.msg, want1) || (want2 && !strstr(e.msg, want2)))
        fail_msg("message '%s' should name %s and contain '%s' / '%s'", e.msg, path, want1,
                 want2 ? want2 : "");
}

static hid_t edit_open(const char *name, char *path, size_t n) {
    tmp_path(path, n, name);
    write_good(path);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    return f;
}

static void set_int_attr(hid_t obj, const char *name, int v) {
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
    H5Aclose(a);
}

static void test_bad_files(void **state) {
    (void)state;
    char path[128];
    Error e;

    // missing file
    tmp_path(path, sizeof path, "nope.h5");
    expect_open_error(path, "cannot open", "No such file");

    // not HDF5
    tmp_path(path, sizeof path, "text.h5");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("layer,head,rows,metric,value\n", f);
    fclose(f);
    expect_open_error(path, "not an HDF5 file", NULL);

    // HDF5 without the format attribute (e.g. an `earnest forward` output)
    tmp_path(path, sizeof path, "noformat.h5");
    hid_t h = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(h >= 0);
    H5Fclose(h);
    expect_open_error(path, "not an earnest attention dump", "format");

    // format attribute with another value
    h = edit_open("otherformat.h5", path, sizeof path);
    assert_true(H5Adelete(h, "format") >= 0);
    {
        hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
        H5Tset_size(t, 9);
        hid_t a = H5Acreate2(h, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(a >= 0);
        assert_true(H5Awrite(a, t, "something") >= 0); // fixed-length string, read back as such
        H5Aclose(a), H5Sclose(sp), H5Tclose(t);
    }
    H5Fclose(h);
    expect_open_error(path, "format = 'something'", "earnest-attn");

    // wrong version
    h = edit_open("version.h5", path, sizeof path);
    set_int_attr(h, "version", 2);
    H5Fclose(h);
    expect_open_error(path, "version 2", "not supported");

    // missing shape attribute
    h = edit_open("nolayers.h5", path, sizeof path);
    assert_true(H5Adelete(h, "n_layers") >= 0);
    H5Fclose(h);
    expect_open_error(path, "missing attribute 'n_layers'", NULL);

    // missing /samples
    h = edit_open("nosamples.h5", path, sizeof path);
    assert_true(H5Ldelete(h, "samples", H5P_DEFAULT) >= 0);
    H5Fclose(h);
    expect_open_error(path, "missing group /samples", NULL);

    // a sample group that is not six digits
    h = edit_open("badname.h5", path, sizeof path);
    hid_t g = H5Gcreate2(h, "samples/abc", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(g >= 0);
    H5Gclose(g);
    H5Fclose(h);
    expect_open_error(path, "/samples/abc", "six digits");

    // n_samples disagreeing with the groups
    h = edit_open("nsamples.h5", path, sizeof path);
    set_int_attr(h, "n_samples", 5);
    H5Fclose(h);
    expect_open_error(path, "n_samples = 5", NULL);

    // attn shape disagreeing with the attributes: say 3 heads where attn has 2
    // (row_mask and key_mask [L,T] still agree, so attn is the one named)
    h = edit_open("heads.h5", path, sizeof path);
    set_int_attr(h, "n_heads", 3);
    set_int_attr(h, "n_kv_heads", 3);
    H5Fclose(h);
    expect_sample_error(path, "/samples/000000/attn", "shape [3,2,7,7] disagrees with the expected [3,3,7,7]");

    // a dataset shorter than tokens
    h = edit_open("shortkinds.h5", path, sizeof path);
    assert_true(H5Ldelete(h, "samples/000000/kinds", H5P_DEFAULT) >= 0);
    {
        hsize_t d = 6;
        uint8_t k[6] = {1, 3, 3, 3, 4, 5};
        hid_t sp = H5Screate_simple(1, &d, NULL);
        hid_t ds = H5Dcreate2(h, "samples/000000/kinds", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(ds >= 0);
        assert_true(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, k) >= 0);
        H5Dclose(ds), H5Sclose(sp);
    }
    H5Fclose(h);
    expect_sample_error(path, "/samples/000000/kinds", "shape [6]");

    // a missing dataset
    h = edit_open("noattn.h5", path, sizeof path);
    assert_true(H5Ldelete(h, "samples/000000/attn", H5P_DEFAULT) >= 0);
    H5Fclose(h);
    expect_sample_error(path, "missing dataset 'attn'", "/samples/000000");
    (void)e;
}

// The minimal schema (attn_dump.h): a good dump stripped of every optional
// attribute and of sample 0's masks still opens, with the documented defaults.
static void test_minimal_schema(void **state) {
    (void)state;
    char path[128];
    hid_t h = edit_open("minimal.h5", path, sizeof path);
    static const char *OPTIONAL[5] = {"n_kv_heads", "dim", "vocab_size", "method", "n_samples"};
    for (int i = 0; i < 5; i++) assert_true(H5Adelete(h, OPTIONAL[i]) >= 0);
    assert_true(H5Ldelete(h, "samples/000000/row_mask", H5P_DEFAULT) >= 0);
    assert_true(H5Ldelete(h, "samples/000000/key_mask", H5P_DEFAULT) >= 0);
    H5Fclose(h);
    AttnDumpReader r;
    Error e;
    if (attn_dump_open(&r, path, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.info.n_layers, L_);
    assert_int_equal(r.info.n_heads, H_);
    assert_int_equal(r.info.n_kv_heads, H_);
    assert_int_equal(r.info.dim, 0);
    assert_int_equal(r.info.vocab_size, 0);
    assert_string_equal(r.info.method, "unknown");
    assert_int_equal(r.info.layer_split_k, K_);
    assert_int_equal(r.n_samples, 2);
    AttnSample smp;
    if (attn_dump_read_sample(&smp, &r, 0, &e)) fail_msg("%s", e.msg);
    int T = smp.T;
    for (int i = 0; i < L_ * T; i++) {
        assert_int_equal(smp.row_mask[i], 1); // every row and key present: causal only
        assert_int_equal(smp.key_mask[i], 1);
    }
    attn_sample_free(&smp);
    // Sample 1 kept its masks: they are read as written.
    if (attn_dump_read_sample(&smp, &r, 1, &e)) fail_msg("%s", e.msg);
    for (int l = 0; l < L_; l++)
        for (int t = 0; t < smp.T; t++) assert_int_equal(smp.row_mask[l * smp.T + t], kept(l, smp.kinds[t]));
    attn_sample_free(&smp);
    attn_dump_reader_close(&r);
}

// The file as h5py sees it: an independent reader of the contract.
static void test_h5py_view(void **state) {
    (void)state;
    // h5py is a declared dependency (scripts/setup.sh): its absence is a broken install, not a skip.
    if (system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0)
        fail_msg("/usr/bin/python3 cannot import h5py (run `make setup`)");
    char path[128], script[160];
    tmp_path(path, sizeof path, "h5py.h5");
    tmp_path(script, sizeof script, "check.py");
    write_good(path);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fputs(
        "import sys, h5py, numpy as np\n"
        "f = h5py.File(sys.argv[1], 'r')\n"
        "a = f.attrs\n"
        "assert a['format'] == 'earnest-attn', a['format']\n"
        "assert int(a['version']) == 1\n"
        "for k, v in dict(n_layers=3, n_heads=2, n_kv_heads=1, dim=16, vocab_size=100,\n"
        "                 layer_split_k=1, n_prefix_regs=1, n_suffix_regs=1, n_samples=2).items():\n"
        "    assert int(a[k]) == v, (k, a[k])\n"
        "assert a['method'] == 'earn' and a['model'] == 'models/earn-tiny' and a['split'] == 'test'\n"
        "assert sorted(f['samples'].keys()) == ['000000', '000001'], list(f['samples'].keys())\n"
        "for name, T in (('000000', 7), ('000001', 5)):\n"
        "    g = f['samples'][name]\n"
        "    assert sorted(g.keys()) == ['attn', 'key_mask', 'kinds', 'positions', 'row_mask', 'tokens']\n"
        "    for ds, dt, shape in (('tokens', np.int32, (T,)), ('positions', np.int32, (T,)),\n"
        "                          ('kinds', np.uint8, (T,)), ('attn', np.float32, (3, 2, T, T)),\n"
        "                          ('row_mask', np.uint8, (3, T)), ('key_mask', np.uint8, (3, T))):\n"
        "        assert g[ds].dtype == dt and g[ds].shape == shape, (name, ds, g[ds].dtype, g[ds].shape)\n"
        "    at = g['attn']\n"
        "    assert at.chunks == (1, 1, T, T), at.chunks\n"
        "    assert at.compression == 'gzip' and at.shuffle, (at.compression, at.shuffle)\n"
        "    A = at[()]\n"
        "    s = 0 if name == '000000' else 1\n"
        "    assert np.all(np.triu(A, 1) == 0), 'future keys must be 0'\n"
        "    kinds = g['kinds'][()]\n"
        "    assert abs(A[0, 1, T-1, 2] - (1000*s + 10 + T-1 + 0.002 + 0.5)) < 1e-3, A[0, 1, T-1, 2]\n"
        "    hist = kinds == 3\n"
        "    assert np.all(A[1:, :, hist, :] == 0) and np.all(A[1:, :, :, hist] == 0)\n"
        "    assert np.all(g['row_mask'][1:, hist] == 0) and np.all(g['row_mask'][0] == 1)\n"
        "print('h5py ok')\n",
        f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", script, path);
    int rc = system(cmd);
    assert_int_equal(rc, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_bad_writer_calls),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_minimal_schema),
        cmocka_unit_test(test_h5py_view),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
