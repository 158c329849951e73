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

#include "experiments/cli.h"
#include "experiments/commands.h"
#include "runtime/checkpoint.h"
#include "runtime/llama2c.h"
#include "runtime/tokenizer.h"
#include "runtime/util.h"

static const char *CONVERT_ABOUT =
    "  Converts a llama2.c legacy .bin model into a Hugging Face style model directory\n"
    "  (config.json + model.safetensors, f32). The rows of wq/wk are permuted from\n"
    "  llama2.c's interleaved RoPE layout to HF's rotate-half layout.\n";

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
    CliFlag flags[] = {
        {"--llama2c", CLI_STRING, &model_path, .meta = "MODEL.bin", .required = 1,
         .help = "llama2.c model (7 int32 header + float32 weights)"},
        {"--tokenizer", CLI_STRING, &tok_path, .meta = "TOKENIZER.bin",
         .help = "llama2.c tokenizer.bin; validated against the model's vocab_size\nand copied to MODEL_DIR/tokenizer.bin"},
        {"--out", CLI_STRING, &out, .meta = "MODEL_DIR", .required = 1, .help = "output model directory (created if missing)"},
    };
    CliSpec cli = {.verb = "convert", .synopsis = "--llama2c MODEL.bin [--tokenizer TOKENIZER.bin] --out MODEL_DIR",
                   .about = CONVERT_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int parsed = cli_parse(&cli, argc, argv);
    if (parsed >= 0) return parsed;
    // "dir/" and "dir" are the same directory; the temporary name must sit beside it, not in it.
    char out_buf[4096];
    if (snprintf(out_buf, sizeof out_buf, "%s", out) >= (int)sizeof out_buf || !out_buf[0]) {
        fprintf(stderr, "earnest convert: --out: bad path '%s'\n", out);
        return 2;
    }
    for (size_t n = strlen(out_buf); n > 1 && out_buf[n - 1] == '/'; n--) out_buf[n - 1] = '\0';
    out = out_buf;
    {
        Error le;
        if (output_lock_hold(out, &le)) return cli_fail("convert", &le); // one writer per output
    }

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
