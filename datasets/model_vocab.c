// model_vocab.c: see model_vocab.h.
#include "datasets/model_vocab.h"

#include <sys/stat.h>

#include "datasets/prompt.h"

int model_vocab_build(Vocab *v, const Dataset *d, int n_prefix_regs, int n_suffix_regs, Error *e) {
    int rp = n_prefix_regs > MODEL_VOCAB_MAX_REGS ? n_prefix_regs : MODEL_VOCAB_MAX_REGS;
    int rs = n_suffix_regs > MODEL_VOCAB_MAX_REGS ? n_suffix_regs : MODEL_VOCAB_MAX_REGS;
    return prompt_vocab_build(v, d, rp, rs, e);
}

int model_vocab_load(Vocab *v, const char *model_dir, const Dataset *d, const ModelConfig *c, Error *e) {
    int vocab_size = c->vocab_size;
    char path[4096];
    struct stat st;
    if (path_join(path, sizeof path, model_dir, "vocab.txt")) return err_set(e, "%s: path too long", model_dir);
    if (stat(path, &st) == 0) {
        if (vocab_load(v, path, e)) return -1;
    } else {
        if (!d)
            return err_set(e, "%s: the model has no vocab.txt (give --data DIR to rebuild it from the dataset)", model_dir);
        if (model_vocab_build(v, d, c->n_prefix_regs, c->n_suffix_regs, e))
            return err_prefix(e, "%s: no vocab.txt, and rebuilding it from the dataset failed: ", model_dir);
        snprintf(path, sizeof path, "the vocabulary rebuilt from dataset '%s' (no vocab.txt; make models with "
                 "`earnest init --data DIR` or `earnest train`)", d->name);
    }
    if (v->size != vocab_size) {
        int n = v->size;
        vocab_free(v);
        return err_set(e, "%s: %s has %d tokens, not the model's vocab_size %d", model_dir, path, n, vocab_size);
    }
    return 0;
}
