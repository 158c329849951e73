// samples.h: the (history -> target) examples of each split, in the
// AtSpeed / LC-Rec convention:
//   train  every position i >= 1 of a user's train sequence is a target, the
//          items before it the history;
//   valid  history = the train items, target = the first valid item (users with
//          no valid items skipped);
//   test   history = train + valid items, targets = all of the user's test items
//          (multi-target; users with no test items skipped).
// Histories keep their last `max_history` items (20 in LC-Rec / AtSpeed).
//
// Samples point into the Dataset's arrays (only test histories, which span two
// splits, are copied), so a SampleSet is valid while its Dataset lives.
#ifndef EARNEST_SAMPLES_H
#define EARNEST_SAMPLES_H

#include <stddef.h>

#include "datasets/dataset.h"

#define SAMPLES_MAX_HISTORY 20

typedef struct {
    int user;              // 1-based
    int n_history;
    int n_targets;
    const int *history;    // [n_history] item ids, oldest first
    const int *targets;    // [n_targets] item ids
} Sample;

typedef struct {
    Split split;
    int max_history;
    size_t n;
    Sample *samples;       // [n] by user, then position
    int *pool;             // test histories (train + valid tail), owned
} SampleSet;

// max_history <= 0 keeps whole histories.
void samples_build(SampleSet *s, const Dataset *d, Split split, int max_history);
void samples_free(SampleSet *s);

#endif
