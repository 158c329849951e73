// util.h: error reporting, checked allocation, timing, atomic file writes.
//
// Two kinds of failure:
//  - a bad input (file, flag, shape) is an expected failure: functions return
//    -1 and fill an Error with a message naming the file/line/field, so callers
//    (the CLI, the tests) decide what to do;
//  - a failed libc/BLAS/HDF5 call on good input is a bug or an exhausted
//    machine: the CHECK macros print file:line and exit.
#ifndef EARNEST_UTIL_H
#define EARNEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" { // runtime/cuda/*.cu include this header
#endif

typedef struct {
    char msg[2048];
} Error;

// Sets e->msg (printf-style) and returns -1, so `return err_set(e, ...)` reads well.
int err_set(Error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Prepends context ("while loading X: ") to an existing message; returns -1.
int err_prefix(Error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

__attribute__((noreturn, format(printf, 3, 4))) void die_at(const char *file, int line, const char *fmt, ...);
#define DIE(...) die_at(__FILE__, __LINE__, __VA_ARGS__)
// Checks a condition that only a bug or the machine can break.
#define CHECK(cond, ...) do { if (!(cond)) die_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)

void *malloc_check(size_t size, const char *file, int line);
void *calloc_check(size_t n, size_t size, const char *file, int line);
void *realloc_check(void *p, size_t size, const char *file, int line);
#define xmalloc(size) malloc_check((size), __FILE__, __LINE__)
#define xcalloc(n, size) calloc_check((n), (size), __FILE__, __LINE__)
#define xrealloc(p, size) realloc_check((p), (size), __FILE__, __LINE__)
char *xstrdup(const char *s);

// Overflow-checked size arithmetic for sizes that come from files.
int size_mul_ok(size_t a, size_t b, size_t *out);

double time_now_s(void); // monotonic clock, seconds

// Threads: sets OpenMP and OpenBLAS thread counts explicitly (n <= 0: the
// EARNEST_THREADS / OMP_NUM_THREADS environment, else the number of cores).
// Returns the count in use.
int threads_init(int n);

#include "runtime/atomic.h" // atomic outputs, output locks (C declarations, inside the extern "C")

// Whole-file read into a NUL-terminated buffer (binary safe, *len excludes the NUL).
int file_read_all(const char *path, char **data, size_t *len, Error *e);
int path_join(char *out, size_t n, const char *dir, const char *name);

// The key=value list of a policy spec "NAME:key=value,..." (params: the part
// after ':', modified in place; spec: the whole spec, for messages): refuses an
// empty list, empty fields and fields without "key=" or a value, naming `name`;
// calls set(ctx, key, value, e) for each field in order and stops at its first
// nonzero return.
int spec_params_each(char *params, const char *name, const char *spec,
                     int (*set)(void *ctx, const char *key, const char *val, Error *e), void *ctx, Error *e);

// Deterministic RNG (xorshift64*), one per stream, seeded explicitly.
typedef struct { uint64_t s; } Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
float rng_uniform(Rng *r);          // [0, 1)
float rng_normal(Rng *r);           // N(0, 1)

// Half-precision conversions (exact for bf16 -> f32 and f16 -> f32).
float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
