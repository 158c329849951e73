// fixture_dataset.h: a small in-memory Dataset for tests that need users with
// chosen train lengths and random codes, without files.
#ifndef EARNEST_TEST_FIXTURE_DATASET_H
#define EARNEST_TEST_FIXTURE_DATASET_H

#include <stdint.h>

#include "datasets/dataset.h"

// n_users users whose train sequences have train_lens[u] items drawn from
// 1..n_items; valid and test are empty. Item codes: `levels` levels, level j
// drawn from 0..codes_per_level[j]-1. Codes first, then items, from one Rng
// seeded with `seed`, so a seed gives the same dataset every time.
void fixture_dataset_make(Dataset *d, const char *name, const int *train_lens, int n_users, int n_items,
                          const int *codes_per_level, int levels, uint64_t seed);
void fixture_dataset_free(Dataset *d); // dataset_free

#endif
