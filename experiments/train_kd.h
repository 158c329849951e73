// train_kd.h: distillation of a draft model from a teacher file (issue 12,
// AtSpeed): what `earnest train --method draft --teacher FILE --kd LOSS` adds
// to a training run (experiments/train_run.c).
//
// Batches are those of the packs alone (--batch-tokens counts the packs'
// tokens without the beam groups), so every loss makes the same updates.
//
// Samples: the run trains on the train samples the teacher file covers
// (packs whose targets all have a record; `earnest teacher --users N` makes a
// smaller file, hence a smaller run), whatever the loss, so every draft of one
// teacher file sees the same samples (SFT included).
//
// Batch: each pack (datasets/pack.h) as usual; for the losses read along the
// teacher's beams (SeqKD, AtSpeed-S, AtSpeed-R) every target of the pack also
// gets, for each of its record's beams, a group of L-1 tokens appended at
// the end of the sequence: the beam's code tokens 0..L-2, at the positions of
// the target's own code tokens, each seeing exactly what the target's first
// code token sees before itself (the shared history and the target's words
// and registers, up to its decision token) plus the group's earlier tokens.
// So the student's row for beam b at level j is the target's decision row
// (j = 0) or the group's token j-1, and one forward/backward computes them all.
//
// Loss of a batch: (1 - alpha) * CE + alpha * KD, CE = the mean cross-entropy
// of the ground-truth code tokens (every target, every level), KD = the mean
// over the KD rows of the loss of runtime/kd_loss.h:
//   wordkd, tvdkd   each ground-truth code row, against the teacher's node of
//                   that prefix (its distribution over the level's codes + the
//                   rest bucket)
//   seqkd           each beam's code rows: cross-entropy of the beam token
//   atspeed-s/-r    each beam's code rows, against the teacher's node of the
//                   beam's prefix, over the level's code tokens, temperature T
//   sft             CE alone (alpha is not used)
// alpha = 0.7 and T = 1 by default; AtSpeed-S takes the student's top
// --kd-topk tokens (default: the teacher file's beam width).
#ifndef EARNEST_TRAIN_KD_H
#define EARNEST_TRAIN_KD_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/dataset.h"
#include "datasets/pack.h"
#include "datasets/prompt.h"
#include "datasets/vocab.h"
#include "experiments/teacher.h"
#include "runtime/kd_loss.h"
#include "runtime/train.h"

typedef struct {
    int tok;     // packed token (row) of the student
    int rec;     // teacher record
    int beam;    // -1: the ground truth
    int level;
} KDItem;

typedef struct {
    int active;          // a teacher file is in use
    KDLoss loss;
    float alpha, temp;
    int topk;
    Teacher t;
    // batch buffers
    int *tok, *pos, *depth, *lab, *ntok;
    uint8_t *kinds;
    uint8_t **mask;
    size_t cap_T, cap_seqs;
    size_t *cap_mask;
    KDItem *items;
    size_t n_items, cap_items;
    int *row_of_tok;
    float *dl, *tmp;
    size_t cap_dl;
    // the last batch
    int n_gt, n_kd;
    double ce, kd, total;  // mean CE, mean KD term, the mixed loss
} KDState;

// Loads the teacher file and checks it against the dataset and the student's
// vocabulary. topk <= 0: the file's beam width.
int kd_setup(KDState *k, const char *teacher_path, KDLoss loss, float alpha, float temp, int topk, const Dataset *d,
             const Vocab *v, Error *e);
void kd_free(KDState *k);

// Keeps the packs whose targets all have a teacher record; recomputes the
// plan's figures. Fails when no pack is left. The packs' n_tokens stay those
// of the packs alone, so --batch-tokens makes the same batches (the same
// samples per update, the same number of updates) for every loss; the beam
// groups make a batch's sequences longer, not its sample count smaller.
int kd_filter_plan(PackPlan *pp, const KDState *k, const Dataset *d, const Prompter *p, Error *e);

// The batch of packs[0..n) (seqs: their built sequences) with the beam groups.
void kd_batch_build(TrainBatch *b, KDState *k, const PackedSeq *seqs, const Pack *const *packs, int n,
                    const Dataset *d, const ModelConfig *c);

// After train_forward on that batch: the loss (returned, also in k->total)
// and its gradient, written over a->logits for train_backward_dlogits.
// Also sets k->ce, k->kd, k->total, k->n_gt, k->n_kd.
double kd_loss_apply(KDState *k, TrainActs *a, const Model *m);

#endif
