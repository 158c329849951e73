// preset.h: named model shapes for training and benchmarks.
//   tiny : 4 layers, d=64,  4 heads / 2 KV heads, SwiGLU 176   (tests, the quick-start job)
//   small: 8 layers, d=256, 8 heads / 4 KV heads, SwiGLU 688   (real runs, benchmarks)
//   base : 12 layers, d=768, 12 heads / 4 KV heads, SwiGLU 2048 (CPU speed curves closer to real models)
#ifndef EARNEST_PRESET_H
#define EARNEST_PRESET_H

#include "runtime/config.h"

// Fills c for preset `name` with the given vocabulary size; -1 if unknown.
int preset_config(ModelConfig *c, const char *name, int vocab_size, Error *e);

#endif
