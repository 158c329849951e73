// fuzz_code_json.c: libFuzzer harness for the LC-Rec code map parser
// (prep_parse_code_json, which reads every token with the one code-token
// parser, dataset_parse_code_token). Input: the JSON text (not NUL-terminated).
// On success the keys must have been 0..n-1 and every code in range.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>

#include "datasets/prepare.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    for (size_t i = 0; i < size; i++) text[i] = (char)data[i];
    Dataset d = {0};
    Error e;
    if (prep_parse_code_json(&d, text, size, "fuzz.json", 256, &e) == 0) {
        if (d.n_items < 1 || d.code_levels < 1 || d.code_levels > DATASET_MAX_LEVELS) abort();
        for (int it = 1; it <= d.n_items; it++)
            for (int j = 0; j < d.code_levels; j++) {
                int c = dataset_item_code(&d, it)[j];
                if (c < 0 || c >= d.codes_per_level[j]) abort();
            }
        dataset_free(&d);
    }
    free(text);
    return 0;
}
