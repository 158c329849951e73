// fuzz_dataset.c: libFuzzer harness for the split-file parser
// (dataset_parse_split). Input: byte 0 picks n_users (1..16, or from 240 up a
// meta.json size near DATASET_MAX_IDS that no input holds: the parser must not
// allocate for it, which run_fuzz.sh's -malloc_limit_mb enforces), byte 1
// n_items (1..64), the rest is the file text (not NUL-terminated, so reading
// past the end is caught by ASan). On success the result must satisfy the contract.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>

#include "datasets/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int n_users = data[0] < 240 ? data[0] % 16 + 1 : DATASET_MAX_IDS - (data[0] - 240), n_items = data[1] % 64 + 1;
    size_t len = size - 2;
    // A private copy of exactly len bytes, so ASan sees any overread.
    char *text = malloc(len ? len : 1);
    if (!text) return 0;
    for (size_t i = 0; i < len; i++) text[i] = (char)data[2 + i];
    DatasetSplit sp;
    Error e;
    if (dataset_parse_split(&sp, text, len, "fuzz.txt", n_users, n_items, &e) == 0) {
        if (sp.offsets[0] != 0) abort();
        for (int u = 0; u < n_users; u++)
            if (sp.offsets[u + 1] < sp.offsets[u]) abort();
        for (size_t k = 0; k < sp.offsets[n_users]; k++)
            if (sp.items[k] < 1 || sp.items[k] > n_items) abort();
        free(sp.offsets);
        free(sp.items);
    }
    free(text);
    return 0;
}
