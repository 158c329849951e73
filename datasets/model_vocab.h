// model_vocab.h: the vocabulary that goes with a model directory.
//
// A model earnest trained carries DIR/vocab.txt. A model made otherwise (e.g.
// `earnest init` without --data) has none; then the vocabulary is rebuilt from
// the dataset with MODEL_VOCAB_MAX_REGS registers of each kind, which is what
// `earnest init --data` and `earnest train` write, and it must have exactly
// the model's vocab_size entries.
#ifndef EARNEST_MODEL_VOCAB_H
#define EARNEST_MODEL_VOCAB_H

#include "datasets/dataset.h"
#include "datasets/vocab.h"

#define MODEL_VOCAB_MAX_REGS 8

// d may be NULL when the model dir must hold vocab.txt.
int model_vocab_load(Vocab *v, const char *model_dir, const Dataset *d, int vocab_size, Error *e);

#endif
