// train_state.h: what a training run keeps on disk so that a kill at any
// moment loses at most the work since the last save, and --resume continues
// bitwise: the state directories, the progress record, the logs, and the
// options the run was started with.
//
// OUT/state/LATEST                 names the newest complete state directory
// OUT/state/save-NNNNNN/           config.json + model.safetensors (the weights),
//                                  optimizer.bin (AdamW moments + step),
//                                  progress.json (TrainProgress)
// A state directory is filled under a temporary name, renamed into place, and
// only then named by LATEST (one atomic rename), so the previous state stays
// intact until the new one is complete; older ones are removed after that.
#ifndef EARNEST_TRAIN_STATE_H
#define EARNEST_TRAIN_STATE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "runtime/adamw.h"
#include "runtime/model.h"
#include "runtime/util.h"

// Where a run stands (progress.json).
typedef struct {
    int epoch;             // current epoch (0-based)
    size_t batch;          // next batch of the epoch
    int64_t step;          // updates done
    int64_t total_steps;   // updates planned over all epochs
    int save_serial;       // state directories written so far
    double best;           // best validation Recall@10 (-1: none yet)
    int best_epoch;        // 1-based epoch of the best (0: none)
    int bad_epochs;        // epochs since the best
    double ep_loss_sum;    // this epoch's summed per-position loss
    int64_t ep_labels;     // and labelled positions
    int64_t ep_tokens;
    double elapsed_s;      // training seconds up to the save (all invocations)
    int threads;           // of the invocation that saved it
    int done;              // the run ended (completed or stopped early)
} TrainProgress;

// Writes p into a new state directory OUT/state/save-<p->save_serial> with the
// weights and the optimizer, points LATEST at it, and removes older states.
int train_state_save(const char *state_dir, const Model *m, const AdamWState *opt, const TrainProgress *p, Error *e);
// The newest complete state directory (from LATEST) into out [n].
int train_state_latest(char *out, size_t n, const char *state_dir, Error *e);
// Reads progress.json; fails when it does not plan total_steps updates.
int train_progress_load(TrainProgress *p, const char *path, int64_t total_steps, Error *e);

// train_args.json: the options that decide the computation. On --resume the
// options of the command line must equal the saved ones (key by key).
int train_args_compare(json_t *saved, json_t *now, const char *path, Error *e);

// The CSV logs, opened for appending: a fresh run starts them with `header`;
// a resumed one keeps the header and the rows whose column `step_col` is <=
// max_step (rows written after the state being resumed are dropped).
int train_log_open(FILE **f, const char *path, const char *header, int fresh, int step_col, int64_t max_step,
                   Error *e);

// JSON and text written atomically (temp file + rename).
int json_write_atomic(const char *path, json_t *root, Error *e);
int text_write_atomic(const char *path, const char *text, Error *e);

#endif
