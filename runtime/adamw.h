// adamw.h: the AdamW optimizer (decoupled weight decay, bias correction),
// the learning-rate schedule (linear warmup by ratio, then cosine), global-norm
// gradient clipping, and the optimizer state on disk for resuming.
//
// Weight decay, Hugging Face style: on the 2-D weights only (embed_tokens,
// q/k/v/o_proj, gate/up/down_proj, lm_head when untied); never on the RMSNorm
// weights (input_layernorm, post_attention_layernorm, model.norm) nor on the
// q/k/v biases (Qwen2).
//
// Deterministic: every reduction (the gradient norm) sums fixed-size blocks
// and then the block sums in order, so the numbers do not depend on the
// thread count or on scheduling; the update itself is elementwise.
#ifndef EARNEST_ADAMW_H
#define EARNEST_ADAMW_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/model.h"

typedef struct {
    float lr;           // peak learning rate (EARN: 1e-3)
    float beta1, beta2; // 0.9, 0.999
    float eps;          // 1e-8
    float weight_decay; // 0.01, decoupled: p -= lr * wd * p (2-D weights only)
    float warmup_ratio; // fraction of the total steps with linear warmup (EARN: 0.02)
    float min_lr_ratio; // the cosine ends at lr * min_lr_ratio (0: at 0, as HF)
    float grad_clip;    // max global L2 norm of the gradient; <= 0: no clipping (HF: 1.0)
} AdamWConfig;

void adamw_config_default(AdamWConfig *c);

typedef struct {
    size_t off, n; // floats of one parameter tensor in params_memory
    int decay;     // 1: weight decay applies
    int tensor;    // the parameter tensor (model.h order)
    int frozen;    // 1: never stepped (compress500x's base weights)
} AdamWSegment;

typedef struct {
    size_t n;      // floats (== Model.n_params)
    int64_t step;  // updates done so far
    float *m;      // [n] first moment
    float *v;      // [n] second moment
    float *memory; // the one allocation: m then v
    int n_segs;
    AdamWSegment seg[MODEL_N_PARAM_TENSORS];
} AdamWState;

// Zeroed state for the parameters of config c (layout of Model.params_memory).
void adamw_init(AdamWState *s, const ModelConfig *c);
void adamw_free(AdamWState *s);
// compress500x's frozen base: from now on only the LoRA adapters and the
// embedding table are stepped; the table gets no weight decay, so its rows
// whose gradient is always zero (all but the compression tokens', see
// train.h grads_keep_lora_and_rows) keep their moments at 0 and their values
// exactly. Every other base tensor's segment is frozen (skipped by adamw_step).
void adamw_train_lora_only(AdamWState *s);

// Learning rate of update `step` (0-based) out of total_steps:
//   W = ceil(warmup_ratio * total_steps) warmup steps,
//   step < W : lr * (step + 1) / W          (the first update is not wasted at 0)
//   step >= W: lr_min + (lr - lr_min) * 0.5 * (1 + cos(pi * (step - W) / max(1, total_steps - W)))
// with lr_min = lr * min_lr_ratio. Steps past the end keep the final value.
float adamw_lr(const AdamWConfig *c, int64_t step, int64_t total_steps);

// Global L2 norm of g [n], accumulated in double, deterministic.
double grad_global_norm(const float *g, size_t n);

// One AdamW update of params [n] with grads [n] at learning rate lr; grads
// are scaled by min(1, grad_clip / norm) first (not modified in memory).
// Increments s->step (bias correction uses the new step). Returns the
// gradient norm before clipping.
double adamw_step(AdamWState *s, float *params, const float *grads, float lr, const AdamWConfig *c);

// The state on disk (for resuming): written atomically (temp file + rename);
// the load checks magic, version, parameter count, size and checksum, and
// leaves s untouched on failure. s must be initialised for the same model.
int adamw_save(const AdamWState *s, const char *path, Error *e);
int adamw_load(AdamWState *s, const char *path, Error *e);

#endif
