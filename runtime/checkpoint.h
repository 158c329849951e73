// checkpoint.h: model directories in Hugging Face layout.
//
//   DIR/config.json                    HF config (+ "earnest" object)
//   DIR/model.safetensors              or model.safetensors.index.json + shards
//   DIR/tokenizer.bin                  optional: llama2.c tokenizer (converted models)
//   DIR/vocab.txt                      optional: earnest word-level vocabulary (models earnest trained)
//
// Reading accepts f32, bf16 and f16 tensors; writing is always f32.
#ifndef EARNEST_CHECKPOINT_H
#define EARNEST_CHECKPOINT_H

#include "runtime/model.h"
#include "runtime/util.h"

// Loads config.json and the weights into a freshly allocated model. Every
// problem (missing file, truncated data, bad header, missing/extra tensor,
// wrong shape or dtype, bad config) is an error naming the file and the
// tensor or field; nothing is left allocated on failure. Every tensor is
// found and its shape checked against the config before the model is
// allocated. Weights that are not finite (a diverged training) are refused
// unless MODEL_LOAD_ALLOW_NONFINITE is given.
int model_load(Model *m, const char *dir, Error *e);
#define MODEL_LOAD_ALLOW_NONFINITE 1u
int model_load_flags(Model *m, const char *dir, unsigned flags, Error *e);
// Writes config.json + model.safetensors (f32) into dir, atomically: files
// are written under temporary names and renamed into place. dir is created
// if missing; other files in it are left alone.
int model_save(const Model *m, const char *dir, Error *e);

#endif
