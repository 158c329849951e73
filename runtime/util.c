// util.c: see util.h.
#include "runtime/util.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int err_set(Error *e, const char *fmt, ...) {
    if (!e) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int err_prefix(Error *e, const char *fmt, ...) {
    if (!e) return -1;
    char head[1024], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    size_t n = strlen(head);
    if (n >= sizeof e->msg) n = sizeof e->msg - 1;
    memcpy(e->msg, head, n);
    size_t rest = strnlen(old, sizeof old - 1);
    if (rest > sizeof e->msg - 1 - n) rest = sizeof e->msg - 1 - n;
    memcpy(e->msg + n, old, rest);
    e->msg[n + rest] = 0;
    return -1;
}

void die_at(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "earnest: fatal (%s:%d): ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(70);
}

void *malloc_check(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) die_at(file, line, "malloc of %zu bytes failed", size);
    return p;
}

void *calloc_check(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die_at(file, line, "calloc of %zu x %zu bytes failed", n, size);
    return p;
}

void *realloc_check(void *p, size_t size, const char *file, int line) {
    void *q = realloc(p, size ? size : 1);
    if (!q) die_at(file, line, "realloc to %zu bytes failed", size);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

int size_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

double time_now_s(void) {
    struct timespec ts;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0, "clock_gettime: %s", strerror(errno));
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int threads_init(int n) {
    if (n <= 0) {
        const char *s = getenv("EARNEST_THREADS");
        if (!s || !*s) s = getenv("OMP_NUM_THREADS");
        if (s && *s) n = atoi(s);
    }
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

int file_read_all(const char *path, char **data, size_t *len, Error *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(e, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return 0;
}

int path_join(char *out, size_t n, const char *dir, const char *name) {
    int w = snprintf(out, n, "%s/%s", dir, name);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

void rng_seed(Rng *r, uint64_t seed) {
    // splitmix64 of the seed, so nearby seeds give unrelated streams; never 0.
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    r->s = z ? z : 0x1234567ull;
}

uint64_t rng_u64(Rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

float rng_uniform(Rng *r) { return (float)((rng_u64(r) >> 40) * (1.0 / 16777216.0)); }

float rng_normal(Rng *r) {
    // Box-Muller; u1 in (0, 1].
    double u1 = ((rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            mant &= 0x3ff;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int spec_params_each(char *params, const char *name, const char *spec,
                     int (*set)(void *ctx, const char *key, const char *val, Error *e), void *ctx, Error *e) {
    if (!*params) return err_set(e, "%s: nothing after ':' (NAME:key=value,...)", name);
    // strtok_r skips empty fields: ",," or a trailing ',' would pass silently.
    size_t len = strlen(spec);
    if (strstr(spec, ",,") || spec[len - 1] == ',' || strstr(spec, ":,"))
        return err_set(e, "%s: an empty field in '%s' (NAME:key=value,...)", name, spec);
    for (char *save = NULL, *kv = strtok_r(params, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv || !eq[1]) return err_set(e, "%s: '%s' is not key=value", name, kv);
        *eq = '\0';
        if (set(ctx, kv, eq + 1, e)) return -1;
    }
    return 0;
}
