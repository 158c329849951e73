// fuzz_codes.c: libFuzzer harness for the codes.tsv parser
// (dataset_parse_codes). Input: byte 0 picks code_levels (1..4), byte 1 the
// codes per level (1..300), byte 2 n_items (1..32, or from 240 up a meta.json
// size near DATASET_MAX_IDS that no input holds: the parser must not allocate
// for it, which run_fuzz.sh's -malloc_limit_mb enforces), the rest is the file
// text (not NUL-terminated). On success every code index must be in range.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>

#include "datasets/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int levels = data[0] % 4 + 1, per_level = data[1] % 300 + 1;
    int n_items = data[2] < 240 ? data[2] % 32 + 1 : DATASET_MAX_IDS - (data[2] - 240);
    int cpl[DATASET_MAX_LEVELS];
    for (int j = 0; j < levels; j++) cpl[j] = per_level + j;   // levels differ, as the 4th level may
    size_t len = size - 3;
    char *text = malloc(len ? len : 1);
    if (!text) return 0;
    for (size_t i = 0; i < len; i++) text[i] = (char)data[3 + i];
    int *codes;
    Error e;
    if (dataset_parse_codes(&codes, text, len, "fuzz.tsv", n_items, levels, cpl, &e) == 0) {
        for (int it = 1; it <= n_items; it++)
            for (int j = 0; j < levels; j++) {
                int c = codes[(size_t)it * (size_t)levels + (size_t)j];
                if (c < 0 || c >= cpl[j]) abort();
            }
        free(codes);
    }
    free(text);
    return 0;
}
