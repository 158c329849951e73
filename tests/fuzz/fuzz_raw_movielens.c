// fuzz_raw_movielens.c: libFuzzer harness for the raw movielens parser and the split that
// follows it (datasets/prep_raw.c). Any input must give either a clean error or
// a well-formed split: no crash, no leak, no undefined behaviour.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "datasets/prepare.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    RawLog log;
    raw_log_init(&log);
    Error e;
    if (raw_parse_buf(&log, RAW_MOVIELENS, (const char *)data, size, "fuzz", &e) == 0) {
        Dataset d;
        if (prep_split(&d, NULL, &log, &e) == 0) {
            // Every user keeps >= 2 train items and every id is in range.
            for (int u = 1; u <= d.n_users; u++) {
                int n;
                dataset_user_items(&d, SPLIT_TRAIN, u, &n);
                if (n < 2) abort();
            }
            for (int k = 0; k < SPLIT_COUNT; k++)
                for (size_t t = 0; t < dataset_interactions(&d, (Split)k); t++)
                    if (d.splits[k].items[t] < 1 || d.splits[k].items[t] > d.n_items) abort();
            dataset_free(&d);
        }
    }
    raw_log_free(&log);
    return 0;
}
