// earnest.c: the `earnest VERB ...` command-line driver. Each verb lives in
// experiments/cmd_<verb>.c; this file only dispatches.
#include <stdio.h>
#include <string.h>

#include "experiments/commands.h"
#include "runtime/atomic.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Verb;

static const Verb VERBS[] = {
    {"forward", cmd_forward, "run a model on token ids; write logits (and attention) to HDF5"},
    {"bench", cmd_bench, "time prefill and decode; compare with the machine's sgemm rate"},
    {"dump-attn", cmd_dump_attn, "run a model over prompts (dataset samples or text) and write an attention dump"},
    {"init", cmd_init, "write a randomly initialised model checkpoint of a preset shape"},
    {"prepare", cmd_prepare, "write a prepared dataset dir (atspeed, raw, synthetic); build semantic IDs"},
    {"data", cmd_data, "dataset statistics of a prepared dataset directory (validates it)"},
    {"analyze", cmd_analyze, "attention metrics (density, sinks, entropy, ...) of an attention dump"},
    {"convert", cmd_convert, "convert a llama2.c .bin model (+ tokenizer.bin) into a model directory"},
    {"eval", cmd_eval, "rank item codes (constrained beam search or MostPop); Recall/NDCG, efficiency"},
    {"train", cmd_train, "train a model (finetune, EARN, or a KD draft) on a dataset: packed multi-target, resumable"},
    {"teacher", cmd_teacher, "a target's beam search and distributions over the train samples (for draft KD)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: earnest VERB [options]   (earnest VERB --help for each)\n\nverbs:\n");
    for (size_t i = 0; i < sizeof VERBS / sizeof VERBS[0]; i++)
        fprintf(f, "  %-10s %s\n", VERBS[i].name, VERBS[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    output_signals_install(); // SIGINT/SIGTERM leave no temporary files behind
    for (size_t i = 0; i < sizeof VERBS / sizeof VERBS[0]; i++)
        if (!strcmp(argv[1], VERBS[i].name)) return VERBS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "earnest: unknown verb '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
