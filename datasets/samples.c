// samples.c: see samples.h.
#include "datasets/samples.h"

#include <stdlib.h>
#include <string.h>

// The last `max` of n items (all of them when max <= 0).
static int keep_last(int n, int max) { return (max > 0 && n > max) ? max : n; }

static void build_train(SampleSet *s, const Dataset *d) {
    size_t n = 0;
    for (int u = 1; u <= d->n_users; u++) {
        int len;
        dataset_user_items(d, SPLIT_TRAIN, u, &len);
        if (len > 1) n += (size_t)(len - 1);
    }
    s->samples = xmalloc((n ? n : 1) * sizeof(Sample));
    for (int u = 1; u <= d->n_users; u++) {
        int len;
        const int *items = dataset_user_items(d, SPLIT_TRAIN, u, &len);
        for (int i = 1; i < len; i++) {
            int h = keep_last(i, s->max_history);
            s->samples[s->n++] = (Sample){.user = u, .n_history = h, .n_targets = 1,
                                          .history = items + (i - h), .targets = items + i};
        }
    }
}

static void build_valid(SampleSet *s, const Dataset *d) {
    s->samples = xmalloc((size_t)d->n_users * sizeof(Sample));
    for (int u = 1; u <= d->n_users; u++) {
        int n_train, n_valid;
        const int *train = dataset_user_items(d, SPLIT_TRAIN, u, &n_train);
        const int *valid = dataset_user_items(d, SPLIT_VALID, u, &n_valid);
        if (n_valid == 0) continue;
        int h = keep_last(n_train, s->max_history);
        s->samples[s->n++] = (Sample){.user = u, .n_history = h, .n_targets = 1,
                                      .history = train + (n_train - h), .targets = valid};
    }
}

static void build_test(SampleSet *s, const Dataset *d) {
    // First pass: the pool size, so that samples can point into it directly.
    size_t pool_n = 0;
    for (int u = 1; u <= d->n_users; u++) {
        int n_train, n_valid, n_test;
        dataset_user_items(d, SPLIT_TRAIN, u, &n_train);
        dataset_user_items(d, SPLIT_VALID, u, &n_valid);
        dataset_user_items(d, SPLIT_TEST, u, &n_test);
        if (n_test > 0) pool_n += (size_t)keep_last(n_train + n_valid, s->max_history);
    }
    s->pool = xmalloc((pool_n ? pool_n : 1) * sizeof(int));
    s->samples = xmalloc((size_t)d->n_users * sizeof(Sample));
    size_t at = 0;
    for (int u = 1; u <= d->n_users; u++) {
        int n_train, n_valid, n_test;
        const int *train = dataset_user_items(d, SPLIT_TRAIN, u, &n_train);
        const int *valid = dataset_user_items(d, SPLIT_VALID, u, &n_valid);
        const int *test = dataset_user_items(d, SPLIT_TEST, u, &n_test);
        if (n_test == 0) continue;
        int h = keep_last(n_train + n_valid, s->max_history);
        // The last h items of train ++ valid: a tail of train, then all or a tail of valid.
        int from_valid = h < n_valid ? h : n_valid;
        int from_train = h - from_valid;
        int *dst = s->pool + at;
        memcpy(dst, train + (n_train - from_train), (size_t)from_train * sizeof(int));
        memcpy(dst + from_train, valid + (n_valid - from_valid), (size_t)from_valid * sizeof(int));
        s->samples[s->n++] = (Sample){.user = u, .n_history = h, .n_targets = n_test,
                                      .history = dst, .targets = test};
        at += (size_t)h;
    }
}

void samples_build(SampleSet *s, const Dataset *d, Split split, int max_history) {
    memset(s, 0, sizeof *s);
    s->split = split;
    s->max_history = max_history;
    switch (split) {
    case SPLIT_TRAIN: build_train(s, d); break;
    case SPLIT_VALID: build_valid(s, d); break;
    case SPLIT_TEST: build_test(s, d); break;
    default: DIE("unknown split %d", (int)split);
    }
}

void samples_free(SampleSet *s) {
    free(s->samples);
    free(s->pool);
    memset(s, 0, sizeof *s);
}
