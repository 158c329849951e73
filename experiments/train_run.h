// train_run.h: a training run, what `earnest train` does: packed multi-target
// batches (datasets/pack.h), the engine's training step (runtime/train.h:
// forward/backward under the layer plan; runtime/adamw.h: AdamW with warmup +
// cosine), validation Recall@10 through the one evaluation path
// (experiments/rec_eval.h), best-checkpoint keeping, early stopping, logs, and
// resumable state (experiments/train_state.h).
//
// The model directory OUT:
//   config.json, model.safetensors   the best model so far (by validation Recall@10)
//   vocab.txt                        the vocabulary (written first)
//   train_args.json                  the options of the run (template, history, ...)
//   train_log.csv                    one row per update:
//                                    step,epoch,batch,lr,loss,grad_norm,tokens,targets,elapsed_s,tokens_per_s
//   eval_log.csv                     one row per validation:
//                                    epoch,step,train_loss,recall@5,recall@10,recall@20,ndcg@10,users,eval_s,best
//   kd_log.csv                       draft distillation only: step,ce,kd,gt_rows,kd_rows per update
//   summary.json                     written when the run ends (completed, early stop or time limit)
//   state/                           what --resume needs (experiments/train_state.h)
// Every file is written atomically, so a kill at any moment leaves the
// previous state intact.
//
// Determinism: the pack order of epoch e is a seeded shuffle (seed, e); the
// forward/backward and the optimizer are deterministic for a thread count;
// so an interrupted run resumed from its last state reaches the same weights
// as an uninterrupted one (with the same --threads).
#ifndef EARNEST_TRAIN_RUN_H
#define EARNEST_TRAIN_RUN_H

#include <stdint.h>

#include "datasets/prompt.h"
#include "runtime/adamw.h"
#include "runtime/config.h"
#include "runtime/util.h"

typedef struct {
    const char *data_dir;     // prepared dataset
    const char *out_dir;      // model directory to write
    const char *init_dir;     // NULL: from scratch
    const char *preset;       // "tiny", "small" (NULL with --init: the checkpoint's shape)
    ModelMethod method;
    int k;                    // EARN layer split (0: N/4, at least 1)
    int keep_layers;          // skiplayers: the first m layers kept (0: not set)
    int lora_rank;            // compress500x: LoRA rank r (-1: not set, default 8)
    float lora_alpha;         // compress500x: LoRA alpha (0: not set, default r: scale alpha / r = 1)
    int prefix_regs, suffix_regs; // -1: method default (finetune 0/0, EARN 1/1, gist and compress500x 0/1)
    PromptTemplate tmpl;
    int max_history;          // 20
    int epochs;
    AdamWConfig opt;          // lr, warmup ratio, weight decay, clipping
    int batch_tokens;         // tokens per update (packs are added while they fit)
    int pack_tokens;          // cap of one packed sequence
    uint64_t seed;
    int threads;              // <= 0: EARNEST_THREADS / all cores
    int patience;             // epochs without improvement before stopping (0: never stop early)
    double max_minutes;       // <= 0: no limit; else stop (validate, save) after M minutes of this
                              // invocation (training time; the validation comes on top)
    int resume;
    int force;                // overwrite an existing OUT that holds no resumable run
    int eval_users;           // valid users scored each epoch (0: all)
    int beam;                 // beam width of validation (20)
    int save_every;           // save the state every N updates (0: every save_minutes)
    double save_minutes;
    float init_std;           // N(0, std) for new weights
    int progress;             // 1: progress on stderr
    int dry_run;              // plan only: print the packing figures and the update count, write nothing
    int64_t crash_after_step; // tests: SIGKILL self right after this update (0: never)
    // Draft distillation (--method draft; experiments/train_kd.h). The model is a full (finetune) model.
    const char *teacher;      // teacher file (earnest teacher); NULL: none
    int kd;                   // KDLoss (runtime/kd_loss.h), or -1: no distillation
    float kd_alpha, kd_temp;  // 0.7, 1
    int kd_topk;              // AtSpeed-S's K (0: the teacher file's beam width)
} TrainOptions;

void train_options_default(TrainOptions *o);

// Runs (or resumes) a training. Returns 0 on success; -1 with e set on bad
// input (nothing in OUT is overwritten then) or a failure while writing.
// Returns 130 after SIGINT/SIGTERM (state saved; --resume continues).
int train_run(const TrainOptions *o, Error *e);

#endif
