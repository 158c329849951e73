// model_vocab.h: the vocabulary that goes with a model directory.
//
// A model earnest trained (or `earnest init --data` made) carries DIR/vocab.txt.
// A model made otherwise has none; then the vocabulary is rebuilt from the
// dataset by the same rule those tools use (model_vocab_build), and it must
// have exactly the model's vocab_size entries.
#ifndef EARNEST_MODEL_VOCAB_H
#define EARNEST_MODEL_VOCAB_H

#include "datasets/dataset.h"
#include "datasets/vocab.h"
#include "runtime/config.h"

#define MODEL_VOCAB_MAX_REGS 8

// The vocabulary of models trained on d: template words, d's code tokens, and
// max(MODEL_VOCAB_MAX_REGS, P) prefix / max(MODEL_VOCAB_MAX_REGS, S) suffix registers.
int model_vocab_build(Vocab *v, const Dataset *d, int n_prefix_regs, int n_suffix_regs, Error *e);
// DIR/vocab.txt, else model_vocab_build(d, c's registers); d may be NULL when
// the model dir must hold vocab.txt. The size must equal c->vocab_size.
int model_vocab_load(Vocab *v, const char *model_dir, const Dataset *d, const ModelConfig *c, Error *e);

#endif
