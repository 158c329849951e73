// cmd_forward.c: `earnest forward --model DIR --tokens "1 5 9" --out F.h5 [--attn]`
//
// Runs the model over one token sequence (one prefill) and writes /logits
// float32 [T, V] (NaN rows for tokens an EARN plan stops early), /tokens
// int32 [T], and with --attn /attn float32 [L, H, T, T] (post-softmax; 0 where
// a query cannot see a key or a layer does not compute the query). This is the
// hook for reference checks against other implementations.
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/cli.h"
#include "experiments/commands.h"
#include "experiments/device.h"
#include "runtime/checkpoint.h"
#include "runtime/plan.h"

static const char *FORWARD_ABOUT =
    "  Runs one prefill over the token ids and writes /logits float32 [T,V] and /tokens int32 [T]\n"
    "  to an HDF5 file (atomically). --attn adds /attn float32 [L,H,T,T] (post-softmax).\n"
    "  --kinds gives each token's kind (0 special, 1 prefix reg, 2 instruction, 3 history,\n"
    "  4 suffix reg, 5 target); an EARN model needs them to know which tokens stop at layer k.\n";

typedef struct {
    float *attn; // [L, H, T, T]
    int H, T;
} AttnCapture;

static void capture_attn(void *ctx, int layer, int seq, int head, int n_q, const int32_t *q_tok, int n_k,
                         const int32_t *k_tok, const float *probs) {
    AttnCapture *ac = ctx;
    (void)seq;
    size_t T = (size_t)ac->T;
    float *base = ac->attn + ((size_t)layer * (size_t)ac->H + (size_t)head) * T * T;
    for (int i = 0; i < n_q; i++)
        for (int j = 0; j < n_k; j++) base[(size_t)q_tok[i] * T + (size_t)k_tok[j]] = probs[(size_t)i * n_k + j];
}

#define H5_TRY(x, what)                                                                    \
    do {                                                                                    \
        if ((x) < 0) {                                                                      \
            err_set(e, "%s: HDF5 %s failed (%s:%d)", path, what, __FILE__, __LINE__);       \
            goto fail;                                                                      \
        }                                                                                   \
    } while (0)

// Writes one dataset `name` of `rank` dims; chunk (may be NULL) turns on shuffle + gzip.
static int h5_write(hid_t file, const char *path, const char *name, hid_t type, int rank, const hsize_t *dims,
                    const hsize_t *chunk, const void *data, Error *e) {
    hid_t space = -1, dcpl = -1, ds = -1;
    H5_TRY(space = H5Screate_simple(rank, dims, NULL), "H5Screate_simple");
    H5_TRY(dcpl = H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate");
    if (chunk) {
        H5_TRY(H5Pset_chunk(dcpl, rank, chunk), "H5Pset_chunk");
        H5_TRY(H5Pset_shuffle(dcpl), "H5Pset_shuffle");
        H5_TRY(H5Pset_deflate(dcpl, 4), "H5Pset_deflate");
    }
    H5_TRY(ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), "H5Dcreate2");
    H5_TRY(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "H5Dwrite");
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(space);
    return 0;
fail:
    if (ds >= 0) H5Dclose(ds);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return -1;
}

static int forward_write(const char *path, const int *tokens, int T, const float *logits, int V, const float *attn,
                         int L, int H, Error *e) {
    char tmp[4200];
    atomic_tmp_path(tmp, sizeof tmp, path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (make_parent_dirs(path, e)) return -1;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return err_set(e, "%s: cannot create HDF5 file %s", path, tmp);
    hsize_t dt[1] = {(hsize_t)T}, dl[2] = {(hsize_t)T, (hsize_t)V};
    hsize_t da[4] = {(hsize_t)L, (hsize_t)H, (hsize_t)T, (hsize_t)T}, ca[4] = {1, 1, (hsize_t)T, (hsize_t)T};
    if (h5_write(f, path, "tokens", H5T_NATIVE_INT32, 1, dt, NULL, tokens, e) ||
        h5_write(f, path, "logits", H5T_NATIVE_FLOAT, 2, dl, NULL, logits, e) ||
        (attn && h5_write(f, path, "attn", H5T_NATIVE_FLOAT, 4, da, ca, attn, e))) {
        H5Fclose(f);
        remove(tmp);
        return -1;
    }
    if (H5Fclose(f) < 0) {
        remove(tmp);
        return err_set(e, "%s: HDF5 close failed", path);
    }
    return rename_into_place(tmp, path, e);
}

// The kinds of the T tokens (--kinds, or none for a full model) into kinds [T]; 0 or exit status 2.
static int forward_kinds(uint8_t *kinds, const CliIntList *given, int T, const ModelConfig *c, const char *model_dir) {
    if (given->n) {
        if (given->n != T) {
            fprintf(stderr, "earnest forward: --kinds has %d entries but --tokens has %d\n", given->n, T);
            return 2;
        }
        for (int i = 0; i < T; i++) kinds[i] = (uint8_t)given->v[i];
    } else if (c->method == METHOD_EARN) {
        fprintf(stderr, "earnest forward: %s is an EARN model: give --kinds so that registers can be told apart\n",
                model_dir);
        return 2;
    }
    return 0;
}

// The methods whose prompt this plain prefill would not read as they do (0 or exit status 2): AnLLM's
// mask and compress500x's adapters act on the prompt itself, Gist's mask on every token after it.
static int forward_method_ok(const ModelConfig *c, const char *model_dir) {
    const char *why = c->method == METHOD_ANLLM          ? "reads its prompt under the AnLLM mask"
                      : c->method == METHOD_COMPRESS500X ? "reads its prompt with LoRA adapters"
                      : c->method == METHOD_GIST         ? "lets the tokens after its gist tokens see only them"
                                                         : NULL;
    if (!why) return 0;
    fprintf(stderr, "earnest forward: %s: a %s model %s, which this plain prefill does not apply (use eval, or a "
            "finetune model)\n", model_dir, config_method_name(c->method), why);
    return 2;
}

int cmd_forward(int argc, char **argv) {
    const char *model_dir = NULL, *out = NULL, *device_s = "cpu", *dtype = "f32";
    int want_attn = 0, threads = 0, allow_nonfinite = 0, allow_long = 0;
    CliIntList tok_list = {0}, kind_list = {0};
    CliFlag flags[] = {
        {"--model", CLI_STRING, &model_dir, .meta = "DIR", .required = 1, .help = "model directory"},
        {"--tokens", CLI_INT_LIST, &tok_list, .lo = 0, .hi = 2147483647, .sep = ' ', .required = 1,
         .help = "token ids, blank-separated"},
        {"--kinds", CLI_INT_LIST, &kind_list, .lo = 0, .hi = TOKEN_KIND_TARGET, .sep = ' ',
         .help = "each token's kind (needed by an EARN model)"},
        {"--out", CLI_STRING, &out, .meta = "F.h5", .required = 1, .help = "HDF5 output (atomic)"},
        {"--allow-nonfinite", CLI_FLAG, &allow_nonfinite, .help = "load a model whose weights are not all finite"},
        {"--allow-long", CLI_FLAG, &allow_long, .help = "run past the model's max_position_embeddings (with a warning)"},
        {"--attn", CLI_FLAG, &want_attn, .help = "also write /attn [L,H,T,T]"},
        {"--threads", CLI_INT, &threads, .lo = 1, .hi = 1024, .help = "threads (default: EARNEST_THREADS or all cores)"},
        {"--device", CLI_STRING, &device_s, .choices = DEVICE_CHOICES, .help = "runtime that runs the model"},
        {"--dtype", CLI_STRING, &dtype, .choices = DTYPE_CHOICES, .help = "compute dtype (bf16: --device cuda only)"},
    };
    CliSpec cli = {.verb = "forward", .synopsis = "--model DIR --tokens \"ID ID ...\" --out F.h5 [options]",
                   .about = FORWARD_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    Device device;
    {
        Error le;
        if (device_select(&device, device_s, &le) || device_dtype_check(device, dtype, &le) ||
            (want_attn && device == DEVICE_CUDA &&
             err_set(&le, "--attn: the GPU runtime writes no attention maps (use --device cpu)"))) {
            cli_free(&cli);
            cli_fail("forward", &le);
            return 2;
        }
        if (output_lock_hold(out, &le)) return cli_fail("forward", &le); // one writer per output
    }
    threads_init(threads);
    Error e;
    Model m;
    if (model_load_flags(&m, model_dir, allow_nonfinite ? MODEL_LOAD_ALLOW_NONFINITE : 0, &e)) {
        cli_free(&cli);
        return cli_fail("forward", &e);
    }
    const ModelConfig *c = &m.config;
    model_allow_long(&m, allow_long, "forward");
    const int *tokens = tok_list.v;
    int T = tok_list.n;
    for (int i = 0; i < T; i++)
        if (tokens[i] >= c->vocab_size) {
            fprintf(stderr, "earnest forward: --tokens: item %d is %d, outside the model's vocabulary [0, %d]\n", i + 1,
                    tokens[i], c->vocab_size - 1);
            cli_free(&cli);
            model_free(&m);
            return 2;
        }
    uint8_t *kinds = xcalloc((size_t)T, 1);
    int *depth = xmalloc((size_t)T * sizeof(int));
    if ((st = forward_method_ok(c, model_dir)) || (st = forward_kinds(kinds, &kind_list, T, c, model_dir))) {
        free(kinds); free(depth); cli_free(&cli); model_free(&m);
        return st;
    }
    plan_depth_for(depth, kinds, T, c);

    size_t V = (size_t)c->vocab_size, TT = (size_t)T;
    float *logits = xmalloc(TT * V * sizeof(float));
    AttnCapture ac = {NULL, c->n_heads, T};
    if (want_attn) ac.attn = xcalloc((size_t)c->n_layers * (size_t)c->n_heads * TT * TT, sizeof(float));
    DeviceModel dm;
    int rc = device_model_open(&dm, device, dtype, &m, &e) ||
             device_forward_prefill(&dm, logits, tokens, T, depth, want_attn ? capture_attn : NULL, &ac, &e) ||
             forward_write(out, tokens, T, logits, (int)V, ac.attn, c->n_layers, c->n_heads, &e);
    if (rc) cli_fail("forward", &e);
    device_model_close(&dm);
    free(logits); free(ac.attn); free(kinds); free(depth);
    cli_free(&cli);
    model_free(&m);
    return rc ? 1 : 0;
}
