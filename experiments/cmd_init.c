// cmd_init.c: `earnest init` writes a randomly initialised model checkpoint of
// a preset shape (HF layout), e.g. the starting point of training or a model
// to exercise the runtime with.
#include <stdlib.h>
#include <string.h>

#include "experiments/cli.h"
#include "experiments/commands.h"
#include "datasets/model_vocab.h"
#include "datasets/prompt.h"
#include "datasets/vocab.h"
#include "runtime/checkpoint.h"
#include "runtime/preset.h"

static const char *INIT_USAGE =
    "usage: earnest init --preset tiny|small (--vocab-size V | --data DATA_DIR) --out MODEL_DIR [--seed S]\n"
    "                    [--std 0.02] [--method finetune|earn --k K --prefix-regs P --suffix-regs S]\n"
    "  Writes a randomly initialised checkpoint (config.json + model.safetensors, f32). With --data,\n"
    "  the vocabulary is built from the dataset (registers: max(8, P) and max(8, S), as earnest train does), written as\n"
    "  MODEL_DIR/vocab.txt, and sizes the model.\n";

int cmd_init(int argc, char **argv) {
    const char *preset = NULL, *out = NULL, *method_s = "finetune", *data = NULL;
    int vocab = 0, seed = 1, k = 0, P = 0, S = 0;
    float stdev = 0.02f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(INIT_USAGE, stdout); return 0; }
#define VAL() do { if (!(v = cli_value(argc, argv, &i))) return 2; } while (0)
        else if (!strcmp(a, "--preset")) { VAL(); preset = v; }
        else if (!strcmp(a, "--out")) { VAL(); out = v; }
        else if (!strcmp(a, "--data")) { VAL(); data = v; }
        else if (!strcmp(a, "--method")) { VAL(); method_s = v; }
        else if (!strcmp(a, "--vocab-size")) { VAL(); if (cli_int("init", a, v, 2, 1 << 22, &vocab)) return 2; }
        else if (!strcmp(a, "--seed")) { VAL(); if (cli_int("init", a, v, 0, 1 << 30, &seed)) return 2; }
        else if (!strcmp(a, "--k")) { VAL(); if (cli_int("init", a, v, 0, 4096, &k)) return 2; }
        else if (!strcmp(a, "--prefix-regs")) { VAL(); if (cli_int("init", a, v, 0, 4096, &P)) return 2; }
        else if (!strcmp(a, "--suffix-regs")) { VAL(); if (cli_int("init", a, v, 0, 4096, &S)) return 2; }
        else if (!strcmp(a, "--std")) { VAL(); if (cli_float("init", a, v, &stdev) || stdev <= 0) return 2; }
        else {
            fprintf(stderr, "earnest init: unknown option '%s'\n%s", a, INIT_USAGE);
            return 2;
        }
#undef VAL
    }
    if (!preset || !out || !vocab == !data) {
        fprintf(stderr, "earnest init: --preset, --out and one of --vocab-size and --data are required\n%s", INIT_USAGE);
        return 2;
    }
    Error e;
    Vocab voc;
    if (data) {
        // The vocabulary of models trained on this dataset, with room for this model's registers.
        Dataset d;
        if (dataset_load(&d, data, &e)) return cli_fail("init", &e);
        int rc = model_vocab_build(&voc, &d, P, S, &e);
        dataset_free(&d);
        if (rc) return cli_fail("init", &e);
        vocab = voc.size;
    }
    ModelConfig c;
    if (preset_config(&c, preset, vocab, &e)) return cli_fail("init", &e);
    if (config_method_parse(method_s, &c.method)) {
        fprintf(stderr, "earnest init: --method: unknown method '%s' (known: finetune, earn)\n", method_s);
        return 2;
    }
    if (c.method == METHOD_EARN) {
        c.layer_split_k = k ? k : (c.n_layers / 4 > 0 ? c.n_layers / 4 : 1);
        c.n_prefix_regs = P;
        c.n_suffix_regs = S;
    }
    if (config_validate(&c, "--preset/--method flags", &e)) {
        if (data) vocab_free(&voc);
        return cli_fail("init", &e);
    }
    Model m;
    model_init_random(&m, &c, (uint64_t)seed, stdev);
    int rc = model_save(&m, out, &e);
    model_free(&m);
    if (!rc && data) {
        char path[4096];
        if (path_join(path, sizeof path, out, "vocab.txt")) rc = err_set(&e, "%s: path too long", out);
        else rc = vocab_save(&voc, path, &e);
    }
    if (data) vocab_free(&voc);
    if (rc) return cli_fail("init", &e);
    printf("wrote %s (%s, %d layers, d=%d, vocab %d, %s)\n", out, preset, c.n_layers, c.dim, c.vocab_size,
           config_method_name(c.method));
    return 0;
}
