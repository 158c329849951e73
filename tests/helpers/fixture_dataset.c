// fixture_dataset.c: see fixture_dataset.h.
#include "helpers/fixture_dataset.h"

#include <stdlib.h>
#include <string.h>

void fixture_dataset_make(Dataset *d, const char *name, const int *train_lens, int n_users, int n_items,
                          const int *codes_per_level, int levels, uint64_t seed) {
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n_users = n_users;
    d->n_items = n_items;
    d->code_levels = levels;
    memcpy(d->codes_per_level, codes_per_level, (size_t)levels * sizeof(int));
    Rng r;
    rng_seed(&r, seed);
    d->codes = xmalloc((size_t)(n_items + 1) * (size_t)levels * sizeof(int));
    for (int j = 0; j < levels; j++) d->codes[j] = -1; // item 0 does not exist
    for (int i = 1; i <= n_items; i++)
        for (int j = 0; j < levels; j++)
            d->codes[i * levels + j] = (int)(rng_u64(&r) % (uint64_t)codes_per_level[j]);
    size_t total = 0;
    for (int u = 0; u < n_users; u++) total += (size_t)train_lens[u];
    for (int s = 0; s < SPLIT_COUNT; s++) {
        d->splits[s].offsets = xcalloc((size_t)n_users + 1, sizeof(size_t));
        d->splits[s].items = xmalloc((s == SPLIT_TRAIN ? total : 1) * sizeof(int));
    }
    size_t at = 0;
    for (int u = 0; u < n_users; u++) {
        for (int i = 0; i < train_lens[u]; i++)
            d->splits[SPLIT_TRAIN].items[at++] = 1 + (int)(rng_u64(&r) % (uint64_t)n_items);
        d->splits[SPLIT_TRAIN].offsets[u + 1] = at;
    }
}

void fixture_dataset_free(Dataset *d) { dataset_free(d); }
