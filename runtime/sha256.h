// sha256.h: SHA-256 (FIPS 180-4), for the digests earnest records beside its
// outputs (a reader checks a file against the JSON that describes it with
// `sha256sum`).
#ifndef EARNEST_SHA256_H
#define EARNEST_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/util.h"

typedef struct {
    uint32_t h[8];
    uint8_t block[64];
    size_t fill;       // bytes in block
    uint64_t total;    // bytes hashed
} Sha256;

void sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t n);
// hex: 65 bytes, lowercase hex digits + NUL.
void sha256_final_hex(Sha256 *s, char hex[65]);
// The digest of a whole file.
int sha256_file_hex(char hex[65], const char *path, Error *e);

#endif
