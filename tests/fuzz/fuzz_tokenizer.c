// fuzz_tokenizer.c: libFuzzer harness for llama2.c's tokenizer.bin
// (tokenizer_parse, the parser behind tokenizer_load) and for encoding and
// decoding with whatever vocabulary it accepts. Input: bytes 0-1 pick the
// model's vocab_size (3..602), byte 2 a text length m, the next m bytes are the
// text to encode (up to its first NUL), the rest is the file. On success every
// piece must look itself up, and encoding must give ids in range, at most
// strlen(text) + 3 of them, each decodable.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const Tokenizer *t, const char *text) {
    for (int i = 0; i < t->vocab_size; i++) {
        int id = tokenizer_lookup(t, t->vocab[i]);
        if (id < 0 || id > i || strcmp(t->vocab[id], t->vocab[i])) abort(); // duplicates: the lowest id
    }
    size_t n = strlen(text);
    int *ids = malloc((n + 3) * sizeof(int));
    if (!ids) abort();
    int n_ids;
    Error e;
    if (tokenizer_encode(t, text, 1, 1, ids, &n_ids, &e) == 0) {
        if (n_ids < 2 || (size_t)n_ids > n + 3) abort();
        for (int i = 0; i < n_ids; i++) {
            if (ids[i] < 0 || ids[i] >= t->vocab_size) abort();
            if (!tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i])) abort();
        }
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    int vocab_size = 3 + (int)((data[0] | (unsigned)data[1] << 8) % 600);
    size_t m = data[2];
    if (m > size - 3) m = size - 3;
    char text[256];
    memcpy(text, data + 3, m);
    text[m] = '\0';
    size_t len = size - 3 - m;
    uint8_t *file = malloc(len ? len : 1);
    if (!file) return 0;
    memcpy(file, data + 3 + m, len);
    Tokenizer t;
    Error e;
    if (tokenizer_parse(&t, file, len, "fuzz/tokenizer.bin", vocab_size, &e) == 0) {
        check(&t, text);
        tokenizer_free(&t);
    } else if (t.vocab) {
        abort(); // nothing stays allocated on failure
    }
    free(file);
    return 0;
}
