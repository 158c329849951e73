// cmd_convert.c: `earnest convert --llama2c MODEL.bin --tokenizer TOKENIZER.bin --out MODEL_DIR`
//
// Reads a llama2.c legacy .bin model (and its tokenizer.bin) and writes a
// Hugging Face style model directory: config.json + model.safetensors (+ the
// tokenizer.bin, copied verbatim). Both inputs are fully read and validated
// before anything is written. A new MODEL_DIR is built under a temporary name
// and renamed into place at the end; into an existing MODEL_DIR every file is
// written atomically and other files are left alone.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "experiments/commands.h"
#include "runtime/checkpoint.h"
#include "runtime/llama2c.h"
#include "runtime/tokenizer.h"
#include "runtime/util.h"

static void convert_usage(FILE *f) {
    fprintf(f,
            "usage: earnest convert --llama2c MODEL.bin [--tokenizer TOKENIZER.bin] --out MODEL_DIR\n"
            "\n"
            "Converts a llama2.c legacy .bin model into a Hugging Face style model directory\n"
            "(config.json + model.safetensors, f32). The rows of wq/wk are permuted from\n"
            "llama2.c's interleaved RoPE layout to HF's rotate-half layout.\n"
            "\n"
            "  --llama2c PATH    llama2.c model (7 int32 header + float32 weights)\n"
            "  --tokenizer PATH  llama2.c tokenizer.bin; validated against the model's vocab_size\n"
            "                    and copied to MODEL_DIR/tokenizer.bin\n"
            "  --out DIR         output model directory (created if missing)\n"
            "  --help            this message\n");
}

// Writes the model and the tokenizer bytes into dir (which exists).
static int convert_write(const char *dir, const Model *m, const char *tok_bytes, size_t tok_len, Error *e) {
    if (model_save(m, dir, e)) return -1;
    if (!tok_bytes) return 0;
    char path[4096];
    if (path_join(path, sizeof path, dir, "tokenizer.bin")) return err_set(e, "%s: path too long", dir);
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    if (fwrite(tok_bytes, 1, tok_len, af.f) != tok_len) {
        int err = errno;
        atomic_abort(&af);
        return err_set(e, "%s: write failed: %s", path, strerror(err));
    }
    return atomic_commit(&af, e);
}

int cmd_convert(int argc, char **argv) {
    const char *model_path = NULL, *tok_path = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            convert_usage(stdout);
            return 0;
        }
        const char **slot = !strcmp(a, "--llama2c") ? &model_path
                            : !strcmp(a, "--tokenizer") ? &tok_path
                            : !strcmp(a, "--out") ? &out : NULL;
        if (!slot) {
            fprintf(stderr, "earnest convert: unknown option '%s'\n", a);
            convert_usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "earnest convert: %s needs a value\n", a);
            return 2;
        }
        *slot = argv[++i];
    }
    if (!model_path || !out) {
        fprintf(stderr, "earnest convert: %s is required\n", !model_path ? "--llama2c" : "--out");
        convert_usage(stderr);
        return 2;
    }
    // "dir/" and "dir" are the same directory; the temporary name must sit beside it, not in it.
    char out_buf[4096];
    if (snprintf(out_buf, sizeof out_buf, "%s", out) >= (int)sizeof out_buf || !out_buf[0]) {
        fprintf(stderr, "earnest convert: --out: bad path '%s'\n", out);
        return 2;
    }
    for (size_t n = strlen(out_buf); n > 1 && out_buf[n - 1] == '/'; n--) out_buf[n - 1] = '\0';
    out = out_buf;

    // Read and validate everything first, so a bad input leaves no output at all.
    Error e = {{0}};
    Model m;
    if (llama2c_load(&m, model_path, &e)) {
        fprintf(stderr, "earnest convert: %s\n", e.msg);
        return 1;
    }
    char *tok_bytes = NULL;
    size_t tok_len = 0;
    if (tok_path) {
        Tokenizer t;
        int bad = tokenizer_load(&t, tok_path, m.config.vocab_size, &e);
        if (!bad) {
            tokenizer_free(&t);
            bad = file_read_all(tok_path, &tok_bytes, &tok_len, &e);
        }
        if (bad) {
            fprintf(stderr, "earnest convert: %s\n", e.msg);
            model_free(&m);
            return 1;
        }
    }

    int rc = 0;
    struct stat st;
    if (stat(out, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            rc = err_set(&e, "%s: exists and is not a directory", out);
        } else {
            rc = convert_write(out, &m, tok_bytes, tok_len, &e);
        }
    } else {
        // A new directory: build it under a temporary name, rename at the end.
        char tmp[4200];
        atomic_tmp_path(tmp, sizeof tmp, out);
        remove_tree(tmp);
        if (make_parent_dirs(out, &e)) {
            rc = -1;
        } else if (mkdir(tmp, 0777) != 0) {
            rc = err_set(&e, "%s: cannot create directory %s: %s", out, tmp, strerror(errno));
        } else {
            rc = convert_write(tmp, &m, tok_bytes, tok_len, &e);
            if (!rc) rc = rename_dir_into_place(tmp, out, &e);
            if (rc) remove_tree(tmp);
        }
    }
    if (rc) {
        fprintf(stderr, "earnest convert: %s\n", e.msg);
    } else {
        const ModelConfig *c = &m.config;
        printf("converted %s -> %s: dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d, seq_len %d, "
               "%s classifier, %zu parameters%s\n",
               model_path, out, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
               c->max_seq_len, c->tie_embeddings ? "shared" : "unshared", m.n_params,
               tok_bytes ? ", tokenizer.bin copied" : "");
    }
    free(tok_bytes);
    model_free(&m);
    return rc ? 1 : 0;
}
