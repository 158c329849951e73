// fuzz_llama2c.c: libFuzzer harness for llama2.c `.bin` models (llama2c_parse,
// the parser behind llama2c_load). Input: the file's bytes, in a buffer of
// exactly that length. The header must account for every byte of the file, so
// on success the model's parameters (floats) fit in the input, and the
// configuration validates.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/llama2c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    Model m;
    Error e;
    if (llama2c_parse(&m, buf, size, "fuzz.bin", &e) == 0) {
        if (m.n_params > size / sizeof(float)) abort();
        if (config_validate(&m.config, "fuzz", &e) != 0) abort();
        if (m.config.tie_embeddings ? m.params.lm_head != m.params.embed : m.params.lm_head == m.params.embed)
            abort();
        model_free(&m);
    } else if (m.params_memory) {
        abort(); // nothing stays allocated on failure
    }
    free(buf);
    return 0;
}
