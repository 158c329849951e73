// fuzz_meta.c: libFuzzer harness for a prepared dataset's meta.json
// (dataset_parse_meta, the reader dataset_load uses). Input: the file's text
// (not NUL-terminated). On success every field must be in its documented range.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    Dataset d;
    memset(&d, 0, sizeof d);
    long long expect[SPLIT_COUNT];
    Error e;
    if (dataset_parse_meta(&d, expect, text, size, "fuzz/meta.json", &e) == 0) {
        if (d.n_users < 1 || d.n_users > DATASET_MAX_IDS || d.n_items < 1 || d.n_items > DATASET_MAX_IDS) abort();
        if (d.code_levels < 1 || d.code_levels > DATASET_MAX_LEVELS) abort();
        for (int j = 0; j < d.code_levels; j++)
            if (d.codes_per_level[j] < 1 || d.codes_per_level[j] > DATASET_MAX_CODES) abort();
        for (int s = 0; s < SPLIT_COUNT; s++)
            if (expect[s] < -1) abort();
        if (strnlen(d.name, sizeof d.name) == sizeof d.name || strnlen(d.source, sizeof d.source) == sizeof d.source ||
            strnlen(d.codes_method, sizeof d.codes_method) == sizeof d.codes_method)
            abort();
        char msg[160];
        if (d.has_semid && semid_config_check(&d.semid, msg, sizeof msg) != 0) abort();
    }
    dataset_free(&d); // nothing is allocated by the meta parser; this must stay harmless
    free(text);
    return 0;
}
