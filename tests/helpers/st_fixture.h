// st_fixture.h: test helpers that write safetensors files byte by byte (any
// dtype, any header, even broken ones) so the reader can be checked against
// files it did not write itself, and scratch directories for checkpoints.
#ifndef EARNEST_TESTS_ST_FIXTURE_H
#define EARNEST_TESTS_ST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;
    const char *dtype;   // "F32", "BF16", "F16", or anything for bad files
    int ndim;
    size_t shape[4];
    const void *data;    // raw little-endian bytes
    size_t nbytes;
} StFixtureTensor;

// Writes a well-formed file: contiguous offsets in the given order, header
// padded with spaces to 8 bytes. Aborts the test run on I/O failure.
void st_fixture_write(const char *path, const StFixtureTensor *t, int n);
// Writes 8-byte `header_len`, then `header`, then `data`: for broken files.
void st_fixture_write_raw(const char *path, uint64_t header_len, const char *header, const void *data,
                          size_t nbytes);
void st_fixture_write_text(const char *path, const char *text);
// A fresh directory under $TMPDIR (or /tmp); free() the result, remove_tree() the directory.
char *st_fixture_tmpdir(void);
// Does `haystack` contain `needle`? Prints both when not, so a failing assert explains itself.
int st_fixture_contains(const char *haystack, const char *needle);

#endif
