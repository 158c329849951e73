// model_vocab.c: see model_vocab.h.
#include "datasets/model_vocab.h"

#include <sys/stat.h>

#include "datasets/prompt.h"

int model_vocab_load(Vocab *v, const char *model_dir, const Dataset *d, int vocab_size, Error *e) {
    char path[4096];
    struct stat st;
    if (path_join(path, sizeof path, model_dir, "vocab.txt")) return err_set(e, "%s: path too long", model_dir);
    if (stat(path, &st) == 0) {
        if (vocab_load(v, path, e)) return -1;
    } else {
        if (!d)
            return err_set(e, "%s: the model has no vocab.txt (give --data DIR to rebuild it from the dataset)", model_dir);
        if (prompt_vocab_build(v, d, MODEL_VOCAB_MAX_REGS, MODEL_VOCAB_MAX_REGS, e))
            return err_prefix(e, "%s: no vocab.txt, and rebuilding it from the dataset failed: ", model_dir);
        snprintf(path, sizeof path, "the vocabulary rebuilt from the dataset");
    }
    if (v->size != vocab_size) {
        int n = v->size;
        vocab_free(v);
        return err_set(e, "%s: %s has %d tokens but the model's vocab_size is %d", model_dir, path, n, vocab_size);
    }
    return 0;
}
