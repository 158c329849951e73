// fuzz_safetensors.c: libFuzzer harness for the safetensors reader
// (st_parse_mem, the parser behind st_open: 8-byte header length, JSON header,
// data section). Input: the file's bytes, copied into a buffer of exactly that
// length. On success every tensor must lie inside the buffer, its byte count
// must match its shape and dtype, lookup by name must find it, and converting
// it to float32 must stay inside it (ASan checks the reads).
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    StFile f;
    Error e;
    if (st_parse_mem(&f, buf, size, "fuzz.safetensors", &e) == 0) {
        size_t total = 0;
        for (int i = 0; i < f.n_tensors; i++) {
            const StTensor *t = &f.tensors[i];
            size_t numel = 1;
            for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
            if (t->ndim < 0 || t->ndim > ST_MAX_DIMS || numel != t->numel ||
                t->nbytes != t->numel * st_dtype_size(t->dtype))
                abort();
            if (t->data < buf + 8 || t->nbytes > size || (size_t)(t->data - buf) > size - t->nbytes) abort();
            if (st_file_find(&f, t->name) != t) abort();
            float *out = malloc(t->numel * sizeof(float) + 1);
            if (!out) abort();
            st_tensor_to_f32(out, t);
            free(out);
            total += t->nbytes;
        }
        if (total > size) abort(); // no overlaps: the tensors' bytes fit in the file
        st_close(&f);
    }
    free(buf);
    return 0;
}
