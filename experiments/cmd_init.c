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

static const char *INIT_ABOUT =
    "  Writes a randomly initialised checkpoint (config.json + model.safetensors, f32). With --data,\n"
    "  the vocabulary is built from the dataset (registers: max(8, P) and max(8, S), as earnest train\n"
    "  does), written as MODEL_DIR/vocab.txt, and sizes the model.\n";

int cmd_init(int argc, char **argv) {
    const char *preset = NULL, *out = NULL, *method_s = "finetune", *data = NULL, *arch = "llama";
    int vocab = 0, seed = 1, k = 0, P = 0, S = 0, untie = 0;
    float stdev = 0.02f;
    CliFlag flags[] = {
        {"--preset", CLI_STRING, &preset, .meta = "tiny|small|draft", .required = 1, .help = "model shape"},
        {"--out", CLI_STRING, &out, .meta = "MODEL_DIR", .required = 1, .help = "checkpoint directory to write"},
        {"--vocab-size", CLI_INT, &vocab, .lo = 2, .hi = 1 << 22, .help = "vocabulary size (or --data)"},
        {"--data", CLI_STRING, &data, .meta = "DATA_DIR", .help = "build the vocabulary from this dataset"},
        {"--seed", CLI_INT, &seed, .lo = 0, .hi = 1 << 30, .help = "seed of the weights"},
        {"--std", CLI_FLOAT, &stdev, .help = "weights ~ N(0, std), std > 0"},
        {"--method", CLI_STRING, &method_s, .choices = "finetune|earn", .help = "the method recorded in config.json"},
        {"--k", CLI_INT, &k, .lo = 0, .hi = 4096, .help = "EARN layer split (0: N/4)"},
        {"--prefix-regs", CLI_INT, &P, .lo = 0, .hi = 4096, .help = "EARN prefix registers"},
        {"--suffix-regs", CLI_INT, &S, .lo = 0, .hi = 4096, .help = "EARN suffix registers"},
        {"--arch", CLI_STRING, &arch, .choices = "llama|qwen2", .help = "LlamaForCausalLM, or Qwen2ForCausalLM (q/k/v biases)"},
        {"--untie", CLI_FLAG, &untie, .help = "a separate lm_head instead of the tied embedding"},
    };
    CliSpec cli = {.verb = "init", .synopsis = "--preset tiny|small (--vocab-size V | --data DATA_DIR) --out MODEL_DIR [options]",
                   .about = INIT_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags)};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    if (!vocab == !data) {
        fprintf(stderr, "earnest init: give exactly one of --vocab-size and --data (earnest init --help)\n");
        return 2;
    }
    if (!(stdev > 0)) {
        fprintf(stderr, "earnest init: --std: %g is not a positive number\n", (double)stdev);
        return 2;
    }
    {
        Error le;
        if (output_lock_hold(out, &le)) return cli_fail("init", &le); // one writer per output
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
    CHECK(config_method_parse(method_s, &c.method) == 0, "init: --method passed its choices");
    if (!strcmp(arch, "qwen2")) {
        c.arch = MODEL_ARCH_QWEN2;
        c.attn_bias = 1;
    }
    if (untie) c.tie_embeddings = 0;
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
