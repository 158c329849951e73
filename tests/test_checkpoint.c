// test_checkpoint.c: model directories in HF layout: save -> load round trips,
// bf16/f16 conversion, sharded checkpoints, every kind of broken file, and an
// independent reader (python + numpy) for what model_save writes.
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "helpers/st_fixture.h"
#include "runtime/checkpoint.h"
#include "runtime/safetensors.h"

typedef struct {
    char *dir;
} Fx;

static int fx_setup(void **state) {
    Fx *fx = xcalloc(1, sizeof *fx);
    fx->dir = st_fixture_tmpdir();
    *state = fx;
    return 0;
}

static int fx_teardown(void **state) {
    Fx *fx = *state;
    remove_tree(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

static void join(char *out, size_t n, const char *dir, const char *name) {
    CHECK(path_join(out, n, dir, name) == 0, "path too long");
}

// A small Llama with GQA; the tests vary it.
static ModelConfig tiny_config(void) {
    ModelConfig c = {0};
    c.arch = MODEL_ARCH_LLAMA;
    c.dim = 16;
    c.hidden_dim = 24;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 4;
    c.vocab_size = 11;
    c.max_seq_len = 64;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    return c;
}

static void assert_models_identical(const Model *a, const Model *b) {
    assert_int_equal(a->n_params, b->n_params);
    assert_memory_equal(a->params_memory, b->params_memory, a->n_params * sizeof(float));
    assert_memory_equal(&a->config, &b->config, sizeof a->config); // all 4-byte fields: no padding
    if (a->config.tie_embeddings) assert_ptr_equal(b->params.lm_head, b->params.embed);
}

static void save_or_fail(const Model *m, const char *dir) {
    Error e;
    if (model_save(m, dir, &e) != 0) fail_msg("model_save: %s", e.msg);
}

// Expects model_load(dir) to fail with a message containing both needles,
// and the Model to be left empty.
static void expect_load_error(const char *dir, const char *needle1, const char *needle2) {
    Model m;
    Error e;
    memset(&m, 0xab, sizeof m);
    assert_int_equal(model_load(&m, dir, &e), -1);
    assert_true(st_fixture_contains(e.msg, needle1));
    if (needle2) assert_true(st_fixture_contains(e.msg, needle2));
    assert_null(m.params_memory);
    assert_null(m.rope_inv_freq);
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d, "opendir %s", dir);
    int n = 0;
    for (struct dirent *de; (de = readdir(d));)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

// ---------------------------------------------------------------------------
// Round trips

static void round_trip(const char *dir, const ModelConfig *c, uint64_t seed) {
    Model a, b;
    Error e;
    model_init_random(&a, c, seed, 0.5f);
    save_or_fail(&a, dir);
    if (model_load(&b, dir, &e) != 0) fail_msg("model_load: %s", e.msg);
    assert_models_identical(&a, &b);
    // The file itself: every HF tensor under its own name, f32, lm_head only when untied.
    char path[4200];
    join(path, sizeof path, dir, "model.safetensors");
    StFile f;
    if (st_open(&f, path, &e) != 0) fail_msg("%s", e.msg);
    int per_layer = c->attn_bias ? 12 : 9;
    assert_int_equal(f.n_tensors, 2 + c->n_layers * per_layer + (c->tie_embeddings ? 0 : 1));
    assert_int_equal(st_file_find(&f, "lm_head.weight") == NULL, c->tie_embeddings);
    assert_int_equal(st_file_find(&f, "model.layers.0.self_attn.q_proj.bias") != NULL, c->attn_bias);
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", c->n_layers - 1);
    const StTensor *t = st_file_find(&f, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], (size_t)c->dim);
    assert_int_equal(t->shape[1], (size_t)c->hidden_dim);
    // The last layer's down_proj is the last slice of the stacked w_down.
    size_t per = (size_t)c->dim * (size_t)c->hidden_dim;
    assert_memory_equal(t->data, a.params.w_down + (size_t)(c->n_layers - 1) * per, per * sizeof(float));
    uint64_t hl = 0;
    memcpy(&hl, f.map, 8);
    assert_int_equal(hl % 8, 0); // data 8-byte aligned, as HF pads it
    st_close(&f);
    assert_int_equal(count_dir_entries(dir), 2); // config.json + model.safetensors, no temp files left
    model_free(&a);
    model_free(&b);
}

static void test_round_trip(void **state) {
    Fx *fx = *state;
    ModelConfig c[6];
    for (int i = 0; i < 6; i++) c[i] = tiny_config();
    c[0].n_kv_heads = 4;        // llama, MHA, untied
    c[1].tie_embeddings = 1;    // llama, GQA, tied
    c[2].arch = MODEL_ARCH_QWEN2; // qwen2 (q/k/v bias), GQA, untied
    c[2].attn_bias = 1;
    c[3] = c[2];                // qwen2 tied, head_dim != dim / heads, MQA, 3 layers
    c[3].tie_embeddings = 1;
    c[3].head_dim = 6;
    c[3].n_kv_heads = 1;
    c[3].n_layers = 3;
    c[4].method = METHOD_EARN;  // EARN settings ride along in config.json
    c[4].n_layers = 4;
    c[4].layer_split_k = 2;
    c[4].n_prefix_regs = 1;
    c[4].n_suffix_regs = 3;
    c[5] = c[0];                // 12 layers: names with two-digit layer indices
    c[5].n_layers = 12;
    for (int i = 0; i < 6; i++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/m%d", fx->dir, i);
        round_trip(dir, &c[i], 100 + (uint64_t)i);
    }
    // Saving over an existing checkpoint replaces it; a nested missing directory is created.
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/m0", fx->dir);
    round_trip(dir, &c[2], 7);
    snprintf(dir, sizeof dir, "%s/deep/er/m", fx->dir);
    round_trip(dir, &c[1], 8);
}

// ---------------------------------------------------------------------------
// bf16 and f16: exact conversion, checked against definitions written here

// bf16 is the top half of an f32.
static float ref_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// IEEE half: (-1)^s * 2^(e-15) * 1.m, subnormals 2^-14 * 0.m.
static float ref_f16(uint16_t h) {
    int s = h >> 15, ex = (h >> 10) & 31, man = h & 1023;
    double v;
    if (ex == 0) v = ldexp((double)man, -24);
    else if (ex == 31) v = man ? NAN : INFINITY;
    else v = ldexp((double)(1024 + man), ex - 25);
    return (float)(s ? -v : v);
}

static void test_bf16_f16(void **state) {
    Fx *fx = *state;
    ModelConfig c = tiny_config();
    c.tie_embeddings = 1;
    char path[4200];
    Error e;
    join(path, sizeof path, fx->dir, "config.json");
    if (config_save(&c, path, &e) != 0) fail_msg("%s", e.msg);
    const uint16_t f16_special[] = {0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0xfbff, 0x7c00,
                                    0xfc00, 0x3c00, 0x3555, 0x7e00, 0x8001, 0xc000};
    const uint16_t bf16_special[] = {0x0000, 0x8000, 0x0001, 0x007f, 0x0080, 0x7f7f, 0xff7f, 0x7f80,
                                     0xff80, 0x3f80, 0x7fc0, 0xbeaa};
    // Per HF tensor: its dtype and raw bits. Embeddings BF16, layer 0 F16, layer 1 BF16, the rest F32.
    StFixtureTensor list[64];
    uint16_t *bits[64] = {0};
    float *f32s[64] = {0};
    char names[64][128];
    int n = 0;
    Rng rng;
    rng_seed(&rng, 5);
    // A 2-byte tensor first, so every later tensor starts at an odd multiple of 2 bytes.
    static const uint16_t inv_freq_bits = 0x3f80;
    list[n++] = (StFixtureTensor){"model.layers.0.self_attn.rotary_emb.inv_freq", "BF16", 1, {1}, &inv_freq_bits, 2};
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(&c, t, &info);
        if (info.numel == 0) continue;
        for (int l = 0; l < (info.per_layer ? c.n_layers : 1); l++) {
            size_t numel = info.ndim == 2 ? info.shape[0] * info.shape[1] : info.shape[0];
            StFixtureTensor *ft = &list[n];
            if (info.per_layer) snprintf(names[n], sizeof names[n], info.hf_name, l);
            else snprintf(names[n], sizeof names[n], "%s", info.hf_name);
            ft->name = names[n];
            ft->ndim = info.ndim;
            ft->shape[0] = info.shape[0];
            ft->shape[1] = info.shape[1];
            int is_norm = (t == 1 || t == 9 || t == 13);
            if (is_norm) {
                f32s[n] = xmalloc(numel * sizeof(float));
                for (size_t i = 0; i < numel; i++) f32s[n][i] = rng_normal(&rng);
                ft->dtype = "F32";
                ft->data = f32s[n];
                ft->nbytes = numel * 4;
            } else {
                int half = info.per_layer && l == 0; // f16; else bf16
                bits[n] = xmalloc(numel * sizeof(uint16_t));
                const uint16_t *sp = half ? f16_special : bf16_special;
                size_t n_sp = half ? sizeof f16_special / 2 : sizeof bf16_special / 2;
                for (size_t i = 0; i < numel; i++)
                    bits[n][i] = i < n_sp ? sp[i] : (uint16_t)rng_u64(&rng);
                ft->dtype = half ? "F16" : "BF16";
                ft->data = bits[n];
                ft->nbytes = numel * 2;
            }
            n++;
        }
    }
    join(path, sizeof path, fx->dir, "model.safetensors");
    st_fixture_write(path, list, n);
    Model m;
    // The special values include inf and NaN: a plain load refuses them, naming the tensor...
    assert_int_equal(model_load(&m, fx->dir, &e), -1);
    assert_true(st_fixture_contains(e.msg, "model.embed_tokens.weight"));
    assert_true(st_fixture_contains(e.msg, "non-finite"));
    // ...and the conversion of every bit pattern is checked with them allowed.
    if (model_load_flags(&m, fx->dir, MODEL_LOAD_ALLOW_NONFINITE, &e) != 0) fail_msg("model_load: %s", e.msg);
    // Walk the same order again and compare every element with its definition.
    int k = 1, checked = 0, nans = 0;
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(&c, t, &info);
        if (info.numel == 0) continue;
        size_t numel = info.ndim == 2 ? info.shape[0] * info.shape[1] : info.shape[0];
        const float *got = *model_param_slot(&m.params, t);
        for (int l = 0; l < (info.per_layer ? c.n_layers : 1); l++, k++) {
            for (size_t i = 0; i < numel; i++) {
                float g = got[(size_t)l * numel + i], want;
                if (f32s[k]) want = f32s[k][i];
                else if (!strcmp(list[k].dtype, "F16")) want = ref_f16(bits[k][i]);
                else want = ref_bf16(bits[k][i]);
                if (isnan(want)) {
                    assert_true(isnan(g));
                    nans++;
                } else if (memcmp(&g, &want, 4) != 0) {
                    fail_msg("%s[%zu] (%s): got %a, want %a", list[k].name, i, list[k].dtype, (double)g,
                             (double)want);
                }
                checked++;
            }
        }
    }
    assert_int_equal(k, n);
    assert_true(nans > 0); // the specials were really exercised
    assert_int_equal((size_t)checked, m.n_params);
    assert_ptr_equal(m.params.lm_head, m.params.embed);
    model_free(&m);
    for (int i = 0; i < n; i++) {
        free(bits[i]);
        free(f32s[i]);
    }
    // A tensor large enough for the threaded conversion path, every bit pattern twice.
    size_t big = 2 * 65536;
    uint16_t *hb = xmalloc(big * sizeof *hb);
    float *out = xmalloc(big * sizeof *out);
    for (size_t i = 0; i < big; i++) hb[i] = (uint16_t)(i * 40503u); // odd multiplier: a permutation
    for (int half = 0; half < 2; half++) {
        StFixtureTensor bt = {"big", half ? "F16" : "BF16", 2, {256, 512}, hb, big * 2};
        join(path, sizeof path, fx->dir, "big.safetensors");
        st_fixture_write(path, &bt, 1);
        StFile f;
        if (st_open(&f, path, &e) != 0) fail_msg("%s", e.msg);
        st_tensor_to_f32(out, st_file_find(&f, "big"));
        for (size_t i = 0; i < big; i++) {
            float want = half ? ref_f16(hb[i]) : ref_bf16(hb[i]);
            if (isnan(want) ? !isnan(out[i]) : memcmp(&want, &out[i], 4) != 0)
                fail_msg("big %s [%zu] bits %04x: got %a, want %a", bt.dtype, i, hb[i], (double)out[i], (double)want);
        }
        st_close(&f);
    }
    free(hb);
    free(out);
}

// ---------------------------------------------------------------------------
// Rewriting a saved checkpoint's tensors, to make broken ones

typedef struct {
    const char *skip;          // drop this tensor
    const char *reshape;       // give this tensor shape {r0, r1} (same byte count)
    size_t r0, r1;
    const StFixtureTensor *extra; // append these
    int n_extra;
} Rewrite;

static void rewrite_weights(const char *dir, const Rewrite *rw) {
    char path[4200], tmp[4300];
    Error e;
    join(path, sizeof path, dir, "model.safetensors");
    snprintf(tmp, sizeof tmp, "%s.new", path);
    StFile f;
    if (st_open(&f, path, &e) != 0) fail_msg("%s", e.msg);
    StFixtureTensor *list = xcalloc((size_t)f.n_tensors + (size_t)rw->n_extra, sizeof *list);
    int n = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        if (rw->skip && !strcmp(t->name, rw->skip)) continue;
        StFixtureTensor *o = &list[n++];
        o->name = t->name;
        o->dtype = st_dtype_name(t->dtype);
        o->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) o->shape[d] = t->shape[d];
        if (rw->reshape && !strcmp(t->name, rw->reshape)) {
            o->ndim = 2;
            o->shape[0] = rw->r0;
            o->shape[1] = rw->r1;
        }
        o->data = t->data;
        o->nbytes = t->nbytes;
    }
    for (int i = 0; i < rw->n_extra; i++) list[n++] = rw->extra[i];
    st_fixture_write(tmp, list, n); // not over the mapped file
    free(list);
    st_close(&f);
    CHECK(rename(tmp, path) == 0, "rename %s", tmp);
}

static void make_tiny(const char *dir, ModelConfig c, uint64_t seed) {
    Model m;
    model_init_random(&m, &c, seed, 0.5f);
    save_or_fail(&m, dir);
    model_free(&m);
}

static void test_missing_extra_wrong_shape(void **state) {
    Fx *fx = *state;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/m", fx->dir);
    ModelConfig c = tiny_config();
    const float four[4] = {1, 2, 3, 4};

    make_tiny(dir, c, 1);
    rewrite_weights(dir, &(Rewrite){.skip = "model.layers.1.mlp.up_proj.weight"});
    expect_load_error(dir, "model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' (shape [24, 16]) is missing",
                      NULL);

    make_tiny(dir, c, 1); // untied: lm_head is required
    rewrite_weights(dir, &(Rewrite){.skip = "lm_head.weight"});
    expect_load_error(dir, "model.safetensors", "'lm_head.weight' (shape [11, 16]) is missing");

    StFixtureTensor stray = {"model.layers.99.mlp.up_proj.weight", "F32", 1, {4}, four, 16};
    make_tiny(dir, c, 1);
    rewrite_weights(dir, &(Rewrite){.extra = &stray, .n_extra = 1});
    expect_load_error(dir, "model.safetensors: 1 unexpected tensor",
                      "'model.layers.99.mlp.up_proj.weight'");

    StFixtureTensor strays[2] = {{"decoder.foo", "F32", 1, {4}, four, 16},
                                 {"model.layers.0.self_attn.q_proj.bias", "F32", 1, {4}, four, 16}};
    make_tiny(dir, c, 1); // a bias on a Llama is not silently dropped
    rewrite_weights(dir, &(Rewrite){.extra = strays, .n_extra = 2});
    expect_load_error(dir, "2 unexpected tensors", "'model.layers.0.self_attn.q_proj.bias'");

    make_tiny(dir, c, 1); // transposed: same bytes, wrong shape
    rewrite_weights(dir, &(Rewrite){.reshape = "model.layers.0.mlp.up_proj.weight", .r0 = 16, .r1 = 24});
    expect_load_error(dir, "model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' has shape [16, 24], "
                           "expected [24, 16]", NULL);

    // Harmless extras load: rotary inv_freq buffers, and lm_head beside tied embeddings.
    Model m;
    Error e;
    StFixtureTensor inv = {"model.layers.1.self_attn.rotary_emb.inv_freq", "F32", 1, {2}, four, 8};
    c.tie_embeddings = 1;
    make_tiny(dir, c, 2);
    float *lm = xcalloc(11 * 16, sizeof(float));
    StFixtureTensor extras[2] = {inv, {"lm_head.weight", "F32", 2, {11, 16}, lm, 11 * 16 * 4}};
    rewrite_weights(dir, &(Rewrite){.extra = extras, .n_extra = 2});
    if (model_load(&m, dir, &e) != 0) fail_msg("%s", e.msg);
    assert_ptr_equal(m.params.lm_head, m.params.embed);
    model_free(&m);
    // ... but a tied lm_head of the wrong shape is still an error.
    make_tiny(dir, c, 2);
    extras[1].shape[0] = 16;
    extras[1].shape[1] = 11;
    rewrite_weights(dir, &(Rewrite){.extra = &extras[1], .n_extra = 1});
    expect_load_error(dir, "tensor 'lm_head.weight' has shape [16, 11], expected [11, 16]", NULL);
    free(lm);

    // The config decides what is expected: a config with more layers than the file.
    c.tie_embeddings = 0;
    make_tiny(dir, c, 3);
    c.n_layers = 3;
    char path[4200];
    join(path, sizeof path, dir, "config.json");
    assert_int_equal(config_save(&c, path, &e), 0);
    expect_load_error(dir, "'model.layers.2.input_layernorm.weight' (shape [16]) is missing", NULL);
    // A bad config.json is reported before any weights are read.
    st_fixture_write_text(path, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 16}");
    expect_load_error(dir, "config.json", "missing required field \"intermediate_size\"");
    remove(path);
    expect_load_error(dir, "config.json", "cannot open");
    // No weights at all.
    assert_int_equal(config_save(&c, path, &e), 0);
    join(path, sizeof path, dir, "model.safetensors");
    remove(path);
    expect_load_error(dir, dir, "no model.safetensors or model.safetensors.index.json");
}

// ---------------------------------------------------------------------------
// Broken files, byte by byte

static void test_bad_files(void **state) {
    Fx *fx = *state;
    char dir[4200], path[4200];
    snprintf(dir, sizeof dir, "%s/m", fx->dir);
    make_tiny(dir, tiny_config(), 4);
    join(path, sizeof path, dir, "model.safetensors");
    const uint8_t zeros[64] = {0};

    // Truncated: the last tensor's data is cut short.
    char *bytes;
    size_t len;
    Error e;
    assert_int_equal(file_read_all(path, &bytes, &len, &e), 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len - 10, f), len - 10);
    fclose(f);
    expect_load_error(dir, path, "truncated");
    // Truncated inside the 8-byte length.
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, 5, f), 5);
    fclose(f);
    expect_load_error(dir, path, "truncated");
    free(bytes);
    // Empty file.
    st_fixture_write_text(path, "");
    expect_load_error(dir, path, "truncated");

    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    // The header length points past the end of the file.
    st_fixture_write_raw(path, 1u << 20, ok, zeros, 8);
    expect_load_error(dir, path, "header length 1048576 goes beyond the file");
    st_fixture_write_raw(path, UINT64_MAX, ok, zeros, 8);
    expect_load_error(dir, path, "goes beyond the file");
    // The header is not JSON, or not an object, or an entry is malformed.
    const char *not_json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    st_fixture_write_raw(path, strlen(not_json), not_json, zeros, 8);
    expect_load_error(dir, path, "header is not valid JSON");
    st_fixture_write_raw(path, 5, "[1,2]", zeros, 0);
    expect_load_error(dir, path, "header is not a JSON object");
    const char *no_dtype = "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}";
    st_fixture_write_raw(path, strlen(no_dtype), no_dtype, zeros, 8);
    expect_load_error(dir, path, "tensor 'a': missing or non-string \"dtype\"");
    const char *neg_shape = "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}";
    st_fixture_write_raw(path, strlen(neg_shape), neg_shape, zeros, 8);
    expect_load_error(dir, path, "tensor 'a': shape entry 0 is not a non-negative integer");
    const char *dup = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    st_fixture_write_raw(path, strlen(dup), dup, zeros, 8);
    expect_load_error(dir, path, "not valid JSON"); // duplicate key
    // Offsets beyond the data section.
    const char *far = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2000],\"data_offsets\":[0,8000]}}";
    st_fixture_write_raw(path, strlen(far), far, zeros, 8);
    expect_load_error(dir, path, "tensor 'a': data_offsets [0, 8000) out of range");
    const char *backwards = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}";
    st_fixture_write_raw(path, strlen(backwards), backwards, zeros, 8);
    expect_load_error(dir, path, "tensor 'a': bad data_offsets [8, 0)");
    // Overlapping tensors.
    const char *overlap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
    st_fixture_write_raw(path, strlen(overlap), overlap, zeros, 12);
    expect_load_error(dir, path, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    // A hole, and trailing bytes (the reference reader rejects both).
    const char *hole = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    st_fixture_write_raw(path, strlen(hole), hole, zeros, 12);
    expect_load_error(dir, path, "4 unused bytes before tensor 'b'");
    st_fixture_write_raw(path, strlen(ok), ok, zeros, 12);
    expect_load_error(dir, path, "4 trailing bytes");
    // Offsets that disagree with shape x dtype size.
    const char *short_span = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3, 2],\"data_offsets\":[0,8]}}";
    st_fixture_write_raw(path, strlen(short_span), short_span, zeros, 8);
    expect_load_error(dir, path, "tensor 'a': data_offsets [0, 8) span 8 bytes but shape [3, 2] of BF16 needs 12 bytes");
    // Unsupported dtype.
    const char *i64 = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"model.embed_tokens.weight\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}";
    st_fixture_write_raw(path, strlen(i64), i64, zeros, 8);
    expect_load_error(dir, path, "tensor 'model.embed_tokens.weight' has unsupported dtype I64");
    // __metadata__ is allowed but must be an object.
    const char *bad_meta = "{\"__metadata__\":[1],\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    st_fixture_write_raw(path, strlen(bad_meta), bad_meta, zeros, 8);
    expect_load_error(dir, path, "\"__metadata__\" is not an object");

    // The reader itself accepts a well-formed odd file: metadata, a scalar, an
    // empty tensor, unpadded header.
    const char *odd = "{\"__metadata__\":{\"format\":\"pt\"},\"s\":{\"dtype\":\"F32\",\"shape\":[],"
                      "\"data_offsets\":[0,4]},\"z\":{\"dtype\":\"F16\",\"shape\":[0, 3],\"data_offsets\":[4,4]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[4,6]}}";
    const uint8_t odd_data[6] = {0, 0, 0xc0, 0x3f, 0x00, 0xc0}; // 1.5f, then f16 -2
    st_fixture_write_raw(path, strlen(odd), odd, odd_data, 6);
    StFile sf;
    if (st_open(&sf, path, &e) != 0) fail_msg("%s", e.msg);
    assert_int_equal(sf.n_tensors, 3);
    const StTensor *s = st_file_find(&sf, "s"), *h = st_file_find(&sf, "h"), *z = st_file_find(&sf, "z");
    assert_non_null(s);
    assert_non_null(h);
    assert_non_null(z);
    assert_int_equal(s->ndim, 0);
    assert_int_equal(z->numel, 0);
    float v;
    st_tensor_to_f32(&v, s);
    assert_true(v == 1.5f);
    st_tensor_to_f32(&v, h);
    assert_true(v == -2.0f);
    assert_null(st_file_find(&sf, "__metadata__"));
    st_close(&sf);
    // ... and model_load says what is missing from it.
    expect_load_error(dir, path, "tensor 'model.embed_tokens.weight' (shape [11, 16]) is missing");
}

// ---------------------------------------------------------------------------
// Sharded checkpoints

// Lists every tensor of `shards` but `omit`, plus `lie_name` -> `lie_shard` when given.
static void write_index(const char *dir, const StFile *shards, const char *const *shard_names, int n_shards,
                        const char *omit, const char *lie_name, const char *lie_shard) {
    json_t *wm = json_object();
    for (int s = 0; s < n_shards; s++)
        for (int i = 0; i < shards[s].n_tensors; i++)
            if (!omit || strcmp(omit, shards[s].tensors[i].name))
                json_object_set_new(wm, shards[s].tensors[i].name, json_string(shard_names[s]));
    if (lie_name) json_object_set_new(wm, lie_name, json_string(lie_shard));
    json_t *root = json_pack("{s:{s:i}, s:o}", "metadata", "total_size", 1234, "weight_map", wm);
    char path[4200];
    join(path, sizeof path, dir, "model.safetensors.index.json");
    CHECK(root && json_dump_file(root, path, JSON_INDENT(2)) == 0, "json_dump_file %s", path);
    json_decref(root);
}

static void test_sharded(void **state) {
    Fx *fx = *state;
    char src[4200], dir[4200], path[4200];
    Error e;
    snprintf(src, sizeof src, "%s/src", fx->dir);
    snprintf(dir, sizeof dir, "%s/sharded", fx->dir);
    ModelConfig c = tiny_config();
    c.arch = MODEL_ARCH_QWEN2;
    c.attn_bias = 1;
    c.n_layers = 3;
    Model a;
    model_init_random(&a, &c, 9, 0.5f);
    save_or_fail(&a, src);
    // Split the saved tensors over three shards: layer 0 + embeddings, layer 1, the rest.
    join(path, sizeof path, src, "model.safetensors");
    StFile whole;
    if (st_open(&whole, path, &e) != 0) fail_msg("%s", e.msg);
    StFixtureTensor *parts[3];
    int n_parts[3] = {0};
    for (int s = 0; s < 3; s++) parts[s] = xcalloc((size_t)whole.n_tensors, sizeof(StFixtureTensor));
    for (int i = 0; i < whole.n_tensors; i++) {
        const StTensor *t = &whole.tensors[i];
        int s = strstr(t->name, "layers.0.") || strstr(t->name, "embed") ? 0 : strstr(t->name, "layers.1.") ? 1 : 2;
        parts[s][n_parts[s]++] = (StFixtureTensor){t->name, "F32", t->ndim, {t->shape[0], t->shape[1]}, t->data,
                                                   t->nbytes};
    }
    const char *names[3] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                            "model-00003-of-00003.safetensors"};
    CHECK(mkdir(dir, 0777) == 0, "mkdir %s", dir);
    for (int s = 0; s < 3; s++) {
        assert_true(n_parts[s] > 0);
        join(path, sizeof path, dir, names[s]);
        st_fixture_write(path, parts[s], n_parts[s]);
        free(parts[s]);
    }
    st_close(&whole);
    char *cfg;
    join(path, sizeof path, src, "config.json");
    assert_int_equal(file_read_all(path, &cfg, NULL, &e), 0);
    join(path, sizeof path, dir, "config.json");
    st_fixture_write_text(path, cfg);
    free(cfg);
    StFile shards[3];
    for (int s = 0; s < 3; s++) {
        join(path, sizeof path, dir, names[s]);
        if (st_open(&shards[s], path, &e) != 0) fail_msg("%s", e.msg);
    }
    write_index(dir, shards, names, 3, NULL, NULL, NULL);
    Model b;
    if (model_load(&b, dir, &e) != 0) fail_msg("model_load: %s", e.msg);
    assert_models_identical(&a, &b);
    model_free(&b);

    char index[4200];
    join(index, sizeof index, dir, "model.safetensors.index.json");
    // The index names a shard the tensor is not in.
    write_index(dir, shards, names, 3, NULL, "model.layers.2.mlp.up_proj.weight", names[0]);
    expect_load_error(dir, index, "'model.layers.2.mlp.up_proj.weight' is listed in shard "
                                  "model-00001-of-00003.safetensors but stored in");
    // The index lists a tensor no shard has.
    write_index(dir, shards, names, 3, NULL, "model.layers.7.mlp.up_proj.weight", names[1]);
    expect_load_error(dir, index, "'model.layers.7.mlp.up_proj.weight' is listed in shard "
                                  "model-00002-of-00003.safetensors but not stored there");
    // A shard stores a tensor the index does not list.
    write_index(dir, shards, names, 3, "model.norm.weight", NULL, NULL);
    expect_load_error(dir, "model.safetensors.index.json: tensor 'model.norm.weight' stored in",
                      "model-00003-of-00003.safetensors is not listed in the index's weight_map");
    // A shard is missing.
    write_index(dir, shards, names, 3, NULL, "x", "model-00004-of-00003.safetensors");
    expect_load_error(dir, "model-00004-of-00003.safetensors", "cannot open");
    // A shard name that leaves the directory.
    write_index(dir, shards, names, 3, NULL, "x", "../src/model.safetensors");
    expect_load_error(dir, index, "is not a file name in the checkpoint directory");
    // Not JSON / no weight_map.
    st_fixture_write_text(index, "{\"weight_map\": ");
    expect_load_error(dir, index, "not valid JSON");
    st_fixture_write_text(index, "{\"metadata\": {}}");
    expect_load_error(dir, index, "\"weight_map\"");
    // A broken shard is named as such.
    write_index(dir, shards, names, 3, NULL, NULL, NULL);
    for (int s = 0; s < 3; s++) st_close(&shards[s]);
    join(path, sizeof path, dir, names[1]);
    st_fixture_write_text(path, "1234");
    expect_load_error(dir, path, "truncated");
    model_free(&a);
}

// ---------------------------------------------------------------------------
// An independent reader: python's json + numpy parse what model_save wrote.

static const char *NUMPY_CHECK =
    "import json, struct, sys\n"
    "import numpy as np\n"
    "d = sys.argv[1]\n"
    "raw = np.fromfile(d + '/raw.bin', dtype='<f4')\n"
    "buf = open(d + '/model.safetensors', 'rb').read()\n"
    "(hl,) = struct.unpack('<Q', buf[:8])\n"
    "assert hl % 8 == 0, 'header length %d is not a multiple of 8' % hl\n"
    "header = json.loads(buf[8:8 + hl].decode('utf-8'))\n"
    "assert header.pop('__metadata__') == {'format': 'pt'}\n"
    "data = buf[8 + hl:]\n"
    "pos = 0\n"
    "for b, e in sorted(tuple(v['data_offsets']) for v in header.values()):\n"
    "    assert b == pos, 'hole or overlap at data offset %d' % b\n"
    "    pos = e\n"
    "assert pos == len(data), 'tensors end at %d, data section has %d bytes' % (pos, len(data))\n"
    "want, cfg_want = {}, {}\n"
    "for line in open(d + '/manifest.txt'):\n"
    "    f = line.split()\n"
    "    if f[0] == 'cfg':\n"
    "        cfg_want[f[1]] = json.loads(f[2])\n"
    "    else:\n"
    "        want[f[0]] = (int(f[1]), [int(x) for x in f[2:]])\n"
    "assert set(header) == set(want), sorted(set(header) ^ set(want))\n"
    "for name, (off, shape) in want.items():\n"
    "    h = header[name]\n"
    "    assert h['dtype'] == 'F32', name\n"
    "    assert h['shape'] == shape, (name, h['shape'], shape)\n"
    "    b, e = h['data_offsets']\n"
    "    got = np.frombuffer(data[b:e], dtype='<f4').reshape(shape)\n"
    "    ref = raw[off:off + int(np.prod(shape))].reshape(shape)\n"
    "    assert np.array_equal(got.view('<u4'), ref.view('<u4')), name\n"
    "cfg = json.load(open(d + '/config.json'))\n"
    "for k, v in cfg_want.items():\n"
    "    assert cfg[k] == v, (k, cfg[k], v)\n"
    "print('numpy reader: %d tensors, %d floats match' % (len(want), sum(np.prod(s) for _, s in want.values())))\n";

static void test_numpy_reader(void **state) {
    Fx *fx = *state;
    // numpy is a declared dependency (scripts/setup.sh): its absence is a broken install, not a skip.
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0)
        fail_msg("/usr/bin/python3 cannot import numpy (run `make setup`)");
    ModelConfig c = tiny_config();
    c.arch = MODEL_ARCH_QWEN2;
    c.attn_bias = 1;
    c.n_layers = 3;
    Model m;
    model_init_random(&m, &c, 21, 0.5f);
    save_or_fail(&m, fx->dir);
    // raw.bin: the one allocation; manifest: where each HF tensor lives in it (from model_param_info).
    char path[4200];
    join(path, sizeof path, fx->dir, "raw.bin");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(m.params_memory, sizeof(float), m.n_params, f), m.n_params);
    assert_int_equal(fclose(f), 0);
    join(path, sizeof path, fx->dir, "manifest.txt");
    f = fopen(path, "w");
    assert_non_null(f);
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(&c, t, &info);
        if (info.numel == 0) continue;
        size_t per = info.ndim == 2 ? info.shape[0] * info.shape[1] : info.shape[0];
        size_t base = (size_t)(*model_param_slot(&m.params, t) - m.params_memory);
        for (int l = 0; l < (info.per_layer ? c.n_layers : 1); l++) {
            char name[128];
            if (info.per_layer) snprintf(name, sizeof name, info.hf_name, l);
            else snprintf(name, sizeof name, "%s", info.hf_name);
            fprintf(f, "%s %zu %zu", name, base + (size_t)l * per, info.shape[0]);
            if (info.ndim == 2) fprintf(f, " %zu", info.shape[1]);
            fprintf(f, "\n");
        }
    }
    fprintf(f, "cfg architectures [\"Qwen2ForCausalLM\"]\ncfg model_type \"qwen2\"\ncfg hidden_size 16\n"
               "cfg intermediate_size 24\ncfg num_hidden_layers 3\ncfg num_attention_heads 4\n"
               "cfg num_key_value_heads 2\ncfg head_dim 4\ncfg vocab_size 11\ncfg tie_word_embeddings false\n"
               "cfg rms_norm_eps 1e-05\ncfg rope_theta 10000.0\ncfg hidden_act \"silu\"\n");
    assert_int_equal(fclose(f), 0);
    join(path, sizeof path, fx->dir, "check.py");
    st_fixture_write_text(path, NUMPY_CHECK);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", path, fx->dir);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc));
    assert_int_equal(WEXITSTATUS(rc), 0);
    model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bf16_f16, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_missing_extra_wrong_shape, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_files, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sharded, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_numpy_reader, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
