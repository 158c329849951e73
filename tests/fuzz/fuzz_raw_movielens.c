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
        PrepSeqs seqs;
        if (prep_split(&seqs, NULL, &log, &e) == 0) {
            // Every user keeps >= 2 train items and every id is in range.
            for (int u = 1; u <= seqs.n_users; u++)
                if (seqs.offsets[PREP_TRAIN][u] - seqs.offsets[PREP_TRAIN][u - 1] < 2) abort();
            for (int k = 0; k < PREP_NSPLITS; k++)
                for (size_t t = 0; t < prep_seqs_count(&seqs, k); t++)
                    if (seqs.items[k][t] < 1 || seqs.items[k][t] > seqs.n_items) abort();
            prep_seqs_free(&seqs);
        }
    }
    raw_log_free(&log);
    return 0;
}
