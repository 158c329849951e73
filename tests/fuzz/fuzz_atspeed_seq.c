// fuzz_atspeed_seq.c: libFuzzer harness for the AtSpeed release's
// sequential_{train,valid,test}.txt parser (prep_parse_seq_text). Input: byte 0
// picks max_item (0: any id, else 1..255), the rest is the file text (not
// NUL-terminated). On success users are 1..n in CSR order and every item is in
// range (and <= the reported largest id).
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/prepare.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int max_item = data[0] == 0 ? -1 : data[0];
    size_t len = size - 1;
    char *text = malloc(len ? len : 1);
    if (!text) return 0;
    memcpy(text, data + 1, len);
    DatasetSplit sp;
    int n_users = 0, max_seen = 0;
    Error e;
    if (prep_parse_seq_text(&sp, &n_users, &max_seen, text, len, "fuzz.txt", max_item, &e) == 0) {
        if (n_users < 1 || sp.offsets[0] != 0) abort();
        for (int u = 0; u < n_users; u++)
            if (sp.offsets[u + 1] < sp.offsets[u]) abort();
        for (size_t k = 0; k < sp.offsets[n_users]; k++)
            if (sp.items[k] < 1 || sp.items[k] > max_seen || (max_item > 0 && sp.items[k] > max_item)) abort();
        free(sp.offsets);
        free(sp.items);
    }
    free(text);
    return 0;
}
